package rtspserver

import (
	"log/slog"
	"net"
	"sync"

	"github.com/bluenviron/gortsplib/v4"

	"github.com/nestmtx/nestmtx/internal/relay"
)

// Reader is one RTSP reader: a session, or a connection that only DESCRIBEs.
// Its exported fields are set when it is created and never change; what
// changes while it lives is behind its one lock, mu. Whether it counts as
// a reader of its camera is the camera's fact; whether the relay feeds it
// is the relay's.
type Reader struct {
	ID         string
	Type       string // "rtspSession" or "rtspConn" (MediaMTX's names)
	RemoteAddr string
	Query      string
	Session    *gortsplib.ServerSession

	// path and name are set at SETUP, by the session's own goroutine,
	// before anything else can reach the reader through them.
	path Path
	name string

	mu sync.Mutex
	// account is the login the session was set up with ("" without
	// logins), so that EndLogins can end it.
	account string
	// conn and channels let the relay write to a TCP reader directly: its
	// connection, and the interleaved RTP channel of each set-up media in
	// SETUP order. conn is nil for other readers.
	conn     relay.MediaConn
	channels []int
	// playback is the relay's feed while the reader plays.
	playback relay.Playback
	// streamingOn is the connection exempted from idle timeouts while the
	// reader plays.
	streamingOn net.Conn
	// played is set once the reader has played: a PLAY after a PAUSE
	// resumes with live media, not a replay of the GOP (whose sequence
	// numbers it has already seen).
	played bool
}

// Player describes r to its path's relay.
func (r *Reader) Player(log *slog.Logger) relay.Player {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := relay.Player{Session: r.Session, Conn: r.conn, Channels: append([]int(nil), r.channels...),
		ReplayGOP: !r.played, Log: log}
	r.played = true
	return p
}

func (r *Reader) setAccount(username string) {
	r.mu.Lock()
	r.account = username
	r.mu.Unlock()
}

func (r *Reader) loggedInAs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.account
}

// setConn records the reader's TCP connection, which the relay writes to.
func (r *Reader) setConn(c relay.MediaConn) {
	r.mu.Lock()
	r.conn = c
	r.mu.Unlock()
}

// playOn moves a direct reader to the connection that sent its PLAY:
// gortsplib sends a TCP session's media there, which need not be the one
// that sent SETUP.
func (r *Reader) playOn(c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		if mc, ok := c.(relay.MediaConn); ok {
			r.conn = mc
		}
	}
}

func (r *Reader) addChannel(id int) {
	r.mu.Lock()
	r.channels = append(r.channels, id)
	r.mu.Unlock()
}

func (r *Reader) playing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.playback != nil
}

func (r *Reader) setPlayback(pb relay.Playback) {
	r.mu.Lock()
	r.playback = pb
	r.mu.Unlock()
}

// pendingPlayback is the playback a PLAY started, dropped from the reader
// if the server refused the PLAY after all.
func (r *Reader) pendingPlayback(ok bool) relay.Playback {
	r.mu.Lock()
	defer r.mu.Unlock()
	pb := r.playback
	if !ok {
		r.playback = nil
	}
	return pb
}

func (r *Reader) streamOn(c net.Conn) {
	r.mu.Lock()
	r.streamingOn = c
	r.mu.Unlock()
}

// endPlayback takes the playback and the streaming connection away.
func (r *Reader) endPlayback() (relay.Playback, net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pb, on := r.playback, r.streamingOn
	r.playback, r.streamingOn = nil, nil
	return pb, on
}
