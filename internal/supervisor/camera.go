// Package supervisor runs one goroutine per camera that owns everything
// live about it: the on-demand lifecycle (demand, ready, read, unread,
// unDemand, notReady), the Google stream session and its extensions, and
// the output relay. Everything else talks to it with typed inputs on its
// inbox (inputs.go), so no camera state is shared under locks. The
// upstream itself runs behind the source contract (source.Runner).
//
// The files follow the camera's concerns: readers.go (the RTSP side),
// sessions.go (Google's session and the source), ondemand.go (starting,
// closing, failing and shutting down), state.go (events and retained
// state).
package supervisor

import (
	"context"
	"crypto/tls"
	"log/slog"
	"time"

	"github.com/nestmtx/nestmtx/internal/events"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
	"github.com/nestmtx/nestmtx/internal/source"
)

// SessionAPI is the part of the SDM client a camera uses: its stream sessions.
type SessionAPI interface {
	GenerateRtspStream(ctx context.Context, deviceName string) (nest.RTSPStream, error)
	ExtendRtspStream(ctx context.Context, s nest.RTSPStream) (nest.RTSPStream, error)
	StopRtspStream(ctx context.Context, s nest.RTSPStream) error
	GenerateWebRtcStream(ctx context.Context, deviceName, offerSDP string) (nest.WebRTCStream, error)
	ExtendWebRtcStream(ctx context.Context, s nest.WebRTCStream) (nest.WebRTCStream, error)
	StopWebRtcStream(ctx context.Context, s nest.WebRTCStream) error
}

// Spec is how a camera is to be served (app maps the store row to it).
type Spec struct {
	ID         uint64
	Name       string
	Device     string // Google's device name
	Path       string
	Enabled    bool
	Persistent bool
	// WebRTC: the camera streams only over WebRTC, so its sessions are
	// WebRTC ones and its source is the WebRTC runner.
	WebRTC bool
	// Unsupported says why the camera cannot be served at all (say, it
	// streams only over HLS); "" when it can. Such a camera is failed
	// without a single call to Google.
	Unsupported string
	// Audio is the audio setting in effect (source.AudioOpus, AudioAAC or
	// AudioNone); AudioError says why it is not the one asked for (AAC
	// without ffmpeg), "" when it is.
	Audio      string
	AudioError string
}

// Options are shared by every camera.
type Options struct {
	// NewRelay makes the output relay a camera's readers are served from,
	// for a source with the given tracks (on the RTSP server).
	NewRelay func(relay.Params) (*relay.Relay, error)
	// Runner runs the upstream of an RTSP session; default source.RTSPS
	// with UpstreamTLS.
	Runner source.Runner
	// WebRTCRunner runs the upstream of a WebRTC session; default
	// source.WebRTC (with WebRTCLoopback).
	WebRTCRunner source.Runner
	// WebRTCLoopback lets WebRTC use loopback addresses: Google is a
	// simulator on this host.
	WebRTCLoopback bool
	// FFmpeg is the ffmpeg binary that transcodes WebRTC cameras' audio
	// to AAC.
	FFmpeg      string
	UpstreamTLS *tls.Config
	Bus         *events.Bus
	// Clock is the time cameras run on; default the system clock.
	Clock        Clock
	StartTimeout time.Duration
	CloseAfter   time.Duration
	// ExtendAt is the fraction of a session's lifetime after which it is
	// extended (0.8: at 4 of Google's 5 minutes).
	ExtendAt float64
	// StopTimeout bounds the Stops of a camera deleted while the daemon
	// runs; at shutdown the manager's deadline bounds them instead, and
	// otherwise a Stop waits for the quota until its session would expire.
	StopTimeout time.Duration
	// RefusedBackoff is how long a camera Google refused to stream (a 400
	// or 403 to Generate) stays failed before it is tried again; it doubles
	// with each refusal up to 12 times this. A config change or a sync
	// retries at once.
	RefusedBackoff time.Duration
	// StatsPeriod spaces the state updates that only refresh the figures
	// (default 10 s).
	StatsPeriod time.Duration
	// StallTimeout is how long an upstream may send nothing before it is
	// regenerated (NestMTX #39: streams that looked alive for hours).
	StallTimeout time.Duration
	// DeviceGone is told when Google says a camera's device does not exist
	// (unshared in Partner Connections), so that a sync can record it.
	DeviceGone func(cameraID uint64)
	Log        *slog.Logger

	// shutdown gives the deadline of the daemon's stop (set by the Manager);
	// nil when the camera ends alone (deleted).
	shutdown func() context.Context
	// skew warns once about a host clock far from Google's (shared by the
	// Manager's cameras).
	skew *skewWarning
}

type phase int

const (
	idle     phase = iota // no source
	starting              // generating a session / connecting, readers held
	ready                 // frames flow
)

// Camera is one camera's supervisor.
type Camera struct {
	opts  Options
	clock Clock
	inbox chan input
	done  chan struct{}
	log   *slog.Logger

	// Everything below is owned by the run goroutine.
	cfg    Spec
	google SessionAPI
	// credDown says why the credential cannot be used, "" when it can
	// (see Credential).
	credDown string
	gone     string // why Google says the device does not exist, until the row changes
	demanded bool   // a demand was emitted and its unDemand is still due
	phase    phase
	waiters  []waiter
	// readers counts every reader from SETUP on (as MediaMTX counts them); the
	// value says whether it plays. The camera owns this fact; the relay
	// only knows whom it feeds.
	readers map[*rtspserver.Reader]bool
	relay   *relay.Relay
	session *session // the live Google session, if any
	// sessionLost: Google said the session is gone (a refused extension);
	// stopping it would only spend quota.
	sessionLost bool
	// retiring sessions are stopped after the next Generate, so that the
	// quota serves the replacement first.
	retiring []session
	gen      int // source generation: stale reports are ignored
	// handing names the generation that keeps feeding the readers while
	// its replacement connects (see handOver); nil when there is none.
	handing   *handover
	cancelSrc context.CancelFunc
	srcCtx    context.Context // the current generation's; nil between generations
	lastError string
	attempts  int // consecutive failed starts, for backoff
	// failed says why Google refused to stream this camera; no start is
	// tried until failTimer fires or the row changes.
	failed   string
	failures int // consecutive refusals, for the failed backoff
	// waitingFor says what a start waits for (Google's quota), "" when
	// nothing: published in the state and in the 503 of a start timeout.
	waitingFor string
	stopping   bool // the daemon is shutting down: the state says stopped

	counters counters
	snap     snapshot
	// statsTicker republishes the state with fresh figures while a relay
	// exists.
	statsTicker Ticker

	startTimer, closeTimer, extendTimer, retryTimer, failTimer Timer
	// watchdog checks that the session has not passed its expiry (an
	// extension that never came back).
	watchdog Ticker
}

// Credential is what a camera knows of its Google credential: the client
// to call and why it cannot be used ("" when it can). The manager passes it
// at New and pushes every change (SetCredential); that push is the camera's
// only source for it.
type Credential struct {
	Google SessionAPI // nil keeps the current client on a change
	Down   string
}

// New creates a camera's supervisor; Run starts it.
func New(cfg Spec, cred Credential, o Options) *Camera {
	if o.ExtendAt <= 0 || o.ExtendAt >= 1 {
		o.ExtendAt = 0.8
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 5 * time.Second
	}
	if o.StatsPeriod <= 0 {
		o.StatsPeriod = statsPeriod
	}
	if o.RefusedBackoff <= 0 {
		o.RefusedBackoff = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	log := o.Log.With("camera_id", cfg.ID)
	if o.Runner == nil {
		o.Runner = source.RTSPS{TLS: o.UpstreamTLS, Log: log}
	}
	if o.WebRTCRunner == nil {
		o.WebRTCRunner = source.WebRTC{Log: log, Loopback: o.WebRTCLoopback, FFmpeg: o.FFmpeg}
	}
	return &Camera{opts: o, clock: o.Clock, inbox: make(chan input, 64), done: make(chan struct{}),
		log: log, cfg: cfg, google: cred.Google, credDown: cred.Down, readers: map[*rtspserver.Reader]bool{}}
}

// Run is the camera's goroutine; it returns when ctx ends, after stopping
// the Google session.
func (c *Camera) Run(ctx context.Context) {
	defer close(c.done)
	c.statsTicker = c.clock.NewTicker(c.opts.StatsPeriod)
	defer c.statsTicker.Stop()
	c.publishState()
	c.startIfPersistent()
	for {
		select {
		case <-ctx.Done():
			c.shutdown()
			return
		case in := <-c.inbox:
			c.log.Debug("camera input", "input", in.name())
			c.handle(in)
		case <-timerC(c.startTimer):
			c.startTimer = nil
			c.onStartTimeout()
		case <-timerC(c.closeTimer):
			c.closeTimer = nil
			c.onCloseAfter()
		case <-timerC(c.extendTimer):
			c.extendTimer = nil
			c.extend()
		case <-timerC(c.retryTimer):
			c.retryTimer = nil
			c.startSource()
		case <-timerC(c.failTimer):
			c.failTimer = nil
			c.onFailedBackoffOver()
		case <-tickerC(c.watchdog):
			c.checkExpiry()
		case <-tickerC(c.statsTicker):
			c.onStatsTick()
		}
	}
}

// Done is closed when Run has returned.
func (c *Camera) Done() <-chan struct{} { return c.done }

// post hands an input to the camera's goroutine; it gives up if the camera
// has stopped or ctx ends first.
func (c *Camera) post(ctx context.Context, in input) bool {
	select {
	case c.inbox <- in:
		return true
	case <-c.done:
		return false
	case <-ctx.Done():
		return false
	}
}
