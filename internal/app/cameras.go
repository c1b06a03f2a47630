package app

import (
	"time"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/store"
)

// CameraState is the retained per-camera state (mqtt-api.md §4).
type CameraState struct {
	Status    string     `json:"status"`
	Ready     bool       `json:"ready"`
	Readers   int        `json:"readers"`
	Path      *string    `json:"path"`
	ExpiresAt *time.Time `json:"expires_at"`
	LastError *string    `json:"last_error"`
}

// cameraStates publishes the configured state of cameras while no stream
// runs: what a subscriber sees before the first reader arrives.
type cameraStates struct {
	bus *events.Bus
}

func idleState(c store.Camera) CameraState {
	st := CameraState{Status: "idle"}
	if c.MTXPath != "" {
		p := c.MTXPath
		st.Path = &p
	}
	switch {
	case c.MTXPath == "":
		st.Status = "unconfigured"
	case !c.IsEnabled:
		st.Status = "disabled"
	case c.Missing:
		st.Status = "missing"
	}
	return st
}

func (s *cameraStates) CameraChanged(c store.Camera) {
	s.bus.SetState(events.DomainCamera, c.ID, idleState(c))
}

func (s *cameraStates) CameraDeleted(id uint64) {
	s.bus.SetState(events.DomainCamera, id, nil)
}
