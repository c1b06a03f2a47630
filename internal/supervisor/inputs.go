package supervisor

import (
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
)

// input is one thing that happens to a camera. Every input is one of the
// types below, handled by handle on the camera's goroutine; the ones a
// source generation sends carry that generation, so that reports of a
// superseded source are dropped.
type input interface {
	name() string // for the DEBUG log; never holds a secret
}

// From the RTSP server, about one reader.
type (
	// requestIn is a DESCRIBE (setup false) or SETUP waiting for the stream.
	requestIn struct {
		reader *rtspserver.Reader
		setup  bool
		reply  chan describeResult
	}
	// cancelWaitIn: a held request's wait ended (the reader's own start
	// timeout or hang-up); why gets the reason to give the reader.
	cancelWaitIn struct {
		reply chan describeResult
		why   chan string
	}
	playIn struct {
		reader *rtspserver.Reader
		reply  chan *relay.Relay // nil when the reader cannot play
	}
	pauseIn  struct{ reader *rtspserver.Reader }
	removeIn struct{ reader *rtspserver.Reader }
)

// From the manager.
type (
	updateIn     struct{ cfg Spec }
	restartIn    struct{}
	credentialIn struct {
		google SessionAPI // nil keeps the current client
		down   string     // why the credential cannot be used, "" when it can
	}
)

// From a source generation and its Google calls.
type (
	quotaWaitIn struct {
		gen  int
		wait nest.QuotaWait
	}
	// sessionIn: Generate succeeded; google is the client that made it.
	sessionIn struct {
		gen     int
		session session
		google  SessionAPI
	}
	generateFailedIn struct {
		gen int
		err error
	}
	// connectedIn: the upstream's tracks are known; reply gets the
	// segment to feed (or why not).
	connectedIn struct {
		gen    int
		params relay.Params
		reply  chan segmentResult
	}
	readyIn struct {
		gen    int
		params relay.Params
	}
	sourceEndedIn struct {
		gen int
		err error
	}
	extendedIn struct {
		gen    int
		google SessionAPI
		next   session
		err    error
	}
)

type segmentResult struct {
	seg *relay.Segment
	err error
}

func (requestIn) name() string        { return "request" }
func (cancelWaitIn) name() string     { return "cancel-wait" }
func (playIn) name() string           { return "play" }
func (pauseIn) name() string          { return "pause" }
func (removeIn) name() string         { return "remove" }
func (updateIn) name() string         { return "update" }
func (restartIn) name() string        { return "restart" }
func (credentialIn) name() string     { return "credential" }
func (quotaWaitIn) name() string      { return "quota-wait" }
func (sessionIn) name() string        { return "session" }
func (generateFailedIn) name() string { return "generate-failed" }
func (connectedIn) name() string      { return "connected" }
func (readyIn) name() string          { return "ready" }
func (sourceEndedIn) name() string    { return "source-ended" }
func (extendedIn) name() string       { return "extended" }

// handle is the one place every input is dispatched from.
func (c *Camera) handle(in input) {
	switch m := in.(type) {
	case requestIn:
		c.onRequest(m.reader, m.setup, m.reply)
	case cancelWaitIn:
		c.dropWaiter(m.reply)
		m.why <- c.startTimeoutReason()
	case playIn:
		m.reply <- c.onPlay(m.reader)
	case pauseIn:
		c.onPause(m.reader)
	case removeIn:
		c.onRemove(m.reader)
	case updateIn:
		c.onUpdate(m.cfg)
	case restartIn:
		c.onRestart()
	case credentialIn:
		c.onCredential(m.google, m.down)
	case quotaWaitIn:
		if m.gen == c.gen {
			c.onQuotaWait(m.wait)
		}
	case sessionIn:
		c.onSession(m)
	case generateFailedIn:
		if m.gen == c.gen {
			c.onGenerateFailed(m.err)
		}
	case connectedIn:
		m.reply <- c.onConnected(m.gen, m.params)
	case readyIn:
		if m.gen == c.gen {
			c.onReady(m.params)
		}
	case sourceEndedIn:
		if m.gen == c.gen {
			c.onSourceFailed(m.err)
		}
	case extendedIn:
		c.onExtended(m)
	default:
		c.log.Error("unknown camera input", "input", in.name())
	}
}
