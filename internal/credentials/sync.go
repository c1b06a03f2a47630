package credentials

import (
	"context"
	"fmt"

	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/store"
)

// Sync lists a credential's devices and upserts its cameras: only devices
// with the CameraLiveStream trait, matched by Google's device name, keeping
// the user's path, enabled and persistent settings. Cameras Google no longer
// lists are marked missing rather than deleted, so their settings survive a
// device that comes back. It returns the number of cameras listed.
func (s *Service) Sync(ctx context.Context, credentialID uint64) (int, error) {
	s.mu.Lock()
	cr := s.creds[credentialID]
	s.mu.Unlock()
	if cr == nil {
		return 0, nest.ErrNotAuthenticated
	}
	devices, err := cr.client.ListDevices(ctx)
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for _, d := range devices {
		if !d.IsCamera() {
			continue
		}
		seen[d.Name] = true
		cam, err := s.o.Store.UpsertCamera(credentialID, d.Name, func(c *store.Camera, isNew bool) error {
			applyDevice(c, d)
			return nil
		})
		if err != nil {
			return len(seen), err
		}
		s.notify(cam)
	}
	cams, err := s.o.Store.ListCameras()
	if err != nil {
		return len(seen), err
	}
	for _, c := range cams {
		if c.CredentialID != credentialID || c.Missing || seen[c.UID] {
			continue
		}
		cam, err := s.o.Store.UpdateCamera(c.ID, func(c *store.Camera) error { c.Missing = true; return nil })
		if err != nil {
			return len(seen), err
		}
		s.o.Log.Warn("a camera is no longer shared with nestmtx", "camera_id", c.ID, "name", c.Name)
		s.notify(cam)
	}
	return len(seen), nil
}

func (s *Service) notify(c store.Camera) {
	if s.o.Listener != nil {
		s.o.Listener.CameraChanged(c)
	}
}

func applyDevice(c *store.Camera, d nest.Device) {
	c.Name = d.DisplayName()
	c.Room = d.Room
	c.Type = d.Type
	c.Missing = false
	if ls := d.LiveStream; ls != nil {
		c.Protocols, c.CodecsVideo, c.CodecsAudio = ls.Protocols, ls.VideoCodecs, ls.AudioCodecs
		c.Resolution = ""
		if ls.MaxWidth > 0 && ls.MaxHeight > 0 {
			c.Resolution = fmt.Sprintf("%dx%d", ls.MaxWidth, ls.MaxHeight)
		}
	}
}
