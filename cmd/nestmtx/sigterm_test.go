package main

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// playPath starts an RTSP reader on url and returns once a packet arrived.
func playPath(t *testing.T, url string) {
	t.Helper()
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP // the daemon serves TCP only here
	c := &gortsplib.Client{Transport: &tcp}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatalf("DESCRIBE %s: %v", u.Path, err)
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{}, 1)
	c.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatalf("no packet from %s", u.Path)
	}
}

// TestSIGTERMWithReaders: SIGTERM while both demo cameras stream to a
// reader. Before it exits, within the shutdown budget, the daemon publishes
// every reader's unread, every camera's unDemand and notReady, a retained
// state of stopped with no readers, and then offline.
func TestSIGTERMWithReaders(t *testing.T) {
	d := startServe(t, t.TempDir(), []string{"--demo"}, "NESTMTX_ADMIN_PASSWORD=sigterm-pass")
	d.waitReady()
	watcher := testkit.Dial(t, d.mqtt, "admin", d.pass)
	all := watcher.Subscribe("nestmtx/#")
	for _, path := range []string{"front-door", "backyard"} {
		playPath(t, d.rtspURL(path))
	}

	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	events := map[string][]string{} // camera id -> event names, in order
	stopped := map[string]bool{}    // camera id -> its last state said stopped
	for offline := false; !offline; {
		p := testkit.Next(t, all, 10*time.Second)
		if p.Retain {
			continue // a retained copy from before the stop
		}
		switch {
		case p.Topic == "nestmtx/status":
			offline = string(p.Payload) == "offline"
		case strings.HasPrefix(p.Topic, "nestmtx/events/camera/"):
			parts := strings.Split(p.Topic, "/") // nestmtx events camera <id> <event>
			if ev := parts[4]; ev != "extended" {
				events[parts[3]] = append(events[parts[3]], ev)
			}
		case strings.HasPrefix(p.Topic, "nestmtx/state/camera/"):
			var st struct {
				Status  string `json:"status"`
				Readers int    `json:"readers"`
			}
			if err := json.Unmarshal(p.Payload, &st); err != nil {
				t.Fatalf("state %s: %v", p.Payload, err)
			}
			stopped[strings.TrimPrefix(p.Topic, "nestmtx/state/camera/")] = st.Status == "stopped" && st.Readers == 0
		}
	}
	code, ok := d.wait(10 * time.Second)
	took := time.Since(start)
	if !ok || code != 0 {
		t.Fatalf("exit code %d (exited: %v) after SIGTERM", code, ok)
	}
	t.Logf("stopped in %s", took.Round(time.Millisecond))
	if took > 9*time.Second {
		t.Fatalf("the stop took %s: over NESTMTX_SHUTDOWN_TIMEOUT (8 s) + 1 s", took)
	}
	if len(events) != 2 {
		t.Fatalf("events of %d cameras before offline, want 2: %v", len(events), events)
	}
	// The watcher saw each camera's whole life: the stop's part is the
	// last three.
	for id, evs := range events {
		if got := strings.Join(evs, " "); got != "demand ready read unread unDemand notReady" {
			t.Errorf("camera %s: %q before offline, want \"demand ready read unread unDemand notReady\"", id, got)
		}
		if !stopped[id] {
			t.Errorf("camera %s: the last state before offline did not say stopped with no readers", id)
		}
	}
}
