package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestListenersSurviveFileDescriptorExhaustion: with its open-files limit
// reached (here lowered with prlimit on the daemon alone), the RTSP and
// MQTT listeners used to stop accepting for good, while health said
// healthy. Now health names the listeners that cannot accept, and once the
// connections are released both serve again.
func TestListenersSurviveFileDescriptorExhaustion(t *testing.T) {
	prlimit := testkit.RequireTool(t, "prlimit", "util-linux")
	rtsp := testkit.FreeAddr(t)
	d := startDaemon(t, t.TempDir(), "NESTMTX_ADMIN_PASSWORD=fd-pass", "NESTMTX_RTSP_ADDRESS="+rtsp,
		"NESTMTX_LOG_LEVEL=info")
	rr := d.waitReady()
	pid := d.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Room for the requests below, not for the 100 connections.
	limit := len(fds) + 40
	if out, err := exec.Command(prlimit, "--pid", fmt.Sprint(pid), fmt.Sprintf("--nofile=%d:%d", limit, limit)).CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v\n%s", err, out)
	}

	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 100; i++ {
		c, err := net.DialTimeout("tcp", rtsp, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// An MQTT client arriving now waits in the kernel's backlog.
	if c, err := net.DialTimeout("tcp", d.mqtt, 5*time.Second); err == nil {
		held = append(held, c)
	}

	health := func() map[string]struct {
		Healthy *bool          `json:"healthy"`
		Meta    map[string]any `json:"meta"`
	} {
		var rep struct {
			Details map[string]struct {
				Healthy *bool          `json:"healthy"`
				Meta    map[string]any `json:"meta"`
			} `json:"details"`
		}
		rr.Call(t, map[string]any{"command": "list", "module": "health"}).MustOK(t, &rep)
		return rep.Details
	}
	degraded := func(name string) bool {
		c, ok := health()[name]
		return ok && c.Healthy == nil && strings.Contains(fmt.Sprint(c.Meta["last_error"]), "too many open files")
	}
	testkit.Eventually(t, 10*time.Second, "health to name the RTSP listener", func() bool { return degraded("listener_rtsp") })
	testkit.Eventually(t, 10*time.Second, "health to name the MQTT listener", func() bool { return degraded("listener_mqtt") })

	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(15 * time.Second)
	for {
		h := health()
		if h["listener_rtsp"].Healthy != nil && *h["listener_rtsp"].Healthy &&
			h["listener_mqtt"].Healthy != nil && *h["listener_mqtt"].Healthy {
			break
		}
		if time.Now().After(deadline) {
			fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
			t.Fatalf("the listeners did not accept again within 15s (%d fds open, limit %d): %+v", len(fds), limit, h)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And they serve: an RTSP OPTIONS round trip, a new MQTT login.
	c, err := net.DialTimeout("tcp", rtsp, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("OPTIONS rtsp://" + rtsp + "/ RTSP/1.0\r\nCSeq: 1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "RTSP/1.0 200") {
		t.Fatalf("RTSP after the exhaustion: %q, %v", buf[:n], err)
	}
	testkit.Dial(t, d.mqtt, "admin", "fd-pass")
}
