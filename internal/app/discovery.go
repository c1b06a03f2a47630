package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nestmtx/nestmtx/internal/mqtt"
	"github.com/nestmtx/nestmtx/internal/store"
)

// Home Assistant discovery (docs/home-assistant.md): the daemon's side.
// The mqtt package publishes the configs and receives the commands; here
// are the camera rows it describes and what its commands do, through the
// same path as the API's cameras update (the store, then the directory).

// supportURL is the discovery origin's support link.
const supportURL = "https://github.com/nestmtx/nestmtx"

// cameraWatch tells its listeners about every camera row the directory
// hands to the supervisors (created, changed) and every deletion.
type cameraWatch struct {
	mu  sync.RWMutex
	fns []func(id uint64)
}

func (w *cameraWatch) add(fn func(id uint64)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fns = append(w.fns, fn)
}

func (w *cameraWatch) notify(id uint64) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	for _, fn := range w.fns {
		fn(id)
	}
}

// CameraDeleted implements api.CameraListener: it stops the camera's
// supervisor and forgets its state, then tells the watchers.
func (d *cameraDirectory) CameraDeleted(id uint64) {
	d.Manager.CameraDeleted(id)
	d.watch.notify(id)
}

// startDiscovery starts Home Assistant discovery once MQTT is up (or, with
// discovery off, withdraws what an earlier run published).
func (a *App) startDiscovery() {
	d, err := a.mqtt.StartDiscovery(mqtt.DiscoveryOptions{
		Enabled: a.cfg.HADiscovery,
		Prefix:  a.cfg.HADiscoveryPrefix,
		Origin:  mqtt.DiscoveryOrigin{Name: "nestmtx", Version: a.version.Release, URL: supportURL},
		Cameras: a.discoveryCameras,
		Camera:  a.discoveryCamera,
		Command: a.cameraCommand,
	})
	if err != nil {
		a.log.Error("Home Assistant discovery did not start", "error", err)
		return
	}
	a.cameras.watch.add(d.Changed)
}

func (a *App) discoveryCameras() ([]mqtt.DiscoveryCamera, error) {
	rows, err := a.store.ListCameras()
	if err != nil {
		return nil, err
	}
	out := make([]mqtt.DiscoveryCamera, 0, len(rows))
	for _, r := range rows {
		out = append(out, discoveryCamera(r))
	}
	return out, nil
}

func (a *App) discoveryCamera(id uint64) (mqtt.DiscoveryCamera, bool, error) {
	row, err := a.store.GetCamera(id)
	if errors.Is(err, store.ErrNotFound) {
		return mqtt.DiscoveryCamera{}, false, nil
	}
	if err != nil {
		return mqtt.DiscoveryCamera{}, false, err
	}
	return discoveryCamera(row), true, nil
}

func discoveryCamera(r store.Camera) mqtt.DiscoveryCamera {
	return mqtt.DiscoveryCamera{ID: r.ID, Key: discoveryKey(r), Name: r.Name, Room: r.Room, Model: cameraModel(r.Type),
		Enabled: r.IsEnabled, Persistent: r.IsPersistent}
}

// discoveryKey names a camera for Home Assistant: its credential and a hash
// of its Google device name, which survive restarts, renames, path changes
// and the row being deleted and synced again (a new row id). The hash keeps
// the topic short and within [A-Za-z0-9_-]; the credential keeps apart the
// same device reached through two credentials, as the store does.
func discoveryKey(r store.Camera) string {
	if r.UID == "" { // not from Google's sync: the row is all there is
		return fmt.Sprintf("nestmtx_%d_camera%d", r.CredentialID, r.ID)
	}
	sum := sha256.Sum256([]byte(r.UID))
	return "nestmtx_" + strconv.FormatUint(r.CredentialID, 10) + "_" + hex.EncodeToString(sum[:8])
}

// cameraModel is a device model from Google's device type
// ("sdm.devices.types.DOORBELL" is "Nest Doorbell").
func cameraModel(typ string) string {
	t, ok := strings.CutPrefix(typ, "sdm.devices.types.")
	switch {
	case typ == "":
		return "Nest camera"
	case !ok || t == "":
		return typ
	}
	return "Nest " + strings.ToUpper(t[:1]) + strings.ToLower(t[1:])
}

// cameraCommand carries out a command from Home Assistant's switches and
// button. On the embedded broker only admins can publish one; on an
// external broker its ACL must see to that (docs/home-assistant.md).
func (a *App) cameraCommand(ctx context.Context, c mqtt.CameraCommand) error {
	row, err := a.store.GetCamera(c.Camera)
	if errors.Is(err, store.ErrNotFound) {
		a.log.Debug("ignored an MQTT command for an unknown camera", "camera_id", c.Camera, "command", c.Action)
		return nil
	}
	if err != nil {
		return err
	}
	switch c.Action {
	case mqtt.CommandEnabled, mqtt.CommandPersistent:
		set := func(cam *store.Camera) *bool {
			if c.Action == mqtt.CommandEnabled {
				return &cam.IsEnabled
			}
			return &cam.IsPersistent
		}
		if *set(&row) == c.On {
			return nil
		}
		row, err = a.store.UpdateCamera(c.Camera, func(cam *store.Camera) error {
			*set(cam) = c.On
			if cam.LacksPath() {
				return store.ErrCameraNeedsPath
			}
			return nil
		})
		if err != nil {
			return err
		}
		a.cameras.CameraChanged(row)
		a.log.Info("camera updated", "camera_id", row.ID, "mtx_path", row.Path, "enabled", row.IsEnabled,
			"persistent", row.IsPersistent, "by", "mqtt command")
		return nil
	case mqtt.CommandRestart:
		return a.restartCamera(row)
	}
	return fmt.Errorf("unknown command %q", c.Action)
}

// restartCamera replaces a camera's Google session (Home Assistant's
// "restart stream" button): a streaming camera hands over to a new session
// without its readers noticing; a starting one starts over.
func (a *App) restartCamera(row store.Camera) error {
	if !row.IsEnabled || row.Path == "" {
		return errors.New("the camera is not enabled")
	}
	a.log.Info("restarting a camera's stream", "camera_id", row.ID, "by", "mqtt command")
	if !a.cameras.Restart(row.ID) {
		return errors.New("no such camera")
	}
	return nil
}
