package netguard

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

const (
	emfileChildEnv = "NETGUARD_EMFILE_CHILD"
	childPrefix    = "netguard-child "
	childFDLimit   = 64
)

// TestAcceptSurvivesEMFILEWhereABareLoopWouldStop runs an echo server in a
// child process held to 64 file descriptors and exhausts them. The child's
// accept loop is mochi-mqtt's and gortsplib's: it returns on the first
// Accept error, and the child then reports it and exits. Over a bare
// net.Listener that happens at the first EMFILE and the server never
// accepts again, though the process lives on; over a netguard Listener
// Accept backs off instead, Status says it is not accepting, and once the
// descriptors are released new clients are served again.
func TestAcceptSurvivesEMFILEWhereABareLoopWouldStop(t *testing.T) {
	if os.Getenv(emfileChildEnv) == "1" {
		emfileChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptSurvivesEMFILEWhereABareLoopWouldStop$")
	cmd.Env = append(os.Environ(), emfileChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testkit.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	childLines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), childPrefix); ok {
				childLines <- line
			}
		}
		close(childLines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close() // the child exits on EOF
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("child's log:\n%s", stderr.String())
		}
	})
	next := func() string {
		t.Helper()
		select {
		case line, ok := <-childLines:
			if !ok {
				t.Fatalf("the child exited: %v\n%s", <-exited, stderr.String())
			}
			if strings.HasPrefix(line, "accept-returned ") {
				t.Fatalf("the child's accept loop ended: %s", line)
			}
			return line
		case <-time.After(10 * time.Second):
			t.Fatal("no answer from the child")
		}
		return ""
	}
	// Status comes over stdin and stdout, which need no new descriptor.
	status := func() Status {
		t.Helper()
		if _, err := io.WriteString(stdin, "status\n"); err != nil {
			t.Fatal(err)
		}
		var s Status
		line, ok := strings.CutPrefix(next(), "status ")
		if !ok {
			t.Fatalf("want a status line, got %q", line)
		}
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	addr, ok := strings.CutPrefix(next(), "addr ")
	if !ok {
		t.Fatal("the child did not report its address")
	}
	echoOnce := func(c net.Conn, msg string, within time.Duration) error {
		c.SetDeadline(time.Now().Add(within))
		defer c.SetDeadline(time.Time{})
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echoed %q, want %q", buf, msg)
		}
		return nil
	}

	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if err := echoOnce(first, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// More conns than the child has descriptors: the kernel completes the
	// TCP handshakes into the backlog whether or not the child accepts.
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range childFDLimit + 16 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	var s Status
	testkit.Eventually(t, 5*time.Second, "the child to report EMFILE", func() bool {
		s = status()
		return !s.Accepting && strings.Contains(s.LastError, "too many open files")
	})
	if s.Open <= 0 || s.Open >= childFDLimit {
		t.Fatalf("Open = %d while exhausted at %d descriptors", s.Open, childFDLimit)
	}
	// The child logs to stderr, which reaches us apart from its status
	// replies on stdout: the warning may trail the status that says why.
	testkit.Eventually(t, 5*time.Second, "the accept warning in the child's log", func() bool {
		return strings.Contains(stderr.String(), "echo listener: accept failed; retrying")
	})
	// Exhausted: the newest conn waits in the backlog, unserved.
	if err := echoOnce(flood[len(flood)-1], "queued", 200*time.Millisecond); err == nil {
		t.Fatal("a conn past the descriptor limit was served")
	}
	// Already accepted conns are still served.
	if err := echoOnce(first, "during", 5*time.Second); err != nil {
		t.Fatalf("an accepted conn stopped working: %v", err)
	}

	for _, c := range flood {
		c.Close()
	}
	flood = nil
	testkit.Eventually(t, 5*time.Second, "the child to accept again", func() bool {
		s = status()
		return s.Accepting
	})
	after, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if err := echoOnce(after, "after", 5*time.Second); err != nil {
		t.Fatalf("no echo after the descriptors were released: %v", err)
	}
	if !strings.Contains(stderr.String(), "echo listener: accepting again") {
		t.Fatalf("no recovery line in the child's log:\n%s", stderr.String())
	}
	if s := status(); !s.Accepting || s.Open < 2 {
		t.Fatalf("final status %+v", s)
	}
}

// emfileChild serves an echo listener at childFDLimit descriptors until its
// stdin closes.
func emfileChild() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		panic(err)
	}
	lim.Cur = childFDLimit
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		panic(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ln, err := Listen("tcp", "127.0.0.1:0", Options{Name: "echo", Log: log})
	if err != nil {
		panic(err)
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(childPrefix+format+"\n", args...)
	}
	go func() {
		// mochi-mqtt's listeners.Net.Serve, in essence.
		for {
			c, err := ln.Accept()
			if err != nil {
				say("accept-returned %v", err)
				os.Exit(3)
			}
			go echo(c)
		}
	}()
	say("addr %s", ln.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "status" {
			b, _ := json.Marshal(ln.Status())
			say("status %s", b)
		}
	}
	os.Exit(0)
}

// The RTSP server's framebatch writes with writev(2) on the socket under a
// Conn; the bytes must reach the client.
func TestSyscallConnReachesTheSocket(t *testing.T) {
	ln := newTestListener(t, Options{Name: "t", IdleTimeout: time.Minute})
	client := dial(t, ln)
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatal("the accepted conn is not a syscall.Conn")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	a, b := []byte("raw "), []byte("writev\n")
	var werr error
	err = raw.Write(func(fd uintptr) bool {
		iov := []syscall.Iovec{{Base: &a[0]}, {Base: &b[0]}}
		iov[0].SetLen(len(a))
		iov[1].SetLen(len(b))
		_, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if e != 0 {
			werr = e
		}
		return true
	})
	if err != nil || werr != nil {
		t.Fatal(err, werr)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(client).ReadString('\n')
	if err != nil || line != "raw writev\n" {
		t.Fatalf("client read %q, %v", line, err)
	}
}
