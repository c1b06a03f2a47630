// Package testkit holds helpers for tests that use real parts: a Mosquitto
// broker per test, real MQTT v5 clients, the tools' presence rules.
package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireTool returns the path of an external tool. In CI (CI set) a missing
// tool fails the test loudly, because the test command installs it; on a
// developer machine the test is skipped with a message saying what to install.
func RequireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI but not installed (apt-get install %s)", name, debianPackage)
	}
	t.Skipf("%s not installed; skipping because CI is unset (apt-get install %s)", name, debianPackage)
	return ""
}

// FreeAddr returns a loopback address with a port that was free a moment ago,
// for servers in other processes that cannot report the port they bound.
// The kernel may offer a just-closed port again, so ports already handed out
// by this process are never returned twice.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		handedOutMu.Lock()
		seen := handedOut[addr]
		handedOut[addr] = true
		handedOutMu.Unlock()
		if !seen {
			return addr
		}
	}
	t.Fatal("no fresh free port after 100 tries")
	return ""
}

var (
	handedOutMu sync.Mutex
	handedOut   = map[string]bool{}
)

// WaitDial waits until a TCP connect to addr succeeds.
func WaitDial(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Eventually polls cond until it holds or the timeout passes. It is for
// states that have no event to wait on (a port closing, a file appearing).
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreeUDPPair returns "127.0.0.1:port" with an even port whose next port
// is free too, for an RTP/RTCP pair.
func FreeUDPPair(t testing.TB) string {
	t.Helper()
	for range 100 {
		a, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := a.LocalAddr().(*net.UDPAddr).Port
		a.Close()
		if port%2 != 0 {
			port++
		}
		b1, err1 := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		b2, err2 := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port+1))
		if b1 != nil {
			b1.Close()
		}
		if b2 != nil {
			b2.Close()
		}
		if err1 == nil && err2 == nil {
			return fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
	t.Fatal("no free even UDP port pair")
	return ""
}

// WaitPeerClose waits until the other end closes c (a read ends in EOF or a
// reset) and returns when it saw it; a timeout or another error fails t.
func WaitPeerClose(t testing.TB, c net.Conn, within time.Duration) time.Time {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return time.Now()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the connection was not closed within %s", within)
		}
		t.Fatalf("waiting for %s to be closed: %v", c.LocalAddr(), err)
	}
}

// SyncBuffer is a bytes.Buffer that a process's output (or a logger) may
// write while the test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
