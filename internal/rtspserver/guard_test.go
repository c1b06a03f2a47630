package rtspserver

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/nestmtx/nestmtx/internal/framebatch"
	"github.com/nestmtx/nestmtx/internal/netguard"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// The connection cap closes the connections past it at once, and the
// listener is exposed for health reports.
func TestListenerCapsConnections(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, func(o *Options) { o.MaxConns = 2 })
	if ts.srv.Listener() == nil || ts.srv.Listener().Status().Name != "rtsp" {
		t.Fatal("no guarded rtsp listener")
	}
	for range 2 {
		if res := dialRaw(t, ts.addr).do(base.Options, ts.url("", "", "cam"), nil); res.StatusCode != base.StatusOK {
			t.Fatalf("OPTIONS: %d", res.StatusCode)
		}
	}
	// The third is reset at once: at the dial already, or at its first read.
	third, err := net.Dial("tcp", ts.addr)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
	case err != nil:
		t.Fatal(err)
	default:
		defer third.Close()
		testkit.WaitPeerClose(t, third, 5*time.Second)
	}
	if st := ts.srv.Listener().Status(); st.Refused != 1 || st.Open != 2 {
		t.Fatalf("listener status %+v, want 1 refused and 2 open", st)
	}
}

// A connection that never sends a request is closed at the handshake
// timeout; one that did (OnRequest marks it established) is not.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, func(o *Options) {
		o.guard = func(g *netguard.Options) {
			g.HandshakeTimeout, g.IdleTimeout, g.RequestTimeout = 300*time.Millisecond, 0, 0
		}
	})
	spoke := dialRaw(t, ts.addr)
	if res := spoke.do(base.Options, ts.url("", "", "cam"), nil); res.StatusCode != base.StatusOK {
		t.Fatalf("OPTIONS: %d", res.StatusCode)
	}
	silent, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	testkit.WaitPeerClose(t, silent, 5*time.Second)
	// Older than the silent one, so past the handshake timeout too.
	if res := spoke.do(base.Options, ts.url("", "", "cam"), nil); res.StatusCode != base.StatusOK {
		t.Fatalf("OPTIONS on the connection that spoke: %d", res.StatusCode)
	}
}

// A TCP reader that plays is exempt from the idle timeout (it may send
// nothing for as long as it plays); once it pauses, it is not.
func TestPlayingReaderIsNotIdle(t *testing.T) {
	t.Parallel()
	ts := startServer(t, nil, func(o *Options) {
		o.guard = func(g *netguard.Options) {
			g.HandshakeTimeout, g.IdleTimeout, g.RequestTimeout = 0, 400*time.Millisecond, 0
		}
	})
	p, err := play(t, ts.url("", "", "cam"))
	if err != nil {
		t.Fatal(err)
	}
	p.next(t, 1)
	// A quiet connection opened after the reader's PLAY: by the time it is
	// closed as idle, the reader has been quiet longer.
	quiet := dialRaw(t, ts.addr)
	quiet.do(base.Options, ts.url("", "", "cam"), nil)
	testkit.WaitPeerClose(t, quiet.nc, 5*time.Second)
	p.next(t, 10)
	if st := ts.srv.Listener().Status(); st.TimedOut != 1 {
		t.Fatalf("listener status %+v, want only the quiet connection timed out", st)
	}
	if _, err := p.c.Pause(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.err:
	case <-time.After(5 * time.Second):
		t.Fatal("a paused, quiet reader was not closed as idle")
	}
}

// framebatch's writev reaches the socket through netguard's Conn.
func TestWritevThroughGuard(t *testing.T) {
	t.Parallel()
	g, ln, err := listen("tcp", "127.0.0.1:0", Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", g.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fc, ok := c.(*framebatch.Conn)
	if !ok {
		t.Fatalf("accepted %T, want *framebatch.Conn", c)
	}
	sc, ok := fc.Unwrap().(syscall.Conn)
	if !ok {
		t.Fatalf("%T under framebatch is not a syscall.Conn: writev would fall back to a write per buffer", fc.Unwrap())
	}
	if raw, err := sc.SyscallConn(); err != nil || raw == nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	if err := fc.WriteBuffers(net.Buffers{[]byte("ab"), []byte("cd"), []byte("ef")}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "abcdef" {
		t.Fatalf("read %q, %v", got, err)
	}
	if st := fc.Stats(); st.Syscalls != 1 {
		t.Fatalf("%d syscalls for one batch", st.Syscalls)
	}
	if g.Status().Open != 1 {
		t.Fatalf("netguard does not see the connection: %+v", g.Status())
	}
}
