package api

import (
	"cmp"
	"context"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/store"
)

// PathPattern is the set of RTSP path names a camera may be served at
// (NestMTX's rule: unreserved URL characters only), starting with a letter
// or digit so that ".", ".." and "~" are never paths.
var PathPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._~-]*$`)

func camerasModule(d Deps) Module {
	return Module{
		List: Authed(func(ctx context.Context, c *Call) (any, error) {
			lp, perr := readListParams(c.Payload, []string{"id", "name", "room", "mtx_path"})
			if perr != nil {
				return nil, perr
			}
			cams, err := d.Store.ListCameras()
			if err != nil {
				return nil, err
			}
			return paginate(cams, lp,
				func(c store.Camera, q string) bool {
					return containsFold(c.Name, q) || containsFold(c.Room, q) || containsFold(c.Path, q)
				},
				func(c store.Camera, f string) string {
					switch f {
					case "name":
						return c.Name
					case "room":
						return c.Room
					case "mtx_path":
						return c.Path
					}
					return idKey(c.ID)
				},
				func(c store.Camera) any { return viewCamera(c) }), nil
		}),
		// create {"sync": true} asks Google for the devices now (NestMTX's
		// sync button); {"sync": true, "credential_id": N} syncs one credential.
		Create: Admin(func(ctx context.Context, c *Call) (any, error) {
			p := readPayload(c.Payload)
			sync, _ := p.Bool("sync", true)
			credID, hasCred := p.Int("credential_id", false, 1, 1<<53)
			if err := p.Err(); err != nil {
				return nil, err
			}
			if !sync {
				return nil, Invalid(FieldError{Path: "payload.sync", Message: "must be true: cameras are created by syncing with Google"})
			}
			if d.Google == nil {
				return nil, NewError(CodeNotFound, "camera sync is not available in this daemon")
			}
			var n int
			var err error
			if hasCred {
				n, err = d.Google.Sync(ctx, uint64(credID))
			} else {
				n, err = d.Google.SyncAll(ctx)
			}
			if err != nil {
				return nil, googleError(err)
			}
			return map[string]any{"synced": n}, nil
		}),
		Read: Authed(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "camera")
			if err != nil {
				return nil, err
			}
			cam, err := d.Store.GetCamera(id)
			if err != nil {
				return nil, err
			}
			return viewCamera(cam), nil
		}),
		Update: Admin(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "camera")
			if err != nil {
				return nil, err
			}
			p := readPayload(c.Payload)
			path, pathSet, pathOK := p.NullableString("mtx_path", 255)
			if pathSet && pathOK && path != "" && !PathPattern.MatchString(path) {
				p.fail("mtx_path", "must match "+PathPattern.String())
				pathOK = false
			}
			enabled, enabledSet := p.Bool("is_enabled", false)
			persistent, persistentSet := p.Bool("is_persistent", false)
			audio, audioSet := readAudio(p)
			if err := p.Err(); err != nil {
				return nil, err
			}
			if p.Empty() {
				return nil, Invalid(FieldError{Path: "payload", Message: "must set at least one of mtx_path, is_enabled, is_persistent, audio"})
			}
			cam, err := d.Store.UpdateCamera(id, func(cam *store.Camera) error {
				if pathSet {
					cam.Path = path
				}
				if enabledSet {
					cam.IsEnabled = enabled
				}
				if persistentSet {
					cam.IsPersistent = persistent
				}
				if audioSet {
					cam.Audio = audio
				}
				// A stream needs a path to be served at.
				if cam.Path == "" && (cam.IsEnabled || cam.IsPersistent) {
					field := "mtx_path"
					if !pathSet {
						field = "is_enabled"
						if !enabledSet {
							field = "is_persistent"
						}
					}
					return Invalid(FieldError{Path: "payload." + field, Message: "a camera needs an mtx_path to be enabled or persistent"})
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			if d.Cameras != nil {
				d.Cameras.CameraChanged(cam)
			}
			d.Log.Info("camera updated", "camera_id", id, "mtx_path", cam.Path, "enabled", cam.IsEnabled,
				"persistent", cam.IsPersistent, "audio", cmp.Or(cam.Audio, "default"), "by", c.User.Username)
			return viewCamera(cam), nil
		}),
		Delete: Admin(func(ctx context.Context, c *Call) (any, error) {
			id, err := entityID(c, "camera")
			if err != nil {
				return nil, err
			}
			cam, err := d.Store.GetCamera(id)
			if err != nil {
				return nil, err
			}
			if err := d.Store.DeleteCamera(id); err != nil {
				return nil, err
			}
			if d.Cameras != nil {
				d.Cameras.CameraDeleted(id)
			}
			d.Log.Info("camera deleted", "camera_id", id, "by", c.User.Username)
			return viewCamera(cam), nil
		}),
	}
}

// readAudio reads update's audio: one of config.AudioModes exactly, or
// null for the global default (camera_audio), which is stored as "". set
// is false when the field is absent or invalid.
func readAudio(p *payload) (mode string, set bool) {
	const field = "audio"
	p.used[field] = true
	v, present := p.fields[field]
	if !present {
		return "", false
	}
	if isNull(v) {
		return "", true
	}
	if json.Unmarshal(v, &mode) != nil || !config.ValidAudioMode(mode) {
		p.fail(field, "must be one of "+strings.Join(config.AudioModes(), ", ")+", or null for the default (camera_audio)")
		return "", false
	}
	return mode, true
}
