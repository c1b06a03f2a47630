// Package rtspserver serves cameras to RTSP readers (Frigate, Home
// Assistant, ffmpeg). It maps gortsplib's callbacks onto paths that start
// their source on demand; the paths decide everything else.
package rtspserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/google/uuid"

	"github.com/nestmtx/nestmtx/internal/relay"
)

// Reader is one RTSP reader: a session, or a connection that only DESCRIBEs.
type Reader struct {
	ID         string
	Type       string // "rtspSession" or "rtspConn" (MediaMTX's names)
	RemoteAddr string
	Query      string
	Session    *gortsplib.ServerSession

	path Path // set once the session has SETUP a path
}

// Path is what a served path must do.
type Path interface {
	// Describe returns the path's stream, starting its source on demand and
	// waiting, within ctx, until it is ready.
	Describe(ctx context.Context, r *Reader) (*gortsplib.ServerStream, error)
	// Setup is Describe that also counts r as a reader.
	Setup(ctx context.Context, r *Reader) (*gortsplib.ServerStream, error)
	// Play starts r playing. release must be called once gortsplib has
	// activated the reader (see relay.ReplayGOP).
	Play(r *Reader) (release func(), err error)
	// Pause stops r playing; it stays a reader.
	Pause(r *Reader)
	// Remove ends r.
	Remove(r *Reader)
}

// Resolver finds the path serving a name.
type Resolver interface {
	Lookup(name string) (Path, bool)
}

// StatusError is an error with the RTSP status to answer it with.
type StatusError struct {
	Status base.StatusCode
	Reason string
}

func (e *StatusError) Error() string { return e.Reason }

// Options configure the server.
type Options struct {
	Address string // host:port for RTSP over TCP
	// UDPRTPAddress enables UDP transport (host:port with an even port; RTCP
	// uses the next one). Empty serves TCP only.
	UDPRTPAddress string
	// StartTimeout bounds how long a DESCRIBE or SETUP waits for a source.
	StartTimeout time.Duration
	Resolver     Resolver
	Log          *slog.Logger
}

// Server is the running RTSP server.
type Server struct {
	opts Options
	srv  *gortsplib.Server
	log  *slog.Logger

	// ctx ends every held request at shutdown, so Close never waits on a
	// callback blocked for a source (lifecycle.md 5.6).
	ctx    context.Context
	cancel context.CancelFunc

	addr net.Addr

	mu      sync.Mutex
	conns   map[*gortsplib.ServerConn]string // connection id
	pending map[*gortsplib.ServerConn]func() // replay gates to release
}

// Start listens and serves.
func Start(o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Server{opts: o, log: o.Log.With("component", "rtsp"),
		conns: map[*gortsplib.ServerConn]string{}, pending: map[*gortsplib.ServerConn]func(){}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.srv = &gortsplib.Server{
		Handler:        s,
		RTSPAddress:    o.Address,
		WriteQueueSize: relay.WriteQueueSize,
		ReadTimeout:    10 * time.Second,
		WriteTimeout:   10 * time.Second,
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err == nil {
				s.addr = ln.Addr()
			}
			return ln, err
		},
	}
	if o.UDPRTPAddress != "" {
		host, port, err := net.SplitHostPort(o.UDPRTPAddress)
		if err != nil {
			return nil, fmt.Errorf("rtsp udp address: %w", err)
		}
		var p int
		if _, err := fmt.Sscanf(port, "%d", &p); err != nil {
			return nil, fmt.Errorf("rtsp udp address: bad port %q", port)
		}
		s.srv.UDPRTPAddress = net.JoinHostPort(host, fmt.Sprint(p))
		s.srv.UDPRTCPAddress = net.JoinHostPort(host, fmt.Sprint(p+1))
	}
	if err := s.srv.Start(); err != nil {
		return nil, fmt.Errorf("rtsp: %w", err)
	}
	return s, nil
}

// Gortsplib is the underlying server, which streams belong to.
func (s *Server) Gortsplib() *gortsplib.Server { return s.srv }

// Addr is the TCP listener's address.
func (s *Server) Addr() string { return s.addr.String() }

// Close ends held requests, then every connection.
func (s *Server) Close() {
	s.cancel()
	s.srv.Close()
}

func pathName(p string) string {
	return strings.Trim(p, "/")
}

func (s *Server) connID(c *gortsplib.ServerConn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[c]
}

// OnConnOpen implements gortsplib.ServerHandlerOnConnOpen.
func (s *Server) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	s.mu.Lock()
	s.conns[ctx.Conn] = uuid.NewString()
	s.mu.Unlock()
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose.
func (s *Server) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	s.mu.Lock()
	delete(s.conns, ctx.Conn)
	release := s.pending[ctx.Conn]
	delete(s.pending, ctx.Conn)
	s.mu.Unlock()
	if release != nil {
		release()
	}
}

// OnSessionOpen implements gortsplib.ServerHandlerOnSessionOpen.
func (s *Server) OnSessionOpen(ctx *gortsplib.ServerHandlerOnSessionOpenCtx) {
	ctx.Session.SetUserData(&Reader{ID: uuid.NewString(), Type: "rtspSession",
		RemoteAddr: ctx.Conn.NetConn().RemoteAddr().String(), Session: ctx.Session})
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (s *Server) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	if r, ok := ctx.Session.UserData().(*Reader); ok && r.path != nil {
		r.path.Remove(r)
	}
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	p, ok := s.opts.Resolver.Lookup(pathName(ctx.Path))
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	r := &Reader{ID: s.connID(ctx.Conn), Type: "rtspConn", RemoteAddr: ctx.Conn.NetConn().RemoteAddr().String(), Query: ctx.Query}
	wctx, cancel := context.WithTimeout(s.ctx, s.opts.StartTimeout)
	defer cancel()
	st, err := p.Describe(wctx, r)
	if err != nil {
		return s.failure(ctx.Path, err), nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, st, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	// Every SETUP of a session must return the same stream (gortsplib panics
	// otherwise), even if the source restarted in between.
	if st := ctx.Session.SetuppedStream(); st != nil {
		return &base.Response{StatusCode: base.StatusOK}, st, nil
	}
	r, _ := ctx.Session.UserData().(*Reader)
	if r == nil {
		return &base.Response{StatusCode: base.StatusInternalServerError}, nil, nil
	}
	p, ok := s.opts.Resolver.Lookup(pathName(ctx.Path))
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	r.Query = ctx.Query
	wctx, cancel := context.WithTimeout(s.ctx, s.opts.StartTimeout)
	defer cancel()
	st, err := p.Setup(wctx, r)
	if err != nil {
		// The session never set up, so gortsplib's close of it will not
		// reach the path: forget the reader here.
		p.Remove(r)
		return s.failure(ctx.Path, err), nil, nil
	}
	r.path = p
	return &base.Response{StatusCode: base.StatusOK}, st, nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (s *Server) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	r, _ := ctx.Session.UserData().(*Reader)
	if r == nil || r.path == nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, nil
	}
	release, err := r.path.Play(r)
	if err != nil {
		return s.failure(ctx.Path, err), nil
	}
	if release != nil {
		s.mu.Lock()
		s.pending[ctx.Conn] = release
		s.mu.Unlock()
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnResponse implements gortsplib.ServerHandlerOnResponse. gortsplib calls
// it after the session handled the request, so after a PLAY the reader is
// active and the relay may feed again.
func (s *Server) OnResponse(c *gortsplib.ServerConn, _ *base.Response) {
	s.mu.Lock()
	release := s.pending[c]
	delete(s.pending, c)
	s.mu.Unlock()
	if release != nil {
		release()
	}
}

// OnPause implements gortsplib.ServerHandlerOnPause.
func (s *Server) OnPause(ctx *gortsplib.ServerHandlerOnPauseCtx) (*base.Response, error) {
	if r, ok := ctx.Session.UserData().(*Reader); ok && r.path != nil {
		r.path.Pause(r)
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError:
// a reader too slow to keep up loses packets; say so at debug level only.
func (s *Server) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	s.log.Debug("reader write queue full", "error", ctx.Error)
}

// OnPacketsLost implements gortsplib.ServerHandlerOnPacketsLost.
func (s *Server) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	s.log.Debug("packets lost", "count", ctx.Lost)
}

// OnDecodeError implements gortsplib.ServerHandlerOnDecodeError.
func (s *Server) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	s.log.Debug("decode error", "error", ctx.Error)
}

// failure answers a path's error: its own status, 503 for a source that
// did not start in time (lifecycle.md §0), 404 otherwise.
func (s *Server) failure(path string, err error) *base.Response {
	var se *StatusError
	switch {
	case errors.As(err, &se):
	case errors.Is(err, context.DeadlineExceeded):
		se = &StatusError{Status: base.StatusServiceUnavailable,
			Reason: fmt.Sprintf("the camera did not start within %s", s.opts.StartTimeout)}
	case errors.Is(err, context.Canceled):
		se = &StatusError{Status: base.StatusServiceUnavailable, Reason: "the server is shutting down"}
	default:
		se = &StatusError{Status: base.StatusServiceUnavailable, Reason: err.Error()}
	}
	s.log.Info("request refused", "path", pathName(path), "status", int(se.Status), "reason", se.Reason)
	return &base.Response{StatusCode: se.Status, StatusMessage: se.Reason}
}
