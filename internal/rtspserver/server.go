// Over 500 lines: one gortsplib handler per RTSP request, which share the server's connection and session tables.

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
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/google/uuid"

	"github.com/nestmtx/nestmtx/internal/framebatch"
	"github.com/nestmtx/nestmtx/internal/netguard"
	"github.com/nestmtx/nestmtx/internal/relay"
)

// Path is what a served path must do.
type Path interface {
	// Describe returns the path's relay, starting its source on demand and
	// waiting, within ctx, until it is ready.
	Describe(ctx context.Context, r *Reader) (*relay.Relay, error)
	// Setup is Describe that also counts r as a reader.
	Setup(ctx context.Context, r *Reader) (*relay.Relay, error)
	// Play starts r playing (see relay.Relay.Play).
	Play(r *Reader) (relay.Playback, error)
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

	// Authenticator checks RTSP logins. nil serves every reader without a
	// login.
	Authenticator Authenticator
	// Realm is the realm of the challenges (DefaultRealm when empty); it
	// must be the one the Authenticator's HA1s were computed for.
	Realm string
	// MaxConns bounds the RTSP connections open at once (0: no bound);
	// more are closed at once.
	MaxConns int

	// guard, when set, adjusts the listener's limits (tests).
	guard func(*netguard.Options)
}

// The listener's timeouts. A UDP reader's control connection only sends a
// keepalive every 30 s or so (gortsplib's session timeout is 60 s), so the
// idle timeout leaves room for two to be missed; a TCP reader that plays is
// exempt (it may send nothing for as long as it plays).
const (
	handshakeTimeout = 10 * time.Second
	idleTimeout      = 90 * time.Second
	requestTimeout   = 10 * time.Second
)

// Server is the running RTSP server.
type Server struct {
	opts Options
	srv  *gortsplib.Server
	log  *slog.Logger

	// ctx ends every held request at shutdown, so Close never waits on a
	// callback blocked for a source (docs/lifecycle.md §5.6).
	ctx    context.Context
	cancel context.CancelFunc

	addr  net.Addr
	guard *netguard.Listener

	mu    sync.Mutex
	conns map[*gortsplib.ServerConn]*connState
	// pending is the request each connection is having answered whose
	// response matters: a SETUP (for its interleaved channels) or a PLAY
	// (whose playback starts once it is answered).
	pending map[*gortsplib.ServerConn]pendingRequest
	// sessions are the open reader sessions: a UDP reader's session goes
	// on without its control connection, so EndLogins must find it too.
	sessions map[*gortsplib.ServerSession]*Reader
}

type pendingRequest struct {
	reader *Reader
	play   bool
}

// Start listens and serves.
func Start(o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	s := &Server{opts: o, log: o.Log.With("component", "rtsp"),
		conns: map[*gortsplib.ServerConn]*connState{}, pending: map[*gortsplib.ServerConn]pendingRequest{},
		sessions: map[*gortsplib.ServerSession]*Reader{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.srv = &gortsplib.Server{
		Handler:        s,
		RTSPAddress:    o.Address,
		WriteQueueSize: relay.WriteQueueSize,
		ReadTimeout:    10 * time.Second,
		WriteTimeout:   10 * time.Second,
		Listen: func(network, address string) (net.Listener, error) {
			g, ln, err := listen(network, address, o, s.log)
			if err != nil {
				return nil, err
			}
			s.addr, s.guard = g.Addr(), g
			return ln, nil
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

// listen opens the TCP listener: netguard's (the connection cap, the
// timeouts, and an Accept that survives EMFILE) under framebatch's, whose
// connections gortsplib and the relay's direct writers share. framebatch's
// writev reaches the socket through netguard.Conn's SyscallConn.
func listen(network, address string, o Options, log *slog.Logger) (*netguard.Listener, net.Listener, error) {
	no := netguard.Options{Name: "rtsp", MaxConns: o.MaxConns, HandshakeTimeout: handshakeTimeout,
		IdleTimeout: idleTimeout, RequestTimeout: requestTimeout, Log: log}
	if o.guard != nil {
		o.guard(&no)
	}
	g, err := netguard.Listen(network, address, no)
	if err != nil {
		return nil, nil, err
	}
	return g, framebatch.NewListener(g), nil
}

// Listener is the guarded TCP listener, whose Status the app's health
// reports.
func (s *Server) Listener() *netguard.Listener { return s.guard }

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
	if st := s.state(c); st != nil {
		return st.id
	}
	return ""
}

// OnConnOpen implements gortsplib.ServerHandlerOnConnOpen.
func (s *Server) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	st := newConnState(uuid.NewString(), ctx.Conn.NetConn())
	s.mu.Lock()
	s.conns[ctx.Conn] = st
	s.mu.Unlock()
}

// OnRequest implements gortsplib.ServerHandlerOnRequest: gortsplib calls
// it with every request of a connection, on the connection's goroutine,
// before handling it.
func (s *Server) OnRequest(c *gortsplib.ServerConn, req *base.Request) {
	// A whole request has been read: the connection speaks RTSP (no more
	// handshake timeout) and its request timeout starts over.
	netguard.RequestDone(c.NetConn())
	netguard.Established(c.NetConn())
	s.checkLogin(c, req)
	// gortsplib answers TEARDOWN, and OPTIONS or GET_PARAMETER naming a
	// session, inside that session, where no handler of ours sees them: a
	// stranger knowing (or sniffing) a session id could end another
	// reader's stream, or keep it alive. Without a login, the request names
	// no session.
	if _, named := req.Header["Session"]; named && !s.loggedIn(c) {
		delete(req.Header, "Session")
	}
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose.
func (s *Server) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	s.mu.Lock()
	delete(s.conns, ctx.Conn)
	p, ok := s.pending[ctx.Conn]
	delete(s.pending, ctx.Conn)
	s.mu.Unlock()
	if ok && p.play {
		s.stopPlayback(p.reader)
	}
}

// OnSessionOpen implements gortsplib.ServerHandlerOnSessionOpen.
func (s *Server) OnSessionOpen(ctx *gortsplib.ServerHandlerOnSessionOpenCtx) {
	r := &Reader{ID: uuid.NewString(), Type: "rtspSession",
		RemoteAddr: ctx.Conn.NetConn().RemoteAddr().String(), Session: ctx.Session}
	ctx.Session.SetUserData(r)
	s.mu.Lock()
	s.sessions[ctx.Session] = r
	s.mu.Unlock()
}

// EndLogins closes every connection logged in as username (in any case)
// and every session set up by one: the account was disabled or deleted, or
// its password changed, and a login must not outlive that. It returns how
// many connections and sessions it closed.
func (s *Server) EndLogins(username string) int {
	var conns []*gortsplib.ServerConn
	var sessions []*gortsplib.ServerSession
	s.mu.Lock()
	for c, st := range s.conns {
		st.mu.Lock()
		if st.account != nil && strings.EqualFold(st.account.Username, username) {
			conns = append(conns, c)
		}
		st.mu.Unlock()
	}
	for ss, r := range s.sessions {
		if acct := r.loggedInAs(); acct != "" && strings.EqualFold(acct, username) {
			sessions = append(sessions, ss)
		}
	}
	s.mu.Unlock()
	// Closing calls back into the handlers, which take s.mu.
	for _, c := range conns {
		c.Close()
	}
	for _, ss := range sessions {
		ss.Close()
	}
	n := len(conns) + len(sessions)
	if n > 0 {
		s.log.Info("ended RTSP logins of a changed account", "username", username, "connections", len(conns), "sessions", len(sessions))
	}
	return n
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (s *Server) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s.mu.Lock()
	delete(s.sessions, ctx.Session)
	s.mu.Unlock()
	if r, ok := ctx.Session.UserData().(*Reader); ok {
		s.stopPlayback(r)
		if r.path != nil {
			r.path.Remove(r)
		}
	}
}

// stopPlayback ends r's playback, and with it the exemption of the
// connection it played on from the idle timeouts: a reader that paused or
// tore its session down must speak again like any other.
func (s *Server) stopPlayback(r *Reader) {
	pb, on := r.endPlayback()
	if on != nil {
		netguard.Streaming(on, false)
	}
	if pb != nil {
		pb.Stop()
	}
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res := s.authorize(ctx.Conn); res != nil {
		return res, nil, nil
	}
	p, ok := s.opts.Resolver.Lookup(pathName(ctx.Path))
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	r := &Reader{ID: s.connID(ctx.Conn), Type: "rtspConn", RemoteAddr: ctx.Conn.NetConn().RemoteAddr().String(), Query: ctx.Query}
	wctx, cancel := context.WithTimeout(s.ctx, s.opts.StartTimeout)
	defer cancel()
	rel, err := p.Describe(wctx, r)
	if err != nil {
		return s.failure(ctx.Path, err), nil, nil
	}
	// Both of the relay's streams describe the same tracks.
	return &base.Response{StatusCode: base.StatusOK}, rel.Stream(true), nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	r, _ := ctx.Session.UserData().(*Reader)
	if r == nil {
		return &base.Response{StatusCode: base.StatusInternalServerError}, nil, nil
	}
	acct, res := s.login(ctx.Conn)
	if res != nil {
		return res, nil, nil
	}
	if acct != nil {
		r.setAccount(acct.Username)
	}
	// Every SETUP of a session must return the same stream (gortsplib panics
	// otherwise), even if the source restarted in between.
	if st := ctx.Session.SetuppedStream(); st != nil {
		s.expectSetupResponse(ctx.Conn, r)
		return &base.Response{StatusCode: base.StatusOK}, st, nil
	}
	p, ok := s.opts.Resolver.Lookup(pathName(ctx.Path))
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	r.Query = ctx.Query
	wctx, cancel := context.WithTimeout(s.ctx, s.opts.StartTimeout)
	defer cancel()
	rel, err := p.Setup(wctx, r)
	if err != nil {
		// The session never set up, so gortsplib's close of it will not
		// reach the path: forget the reader here.
		p.Remove(r)
		return s.failure(ctx.Path, err), nil, nil
	}
	r.path, r.name = p, pathName(ctx.Path)
	// A TCP reader on our own connection is fed by the relay directly.
	direct := false
	if mc, ok := ctx.Conn.NetConn().(relay.MediaConn); ok && ctx.Transport == gortsplib.TransportTCP {
		direct = true
		r.setConn(mc)
	}
	s.expectSetupResponse(ctx.Conn, r)
	return &base.Response{StatusCode: base.StatusOK}, rel.Stream(direct), nil
}

func (s *Server) expectSetupResponse(c *gortsplib.ServerConn, r *Reader) {
	s.mu.Lock()
	s.pending[c] = pendingRequest{reader: r}
	s.mu.Unlock()
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (s *Server) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	r, _ := ctx.Session.UserData().(*Reader)
	if r == nil || r.path == nil {
		if _, res := s.login(ctx.Conn); res != nil {
			return res, nil
		}
		return &base.Response{StatusCode: base.StatusBadRequest}, nil
	}
	// The session's path, checked at SETUP: a UDP session may be played
	// from another connection, which must log in and may read it too.
	if res := s.authorize(ctx.Conn); res != nil {
		return res, nil
	}
	if r.playing() {
		// A PLAY while playing (gortsplib allows it): the feed goes on as
		// it is, with no second replay of the GOP.
		return &base.Response{StatusCode: base.StatusOK}, nil
	}
	r.playOn(ctx.Conn.NetConn())
	pb, err := r.path.Play(r)
	if err != nil {
		return s.failure(ctx.Path, err), nil
	}
	r.setPlayback(pb)
	s.mu.Lock()
	s.pending[ctx.Conn] = pendingRequest{reader: r, play: true}
	s.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnResponse implements gortsplib.ServerHandlerOnResponse. gortsplib calls
// it after the session handled the request and before the response is
// written: after a SETUP the reader's interleaved channels are known, and
// after a PLAY the reader is active and its playback may start.
func (s *Server) OnResponse(c *gortsplib.ServerConn, res *base.Response) {
	s.mu.Lock()
	p, ok := s.pending[c]
	delete(s.pending, c)
	s.mu.Unlock()
	var pb relay.Playback
	if ok && p.play {
		pb = p.reader.pendingPlayback(res.StatusCode == base.StatusOK)
	}
	if ok && !p.play && res.StatusCode == base.StatusOK {
		var th headers.Transport
		if err := th.Unmarshal(res.Header["Transport"]); err == nil && th.InterleavedIDs != nil {
			p.reader.addChannel(th.InterleavedIDs[0])
		}
	}
	switch {
	case pb == nil:
	case res.StatusCode == base.StatusOK:
		// The reader may now send nothing on this connection for as long
		// as it plays (over TCP, or over UDP with RTCP for keepalive);
		// gortsplib's session timeout watches it instead.
		p.reader.streamOn(c.NetConn())
		netguard.Streaming(c.NetConn(), true)
		pb.Started()
	default:
		pb.Stop()
	}
}

// OnPause implements gortsplib.ServerHandlerOnPause.
func (s *Server) OnPause(ctx *gortsplib.ServerHandlerOnPauseCtx) (*base.Response, error) {
	if _, res := s.login(ctx.Conn); res != nil {
		return res, nil
	}
	if r, ok := ctx.Session.UserData().(*Reader); ok && r.path != nil {
		s.stopPlayback(r)
		r.path.Pause(r)
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnGetParameter implements gortsplib.ServerHandlerOnGetParameter. Readers
// send GET_PARAMETER as a keepalive; it needs the connection's login like
// any request about a path, and is answered as gortsplib would otherwise.
func (s *Server) OnGetParameter(ctx *gortsplib.ServerHandlerOnGetParameterCtx) (*base.Response, error) {
	if _, res := s.login(ctx.Conn); res != nil {
		return res, nil
	}
	return &base.Response{StatusCode: base.StatusOK,
		Header: base.Header{"Content-Type": base.HeaderValue{"text/parameters"}}, Body: []byte{}}, nil
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
// did not start in time (docs/lifecycle.md §0), 404 otherwise.
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

// FixedPath serves one relay with no source lifecycle: every request is
// answered at once. Tests and benchmarks use it to put a relay behind the
// real server.
type FixedPath struct {
	Relay *relay.Relay
	Log   *slog.Logger
}

// Describe implements Path.
func (p *FixedPath) Describe(context.Context, *Reader) (*relay.Relay, error) { return p.Relay, nil }

// Setup implements Path.
func (p *FixedPath) Setup(context.Context, *Reader) (*relay.Relay, error) { return p.Relay, nil }

// Play implements Path.
func (p *FixedPath) Play(r *Reader) (relay.Playback, error) { return p.Relay.Play(r.Player(p.Log)) }

// Pause implements Path.
func (p *FixedPath) Pause(*Reader) {}

// Remove implements Path.
func (p *FixedPath) Remove(*Reader) {}

// Paths is a fixed Resolver.
type Paths map[string]Path

// Lookup implements Resolver.
func (ps Paths) Lookup(name string) (Path, bool) {
	p, ok := ps[name]
	return p, ok
}
