package api

import (
	"cmp"
	"context"
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
		List: Authed(Spec{
			Summary: "List cameras",
			Payload: ListPayload("Keeps cameras whose name, room or mtx_path contains this, without regard to case.", "id", "name", "room", "mtx_path"),
			Result:  ListOf[cameraView]("A page of cameras."),
		}, func(ctx context.Context, c *Call) (any, error) {
			lp := readListParams(c.Args)
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
				func(c store.Camera) any { return liveView(d, c) }), nil
		}),
		// create {"sync": true} asks Google for the devices now (NestMTX's
		// sync button); {"sync": true, "credential_id": N} syncs one credential.
		Create: Admin(Spec{
			Summary: "Sync cameras with Google",
			Doc: "Cameras are not created by hand: this lists the cameras Google shares now, " +
				"for every credential or for one, adds the new ones and marks those Google no longer lists as missing.",
			Payload: &Object{Fields: []Field{
				{Name: "sync", Kind: Boolean, Required: true, Const: ptr(true),
					Message: "must be true: cameras are created by syncing with Google"},
				{Name: "credential_id", Kind: Integer, Minimum: 1, Maximum: 1 << 53, Doc: "Sync only this credential's cameras."},
			}},
			Result: ResultOf[SyncResult]("How many cameras Google lists."),
		}, func(ctx context.Context, c *Call) (any, error) {
			credID, hasCred := c.Args.Int("credential_id")
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
			return SyncResult{Synced: n}, nil
		}),
		Read: Authed(Spec{
			Summary: "Read a camera",
			Entity:  cameraEntity,
			Result:  ResultOf[cameraView]("The camera."),
		}, func(ctx context.Context, c *Call) (any, error) {
			cam, err := d.Store.GetCamera(c.ID)
			if err != nil {
				return nil, err
			}
			return liveView(d, cam), nil
		}),
		Update: Admin(Spec{
			Summary: "Update a camera",
			Doc: "A camera needs an mtx_path to be enabled or persistent. The change takes effect at once: " +
				"readers of a path that went away are disconnected, and a new audio mode restarts the stream.",
			Entity: cameraEntity,
			Payload: &Object{Fields: []Field{
				{Name: "mtx_path", Kind: String, Nullable: true, MaxLength: 255, Pattern: PathPattern, AllowEmpty: true,
					Doc: "The RTSP path the camera is served at, unique; null or \"\" for none."},
				{Name: "is_enabled", Kind: Boolean, Doc: "Serve the camera on demand."},
				{Name: "is_persistent", Kind: Boolean, Doc: "Keep the camera streaming with no reader. true without is_enabled also enables the camera."},
				{Name: "audio", Kind: String, Nullable: true, Enum: config.AudioModes(),
					Message: "must be one of " + strings.Join(config.AudioModes(), ", ") + ", or null for the default (camera_audio)",
					Doc:     "opus passes the camera's audio through, aac transcodes WebRTC cameras' Opus, none serves video only; null follows the daemon's camera_audio."},
			}, AtLeastOne: []string{"mtx_path", "is_enabled", "is_persistent", "audio"}},
			Result: ResultOf[cameraView]("The camera as written."),
			Errors: []string{CodeConflict},
		}, func(ctx context.Context, c *Call) (any, error) {
			id := c.ID
			path, pathSet := c.Args.String("mtx_path")
			enabled, enabledSet := c.Args.Bool("is_enabled")
			persistent, persistentSet := c.Args.Bool("is_persistent")
			audio, audioSet := c.Args.String("audio")
			cam, err := d.Store.UpdateCamera(id, func(cam *store.Camera) error {
				if pathSet {
					cam.Path = path
				}
				if enabledSet {
					cam.IsEnabled = enabled
				}
				if persistentSet {
					cam.IsPersistent = persistent
					// "Always on" means streaming: asked for alone, it
					// enables the camera too, rather than leaving a
					// disabled camera flagged persistent and silent.
					if persistent && !enabledSet {
						cam.IsEnabled = true
					}
				}
				if audioSet {
					cam.Audio = audio
				}
				// A stream needs a path to be served at.
				if cam.LacksPath() {
					field := "mtx_path"
					if !pathSet {
						field = "is_enabled"
						if !enabledSet {
							field = "is_persistent"
						}
					}
					return Invalid(FieldError{Path: "payload." + field, Message: store.ErrCameraNeedsPath.Error()})
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
		Delete: Admin(Spec{
			Summary: "Delete a camera",
			Doc:     "A camera Google still shares comes back at the next sync, with default settings.",
			Entity:  cameraEntity,
			Result:  ResultOf[cameraView]("The camera as it was."),
		}, func(ctx context.Context, c *Call) (any, error) {
			id := c.ID
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

// SyncResult is cameras create's answer.
type SyncResult struct {
	Synced int `json:"synced" min:"0" doc:"How many cameras Google lists now."`
}

var cameraEntity = &Entity{Of: "camera", Doc: "The camera's id."}

// liveView is a camera's view with its live state.
func liveView(d Deps, c store.Camera) cameraView {
	v := viewCamera(c)
	if d.LiveCamera != nil {
		v.State = d.LiveCamera(c.ID)
	}
	return v
}
