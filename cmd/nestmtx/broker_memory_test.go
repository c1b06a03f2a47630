package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestPersistentSessionsCannotExhaustMemory: 50 sessions asking for the
// longest expiry, subscribed to everything at QoS 1 and then gone, followed
// by 3,000 requests, took the daemon from 44 MB to 460 MB before the broker
// had bounds (issue 8). The queued messages are now capped per session and
// the expiry is cut to an hour.
func TestPersistentSessionsCannotExhaustMemory(t *testing.T) {
	// Info: at debug mochi logs each message it cannot deliver, 150,000 here.
	d := startDaemon(t, t.TempDir(), "NESTMTX_ADMIN_PASSWORD=memory-pass", "NESTMTX_LOG_LEVEL=info")
	d.waitReady()
	for i := 0; i < 50; i++ {
		conn, err := net.DialTimeout("tcp", d.mqtt, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cli := paho.NewClient(paho.ClientConfig{Conn: conn})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ack, err := cli.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("hoarder-%d", i), KeepAlive: 30,
			Username: "admin", UsernameFlag: true, Password: []byte("memory-pass"), PasswordFlag: true,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: ptr(uint32(0xFFFFFFFF))}})
		if err != nil {
			cancel()
			t.Fatalf("session %d: %v", i, err)
		}
		if ack.Properties == nil || ack.Properties.SessionExpiryInterval == nil || *ack.Properties.SessionExpiryInterval != 3600 {
			t.Fatalf("the broker granted an expiry of %v, want 3600 s", ack.Properties)
		}
		if _, err := cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		cancel()
		conn.Close() // gone without DISCONNECT: the session stays
	}
	before := rssKiB(t, d.cmd.Process.Pid)
	// QoS 1 requests get QoS 1 replies, which the broker keeps for every
	// offline session subscribed to them (same login: its own replies).
	c := testkit.Dial(t, d.mqtt, "admin", "memory-pass")
	replies := c.Subscribe("attacker/replies")
	body := []byte(`{"command":"list","module":"version","pad":"` + strings.Repeat("x", 512) + `"}`)
	for i := 0; i < 3000; i++ {
		if err := c.Publish(&paho.Publish{Topic: "nestmtx/requests", QoS: 1, Payload: body,
			Properties: &paho.PublishProperties{ResponseTopic: "attacker/replies"}}); err != nil {
			t.Fatal(err)
		}
		testkit.Next(t, replies, 10*time.Second)
	}
	after := rssKiB(t, d.cmd.Process.Pid)
	t.Logf("daemon RSS: %d KiB before the requests, %d KiB after", before, after)
	// The race detector's shadow memory multiplies a -race build's RSS;
	// there the Go runtime's own total (what it took from the OS, as the
	// health API reports it) stands in for it.
	if raceEnabled {
		after = goSysKiB(t, d)
		t.Logf("daemon Go runtime memory (race build): %d KiB", after)
	}
	if after > 80*1024 {
		t.Fatalf("%d KiB after the attack; the bound is 80 MiB", after)
	}
	testkit.WaitDial(t, d.mqtt, time.Second)
}

func goSysKiB(t *testing.T, d *daemon) int {
	t.Helper()
	rr := d.waitReady()
	var health struct {
		Details struct {
			Runtime struct {
				Meta struct {
					SysBytes int `json:"sys_bytes"`
				} `json:"meta"`
			} `json:"runtime"`
		} `json:"details"`
	}
	rr.Call(t, map[string]any{"command": "list", "module": "health"}).MustOK(t, &health)
	if health.Details.Runtime.Meta.SysBytes == 0 {
		t.Fatal("health has no runtime sys_bytes")
	}
	return health.Details.Runtime.Meta.SysBytes / 1024
}

func ptr[T any](v T) *T { return &v }

func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
