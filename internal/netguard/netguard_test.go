package netguard

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// recLog records log lines so that tests can assert on them.
type recLog struct {
	mu   sync.Mutex
	recs []logRec
}

type logRec struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

type recHandler struct {
	log   *recLog
	attrs []slog.Attr
}

func (h recHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recHandler) WithGroup(string) slog.Handler            { return h }
func (h recHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recHandler{log: h.log, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}
func (h recHandler) Handle(_ context.Context, r slog.Record) error {
	lr := logRec{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		lr.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { lr.attrs[a.Key] = a.Value.String(); return true })
	h.log.mu.Lock()
	h.log.recs = append(h.log.recs, lr)
	h.log.mu.Unlock()
	return nil
}

func (l *recLog) logger() *slog.Logger { return slog.New(recHandler{log: l}) }

// find returns the records whose message contains substr.
func (l *recLog) find(substr string) []logRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRec
	for _, r := range l.recs {
		if strings.Contains(r.msg, substr) {
			out = append(out, r)
		}
	}
	return out
}

// serve runs handle for every accepted conn, like the servers do.
func serve(t *testing.T, o Options, handle func(net.Conn)) (*Listener, *recLog) {
	t.Helper()
	rec := &recLog{}
	o.Log = rec.logger()
	ln, err := Listen("tcp", "127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept: %v", err)
				}
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln, rec
}

func echo(c net.Conn) {
	defer c.Close()
	_, _ = io.Copy(c, c)
}

// lines is a line server: hooks run for their keyword, other lines are
// echoed, and "." lines are read without a reply.
func lines(hooks map[string]func(net.Conn)) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			RequestDone(c)
			line = strings.TrimSuffix(line, "\n")
			if h, ok := hooks[line]; ok {
				h(c)
				if _, err := io.WriteString(c, "ok\n"); err != nil {
					return
				}
				continue
			}
			if line == "." {
				continue
			}
			if _, err := io.WriteString(c, line+"\n"); err != nil {
				return
			}
		}
	}
}

func dial(t testing.TB, ln net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg as a line and expects it (or "ok" for a hook) back.
func roundTrip(t *testing.T, c net.Conn, msg, want string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, len(want)+1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading the answer to %q: %v", msg, err)
	}
	if string(buf) != want+"\n" {
		t.Fatalf("answer to %q = %q, want %q", msg, buf, want+"\n")
	}
}

// expectRefused dials and expects the server to close the conn at once.
// The refusal is a reset, which can beat connect(2)'s own completion.
func expectRefused(t *testing.T, ln net.Listener) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testkit.WaitPeerClose(t, c, 5*time.Second)
}

func TestMaxConnsRefusesAtTheCap(t *testing.T) {
	ln, rec := serve(t, Options{Name: "t", MaxConns: 3}, echo)
	var cs []net.Conn
	for i := range 3 {
		c := dial(t, ln)
		roundTrip(t, c, "hello", "hello")
		cs = append(cs, c)
		if got := ln.Status().Open; got != i+1 {
			t.Fatalf("Open = %d after %d served conns", got, i+1)
		}
	}

	expectRefused(t, ln)
	if s := ln.Status(); s.Refused != 1 || s.Open != 3 || !s.Accepting {
		t.Fatalf("after the 4th conn: %+v, want Refused 1, Open 3, Accepting", s)
	}
	warn := rec.find("t listener: connection limit 3 reached; refusing new connections")
	if len(warn) != 1 || warn[0].level != slog.LevelWarn || warn[0].attrs["refused"] != "1" {
		t.Fatalf("refusal warnings = %+v, want one Warn with refused=1", warn)
	}

	expectRefused(t, ln)
	if s := ln.Status(); s.Refused != 2 {
		t.Fatalf("Refused = %d after the 5th conn, want 2", s.Refused)
	}
	if n := len(rec.find("connection limit")); n != 1 {
		t.Fatalf("%d refusal warnings within a minute, want 1", n)
	}

	cs[0].Close()
	testkit.Eventually(t, 5*time.Second, "Open to drop to 2", func() bool { return ln.Status().Open == 2 })
	again := dial(t, ln)
	roundTrip(t, again, "served", "served")
	for _, c := range cs[1:] {
		roundTrip(t, c, "still", "still")
	}
	if s := ln.Status(); s.Open != 3 || s.Refused != 2 {
		t.Fatalf("at the end: %+v, want Open 3, Refused 2", s)
	}
}

// wrapper stands for internal/framebatch's Conn: the hooks must find the
// *Conn through its Unwrap.
type wrapper struct{ net.Conn }

func (w wrapper) Unwrap() net.Conn { return w.Conn }

func TestHandshakeTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ln, rec := serve(t, Options{Name: "t", HandshakeTimeout: timeout}, lines(map[string]func(net.Conn){
		"hello":         func(c net.Conn) { Established(c) },
		"hello-wrapped": func(c net.Conn) { Established(wrapper{c}) },
	}))

	start := time.Now() // at or before the server's accept
	silent := dial(t, ln)
	hello := dial(t, ln)
	roundTrip(t, hello, "hello", "ok")
	wrapped := dial(t, ln)
	roundTrip(t, wrapped, "hello-wrapped", "ok")
	// Talking is not a handshake: only Established is.
	chattyStart := time.Now()
	chatty := dial(t, ln)
	roundTrip(t, chatty, "hi", "hi")

	if d := testkit.WaitPeerClose(t, silent, 5*time.Second).Sub(start); d < timeout {
		t.Fatalf("a silent conn was closed after %v, before the %v handshake timeout", d, timeout)
	}
	if d := testkit.WaitPeerClose(t, chatty, 5*time.Second).Sub(chattyStart); d < timeout {
		t.Fatalf("a conn that never finished its handshake was closed after %v, before %v", d, timeout)
	}
	// By now the established conns are well past the timeout.
	if time.Since(start) < timeout {
		t.Fatal("the test did not wait past the timeout")
	}
	roundTrip(t, hello, "alive", "alive")
	roundTrip(t, wrapped, "alive", "alive")

	if s := ln.Status(); s.TimedOut != 2 || s.Open != 2 {
		t.Fatalf("status %+v, want TimedOut 2, Open 2", s)
	}
	logs := rec.find("timed out")
	if len(logs) != 2 {
		t.Fatalf("timeout log lines = %+v, want 2", logs)
	}
	for _, l := range logs {
		if l.level != slog.LevelDebug || l.attrs["timeout"] != "handshake" {
			t.Fatalf("timeout log line %+v, want Debug with timeout=handshake", l)
		}
		if r := l.attrs["remote"]; r != silent.LocalAddr().String() && r != chatty.LocalAddr().String() {
			t.Fatalf("timeout log line names %q, not a timed-out client", r)
		}
	}
}

func TestIdleTimeoutAndStreaming(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ln, rec := serve(t, Options{Name: "t", IdleTimeout: timeout}, lines(map[string]func(net.Conn){
		"stream":   func(c net.Conn) { Streaming(wrapper{c}, true) },
		"unstream": func(c net.Conn) { Streaming(c, false) },
	}))

	quiet := dial(t, ln)
	quietSince := time.Now() // at or before the server's last read
	roundTrip(t, quiet, "a", "a")

	// A client that keeps talking is not idle however long it stays.
	talker := dial(t, ln)
	stop := make(chan struct{})
	talked := make(chan error, 1)
	go func() {
		tick := time.NewTicker(timeout / 8)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				talked <- nil
				return
			case <-tick.C:
				if _, err := io.WriteString(talker, ".\n"); err != nil {
					talked <- err
					return
				}
			}
		}
	}()

	streamer := dial(t, ln)
	roundTrip(t, streamer, "stream", "ok")

	if d := testkit.WaitPeerClose(t, quiet, 5*time.Second).Sub(quietSince); d < timeout {
		t.Fatalf("an idle conn was closed after %v, before the %v idle timeout", d, timeout)
	}
	// One more idle conn closed from here puts the streamer and the talker
	// at least one whole timeout past their last byte.
	second := dial(t, ln)
	roundTrip(t, second, "b", "b")
	testkit.WaitPeerClose(t, second, 5*time.Second)

	close(stop)
	if err := <-talked; err != nil {
		t.Fatalf("the talking conn was closed: %v", err)
	}
	roundTrip(t, talker, "alive", "alive")
	roundTrip(t, streamer, "alive", "alive")
	// Closed by the client before it could idle out, so that the count
	// below is exact.
	talker.Close()
	testkit.Eventually(t, 5*time.Second, "the talker's close", func() bool { return ln.Status().Open == 1 })

	// Streaming off: idle again, timed from now, not from the last byte.
	unstreamed := time.Now()
	roundTrip(t, streamer, "unstream", "ok")
	if d := testkit.WaitPeerClose(t, streamer, 5*time.Second).Sub(unstreamed); d < timeout {
		t.Fatalf("a conn was closed %v after Streaming(false), before the %v idle timeout", d, timeout)
	}

	if s := ln.Status(); s.TimedOut != 3 || s.Open != 0 {
		t.Fatalf("status %+v, want TimedOut 3 (two idle, one after streaming), Open 0", s)
	}
	for _, l := range rec.find("timed out") {
		if l.attrs["timeout"] != "idle" {
			t.Fatalf("timeout log line %+v, want timeout=idle", l)
		}
	}
}

// trickle writes s again and again, one byte at a time, until a write
// fails or, after a whole s, stop is closed.
func trickle(c net.Conn, s string, every time.Duration, stop <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			if _, err := io.WriteString(c, s[i%len(s):i%len(s)+1]); err != nil {
				done <- err
				return
			}
			if i%len(s) == len(s)-1 {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
			}
			<-tick.C
		}
	}()
	return done
}

func TestRequestTimeout(t *testing.T) {
	const timeout = 250 * time.Millisecond
	ln, rec := serve(t, Options{Name: "t", RequestTimeout: timeout}, lines(map[string]func(net.Conn){
		"stream": func(c net.Conn) { Streaming(c, true) },
	}))
	stop := make(chan struct{})
	defer close(stop)

	// A slowloris: bytes keep coming, the request never ends. Each byte
	// would reset an idle timeout, so only the request timeout catches it.
	slowStart := time.Now()
	slow := dial(t, ln)
	trickle(slow, "GET / HTTP/1.1", timeout/8, stop)

	// Whole requests, each sent in pieces within the timeout: kept.
	steady := dial(t, ln)
	steadyStop := make(chan struct{})
	steadyDone := trickle(steady, ".\n", timeout/8, steadyStop)

	// Quiet after a whole request: no request under way, nothing to time.
	quiet := dial(t, ln)
	roundTrip(t, quiet, "q", "q")

	// Streaming: trickled bytes are not a request to time.
	streamer := dial(t, ln)
	roundTrip(t, streamer, "stream", "ok")
	streamerStop := make(chan struct{})
	streamerDone := trickle(streamer, "x", timeout/8, streamerStop)

	if d := testkit.WaitPeerClose(t, slow, 5*time.Second).Sub(slowStart); d < timeout {
		t.Fatalf("a trickled request was cut after %v, before the %v request timeout", d, timeout)
	}
	slow2 := dial(t, ln)
	trickle(slow2, "SUBSCRIBE", timeout/8, stop)
	testkit.WaitPeerClose(t, slow2, 5*time.Second)

	close(steadyStop)
	close(streamerStop)
	if err := <-steadyDone; err != nil {
		t.Fatalf("the conn sending whole requests was closed: %v", err)
	}
	if err := <-streamerDone; err != nil {
		t.Fatalf("the streaming conn was closed: %v", err)
	}
	roundTrip(t, steady, "alive", "alive")
	roundTrip(t, quiet, "alive", "alive")
	// The streamer's x's so far end with this line.
	streamer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(streamer, "\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(streamer).ReadString('\n'); err != nil || strings.Trim(line, "x\n") != "" {
		t.Fatalf("the streaming conn answered %q, %v", line, err)
	}

	if s := ln.Status(); s.TimedOut != 2 || s.Open != 3 {
		t.Fatalf("status %+v, want TimedOut 2, Open 3", s)
	}
	logs := rec.find("timed out")
	if len(logs) != 2 || logs[0].attrs["timeout"] != "request" || logs[1].attrs["timeout"] != "request" {
		t.Fatalf("timeout log lines %+v, want two with timeout=request", logs)
	}
}

func TestOpenCountsEachCloseOnce(t *testing.T) {
	ln, _ := serve(t, Options{Name: "t"}, lines(map[string]func(net.Conn){
		// The server closing, twice, as a library and its cleanup might.
		"bye": func(c net.Conn) { c.Close(); c.Close() },
	}))
	var cs []net.Conn
	for range 5 {
		c := dial(t, ln)
		roundTrip(t, c, "hi", "hi")
		cs = append(cs, c)
	}
	if n := ln.Status().Open; n != 5 {
		t.Fatalf("Open = %d with 5 served conns", n)
	}
	cs[0].Close()
	cs[1].Close()
	testkit.Eventually(t, 5*time.Second, "Open 3 after two client closes", func() bool { return ln.Status().Open == 3 })

	io.WriteString(cs[2], "bye\n")
	testkit.WaitPeerClose(t, cs[2], 5*time.Second)
	testkit.Eventually(t, 5*time.Second, "Open 2 after a server close", func() bool { return ln.Status().Open == 2 })

	// Closing the listener leaves its conns to their owners.
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, cs[3], "after", "after")
	roundTrip(t, cs[4], "after", "after")
	if n := ln.Status().Open; n != 2 {
		t.Fatalf("Open = %d after the listener closed, want 2", n)
	}
	cs[3].Close()
	cs[4].Close()
	testkit.Eventually(t, 5*time.Second, "Open 0", func() bool { return ln.Status().Open == 0 })

	// The sweeper and the server both close a timed-out conn.
	ln2, _ := serve(t, Options{Name: "t2", HandshakeTimeout: 100 * time.Millisecond}, echo)
	var late []net.Conn
	for range 3 {
		late = append(late, dial(t, ln2))
	}
	for _, c := range late {
		testkit.WaitPeerClose(t, c, 5*time.Second)
	}
	testkit.Eventually(t, 5*time.Second, "Open 0 after timeouts", func() bool { return ln2.Status().Open == 0 })
	if s := ln2.Status(); s.TimedOut != 3 {
		t.Fatalf("TimedOut = %d, want 3", s.TimedOut)
	}
}

// fakeListener fails Accept with errs, in order, then accepts from a real
// listener.
type fakeListener struct {
	net.Listener
	mu     sync.Mutex
	errs   []error
	onFail func()
}

func (f *fakeListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		onFail := f.onFail
		f.mu.Unlock()
		if onFail != nil {
			onFail()
		}
		return nil, err
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

func (f *fakeListener) fail(errs ...error) {
	f.mu.Lock()
	f.errs = append(f.errs, errs...)
	f.mu.Unlock()
}

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func TestAcceptBacksOffAndLogsOncePerEpisode(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeListener{Listener: inner}
	rec := &recLog{}
	ln := Wrap(fake, Options{Name: "t", Log: rec.logger()})
	defer ln.Close()
	var during []Status
	fake.onFail = func() { during = append(during, ln.Status()) }

	fake.fail(acceptErr(syscall.EMFILE), acceptErr(syscall.ENFILE), acceptErr(syscall.ECONNABORTED),
		acceptErr(syscall.ENOBUFS), acceptErr(syscall.EMFILE))
	client := dial(t, ln)
	start := time.Now()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept returned %v; temporary errors must be retried", err)
	}
	defer c.Close()
	// 5+10+20+40+80 ms of backoff, as net/http's Serve.
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("five failures retried in %v: no backoff", d)
	}
	if during[0].Accepting != true || during[1].Accepting || !strings.Contains(during[1].LastError, "too many open files") {
		t.Fatalf("status during the failures: %+v", during)
	}
	if s := ln.Status(); !s.Accepting || !strings.Contains(s.LastError, "too many open files") {
		t.Fatalf("status after: %+v", s)
	}
	if s := ln.Status(); !s.Since.After(during[1].Since) {
		t.Fatalf("Since did not move on recovery: %v then %v", during[1].Since, s.Since)
	}
	warns, infos := rec.find("accept failed; retrying"), rec.find("accepting again")
	if len(warns) != 1 || warns[0].level != slog.LevelWarn || !strings.Contains(warns[0].attrs["error"], "too many open files") {
		t.Fatalf("warnings %+v, want one Warn with the error", warns)
	}
	if len(infos) != 1 || infos[0].level != slog.LevelInfo {
		t.Fatalf("recoveries logged %+v, want one Info", infos)
	}
	_ = client

	// A brief episode within the minute is a flap, as at the descriptor
	// limit: not logged, but counted.
	fake.fail(acceptErr(syscall.EMFILE))
	dial(t, ln)
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if w, i := len(rec.find("accept failed")), len(rec.find("accepting again")); w != 1 || i != 1 {
		t.Fatalf("after a flap: %d warnings, %d recoveries, want 1 and 1", w, i)
	}

	// One that lasts is logged even within the minute: 9 failures take
	// 5+10+...+640 ms, past a second.
	for range 9 {
		fake.fail(acceptErr(syscall.ENFILE))
	}
	dial(t, ln)
	c3, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c3.Close()
	warns, infos = rec.find("accept failed; retrying"), rec.find("accepting again")
	if len(warns) != 2 || len(infos) != 2 {
		t.Fatalf("after a long episode: %d warnings, %d recoveries, want 2 and 2", len(warns), len(infos))
	}
	if w := warns[1]; !strings.Contains(w.attrs["error"], "too many open files in system") || w.attrs["brief_failures_not_logged"] != "1" {
		t.Fatalf("second warning %+v, want the ENFILE error and one brief failure not logged", w)
	}
}

func TestAcceptReturnsPermanentErrorsAndClose(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeListener{Listener: inner}
	ln := Wrap(fake, Options{Name: "t"})
	defer ln.Close()

	boom := errors.New("boom")
	fake.fail(boom)
	if _, err := ln.Accept(); !errors.Is(err, boom) {
		t.Fatalf("Accept = %v, want the permanent error", err)
	}

	// Close ends an Accept that is backing off, without waiting it out.
	emfiles := make([]error, 1000)
	for i := range emfiles {
		emfiles[i] = acceptErr(syscall.EMFILE)
	}
	fake.fail(emfiles...)
	res := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		res <- err
	}()
	testkit.Eventually(t, 5*time.Second, "Accepting false", func() bool { return !ln.Status().Accepting })
	ln.Close()
	select {
	case err := <-res:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{acceptErr(syscall.EMFILE), true},
		{acceptErr(syscall.ENFILE), true},
		{acceptErr(syscall.ENOBUFS), true},
		{acceptErr(syscall.ENOMEM), true},
		{acceptErr(syscall.ECONNABORTED), true},
		{acceptErr(syscall.EAGAIN), true},
		{acceptErr(syscall.EINVAL), false},
		{acceptErr(syscall.EBADF), false},
		{net.ErrClosed, false},
		{errors.New("boom"), false},
	} {
		if got := temporary(tc.err); got != tc.want {
			t.Errorf("temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestFindUnwraps(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	l := newTestListener(t, Options{Name: "t"})
	g := l.admit(a)
	if find(g) != g || find(wrapper{g}) != g || find(wrapper{wrapper{g}}) != g {
		t.Fatal("find does not reach the *Conn through Unwrap")
	}
	if tc := tls.Server(wrapper{g}, &tls.Config{}); find(tc) != g {
		t.Fatal("find does not reach the *Conn under crypto/tls")
	}
	// Nothing to find: the hooks must neither panic nor loop.
	var self selfWrapper
	self.self = &self
	if find(b) != nil || find(wrapper{b}) != nil || find(&self) != nil {
		t.Fatal("find invented a *Conn")
	}
	Established(b)
	RequestDone(wrapper{b})
	Streaming(&self, true)
}

func newTestListener(t testing.TB, o Options) *Listener {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(inner, o)
	t.Cleanup(func() { l.Close() })
	return l
}

type selfWrapper struct {
	net.Conn
	self *selfWrapper
}

func (s *selfWrapper) Unwrap() net.Conn { return s.self }

// nullConn reads instantly, to time the wrapper alone.
type nullConn struct{ net.Conn }

func (nullConn) Read(b []byte) (int, error) { return len(b), nil }

func BenchmarkRead(b *testing.B) {
	b.Run("bare-null", func(b *testing.B) { benchRead(b, nullConn{}) })
	b.Run("netguard-null", func(b *testing.B) {
		l := newTestListener(b, Options{Name: "b", IdleTimeout: time.Minute, RequestTimeout: time.Minute})
		benchRead(b, l.admit(nullConn{}))
	})
	b.Run("bare-tcp", func(b *testing.B) { benchTCP(b, false) })
	b.Run("netguard-tcp", func(b *testing.B) { benchTCP(b, true) })
}

func benchRead(b *testing.B, c net.Conn) {
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func benchTCP(b *testing.B, guarded bool) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var ln net.Listener = inner
	if guarded {
		ln = Wrap(inner, Options{Name: "b", IdleTimeout: time.Minute, RequestTimeout: time.Minute})
	}
	defer ln.Close()
	client := dial(b, ln)
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := client.Write(buf); err != nil {
				return
			}
		}
	}()
	benchRead(b, server)
}
