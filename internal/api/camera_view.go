package api

import (
	"time"

	"github.com/nestmtx/nestmtx/internal/store"
)

// cameraView is a camera as the API shows it (NestMTX's shape): an
// unconfigured mtx_path is null, as is an audio mode left to the global
// default, and lists are [] rather than null, which is what clients test
// for most simply. The store's row knows nothing of this.
type cameraView struct {
	ID           uint64    `json:"id"`
	CredentialID uint64    `json:"credential_id"`
	UID          string    `json:"uid"`
	Room         string    `json:"room"`
	Name         string    `json:"name"`
	IdentifiedAs string    `json:"identified_as" doc:"Google's device type."`
	Path         *string   `json:"mtx_path" doc:"The RTSP path it is served at, null for none."`
	IsEnabled    bool      `json:"is_enabled"`
	IsPersistent bool      `json:"is_persistent"`
	Audio        *string   `json:"audio" enum:"opus,aac,none" doc:"The camera's audio mode, null when it follows the daemon's default (camera_audio)."`
	Protocols    []string  `json:"protocols"`
	Resolution   string    `json:"resolution"`
	CodecsVideo  []string  `json:"codecs_video"`
	CodecsAudio  []string  `json:"codecs_audio"`
	Missing      bool      `json:"missing" doc:"Google no longer lists the camera; it is not served."`
	State        any       `json:"state" doc:"The camera's live state, as its retained MQTT state (status, readers, audio, stats …); null when it has none."`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func viewCamera(c store.Camera) cameraView {
	v := cameraView{ID: c.ID, CredentialID: c.CredentialID, UID: c.UID, Room: c.Room, Name: c.Name,
		IdentifiedAs: c.Type, IsEnabled: c.IsEnabled, IsPersistent: c.IsPersistent,
		Protocols: nonNil(c.Protocols), Resolution: c.Resolution,
		CodecsVideo: nonNil(c.CodecsVideo), CodecsAudio: nonNil(c.CodecsAudio),
		Missing: c.Missing, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
	if c.Path != "" {
		p := c.Path
		v.Path = &p
	}
	if c.Audio != "" {
		a := c.Audio
		v.Audio = &a
	}
	return v
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
