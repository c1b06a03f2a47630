package app

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestShutdownIsHonest: a stop with ten streaming cameras, each with a
// reader, stops every live Google session, publishes each reader's unread
// and each camera's unDemand and notReady, leaves every retained state at
// stopped with no readers, and only then says offline; all within the
// shutdown budget. An external Mosquitto keeps what was published, as a
// Home Assistant would see it after the daemon is gone.
func TestShutdownIsHonest(t *testing.T) {
	t.Parallel()
	const n = 10
	m := testkit.StartMosquitto(t)
	cams, paths := benchCameras(n)
	e := startE2EWith(t, nestsim.Options{Cameras: cams}, func(c *config.Config) {
		c.MQTTURL = m.URL()
		c.OnDemandCloseAfter = time.Minute // nothing closes by itself during the test
	}, func(a *App) {
		// Ten Generates and ten Stops within a minute: room for both (with
		// Google's 10 a minute no Stop could follow ten starts), and the
		// last Stops need the reserve Stops normally leave free.
		a.googleLimits = nest.Limits{PerCredential: 20, PerDeviceCommand: 5, Window: time.Minute}
	})
	e.authorize()
	e.sync(paths)
	for i := range n {
		readPath(t, e.rtspURL(fmt.Sprintf("bench-%d", i+1))).flowing(t, 0)
	}
	ids := map[uint64]bool{}
	for name := range paths {
		ids[e.cams[name]] = true
	}
	testkit.Eventually(t, 10*time.Second, "every camera ready with its reader", func() bool {
		for id := range ids {
			if st, _ := cameraState(e.app, id); st.Status != "ready" || st.Readers != 1 {
				return false
			}
		}
		return true
	})

	watcher := testkit.Dial(t, m.Addr, "", "")
	seen := watcher.Subscribe("nestmtx/#")

	stopsBefore := e.sim.CountCalls("StopRtspStream")
	ctx, cancel := context.WithTimeout(context.Background(), e.app.cfg.ShutdownTimeout)
	defer cancel()
	start := time.Now()
	if err := e.app.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	took := time.Since(start)
	t.Logf("shutdown with %d streaming cameras took %s", n, took.Round(time.Millisecond))
	if took > e.app.cfg.ShutdownTimeout {
		t.Fatalf("shutdown took %s, over its %s budget", took, e.app.cfg.ShutdownTimeout)
	}
	if stops := e.sim.CountCalls("StopRtspStream") - stopsBefore; stops != n {
		t.Fatalf("%d of %d live sessions stopped", stops, n)
	}

	// What the stop published, in order.
	order := map[uint64][]string{}
	offline := false
	for !offline {
		p := testkit.Next(t, seen, 5*time.Second)
		if p.Retain {
			continue // a retained copy from before the stop
		}
		switch {
		case p.Topic == "nestmtx/status":
			offline = string(p.Payload) == "offline"
		case strings.HasPrefix(p.Topic, "nestmtx/events/camera/"):
			var ev event
			if err := json.Unmarshal(p.Payload, &ev); err != nil {
				t.Fatal(err)
			}
			order[*ev.Entity] = append(order[*ev.Entity], ev.Event)
		}
	}
	for id := range ids {
		if got := strings.Join(order[id], " "); got != "unread unDemand notReady" {
			t.Errorf("camera %d: events before offline %q, want \"unread unDemand notReady\"", id, got)
		}
	}

	// What stays retained for whoever looks next.
	late := testkit.Dial(t, m.Addr, "", "")
	retained := late.Subscribe("nestmtx/state/camera/+")
	for range ids {
		p := testkit.Next(t, retained, 5*time.Second)
		var st struct {
			Status  string `json:"status"`
			Ready   bool   `json:"ready"`
			Readers int    `json:"readers"`
		}
		if err := json.Unmarshal(p.Payload, &st); err != nil || st.Status != "stopped" || st.Ready || st.Readers != 0 {
			t.Errorf("%s after the stop: %s", p.Topic, p.Payload)
		}
	}
	if p := testkit.Next(t, late.Subscribe("nestmtx/status"), 5*time.Second); string(p.Payload) != "offline" {
		t.Fatalf("retained status %q", p.Payload)
	}
}
