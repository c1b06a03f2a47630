package supervisor

import (
	"time"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/source"
)

// What a camera tells the world: its events and its retained state.

func (c *Camera) emit(name string, details map[string]any) {
	c.opts.Bus.Emit(events.Event{Domain: events.DomainCamera, Entity: events.ID(c.cfg.ID), Event: name, Details: details})
}

// State is the retained per-camera state (docs/mqtt-api.md §4).
type State struct {
	Status    string     `json:"status"`
	Ready     bool       `json:"ready"`
	Readers   int        `json:"readers"`
	Path      *string    `json:"path"`
	ExpiresAt *time.Time `json:"expires_at"`
	LastError *string    `json:"last_error"`
	// WaitingFor says what a start waits for (Google's quota, with the
	// time of the next slot); null when it waits for nothing.
	WaitingFor *string `json:"waiting_for"`
	// Audio is the audio the stream carries: "opus", "aac" or "none";
	// AudioError says why it is not what the camera's setting asks for.
	Audio      string  `json:"audio"`
	AudioError *string `json:"audio_error"`
	// BitrateKbps is what Google sends, over the last ~10 s (also in
	// Stats; here for templates such as Home Assistant's).
	BitrateKbps float64 `json:"bitrate_kbps"`
	Stats       Stats   `json:"stats"`
}

func (c *Camera) publishState() {
	c.noteReady()
	st := State{Readers: len(c.readers), Ready: c.phase == ready, Stats: c.stats()}
	st.BitrateKbps = st.Stats.BitrateKbps
	if c.cfg.Path != "" {
		p := c.cfg.Path
		st.Path = &p
	}
	if c.session != nil {
		t := c.session.expiresAt().UTC()
		st.ExpiresAt = &t
	}
	if c.lastError != "" {
		e := c.lastError
		st.LastError = &e
	}
	if c.waitingFor != "" {
		w := c.waitingFor
		st.WaitingFor = &w
	}
	st.Audio = c.audioServed()
	if c.cfg.AudioError != "" {
		e := c.cfg.AudioError
		st.AudioError = &e
	}
	switch {
	case c.stopping:
		st.Status = "stopped"
	case c.cfg.Path == "":
		st.Status = "unconfigured"
	case !c.cfg.Enabled:
		st.Status = "disabled"
	case c.credDown != "":
		st.Status = "unauthenticated"
	case c.refusal() != "" || c.gone != "":
		st.Status = "failed"
		if st.LastError == nil {
			e := c.refusal()
			st.LastError = &e
		}
	case c.phase == ready:
		st.Status = "ready"
	case c.phase == starting:
		st.Status = "starting"
	default:
		st.Status = "idle"
	}
	c.opts.Bus.SetState(events.DomainCamera, c.cfg.ID, st)
	c.snap.Store(&Snapshot{ID: c.cfg.ID, Path: c.cfg.Path, Name: c.cfg.Name, State: st})
}

// Snapshot is the camera's last published state; safe from any goroutine.
func (c *Camera) Snapshot() (Snapshot, bool) {
	s := c.snap.Load()
	if s == nil {
		return Snapshot{}, false
	}
	return *s, true
}

// audioServed is the audio codec the camera's stream carries (or will):
// the relay's, once there is one; else what the setting leads to.
func (c *Camera) audioServed() string {
	if c.relay != nil {
		return c.relay.Params().AudioCodec()
	}
	switch {
	case c.cfg.Audio == source.AudioNone:
		return source.AudioNone
	case !c.cfg.WebRTC || c.cfg.Audio == source.AudioAAC:
		return source.AudioAAC // Google's RTSP streams carry AAC
	}
	return source.AudioOpus
}
