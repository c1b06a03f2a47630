package app

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/supervisor"
)

// TestQuotaWaitIsVisible: a start that waits for Google's command quota
// says so in the state (with the time of the next slot), in the 503 of the
// start timeout and in health; a reader's retry during the wait joins the
// start instead of making a new demand, and the camera starts once the
// quota allows.
func TestQuotaWaitIsVisible(t *testing.T) {
	t.Parallel()
	cams, paths := benchCameras(3)
	window := 12 * time.Second
	e := startE2EWith(t, nestsim.Options{Cameras: cams}, func(c *config.Config) {
		c.OnDemandStartTimeout = 2 * time.Second
	}, func(a *App) { a.googleLimits = nest.Limits{PerCredential: 2, PerDeviceCommand: 5, Window: window} })
	e.authorize()
	e.sync(paths)
	// Two starts use the credential's two commands of the window.
	readPath(t, e.rtspURL("bench-1")).flowing(t, 0)
	readPath(t, e.rtspURL("bench-2")).flowing(t, 0)
	third := e.cams["Bench 3"]

	done := make(chan string, 1)
	go func() {
		st, reason := describeReason(t, e.rtspURL("bench-3"))
		done <- fmt.Sprintf("%d %s", st, reason)
	}()
	st := waitState(t, e.app, third, "waiting_for", func(s supervisor.State) bool { return s.WaitingFor != nil })
	if s := *st.WaitingFor; !strings.Contains(s, "quota") || !strings.Contains(s, "next slot about") || st.Status != "starting" {
		t.Fatalf("state while waiting: %q, status %s", s, st.Status)
	}
	answer := <-done
	if !strings.HasPrefix(answer, fmt.Sprint(int(base.StatusServiceUnavailable))) || !strings.Contains(answer, "waiting for Google's command quota") {
		t.Fatalf("DESCRIBE during the wait: %q", answer)
	}
	health := string(e.call("list", "health"))
	if !strings.Contains(health, `"commands_waiting":1`) {
		t.Fatalf("health does not show the waiting command: %s", health)
	}
	// The reader retries while the start still waits: no second demand.
	if st, _ := describeReason(t, e.rtspURL("bench-3")); st != base.StatusServiceUnavailable {
		t.Fatalf("retry during the wait: %d, want 503 at the start timeout", st)
	}
	if st, _ := cameraState(e.app, third); st.Status != "starting" {
		t.Fatalf("after the start timeout the state says %s, want starting (the start keeps its place)", st.Status)
	}
	demands := 0
	deadline := time.Now().Add(window + 10*time.Second)
	for {
		ev := e.nextEvent(time.Until(deadline))
		if ev.Entity == nil || *ev.Entity != third {
			continue
		}
		if ev.Event == "demand" {
			demands++
		}
		if ev.Event == "ready" {
			break
		}
	}
	if demands != 1 {
		t.Fatalf("%d demand events for one wait, want 1", demands)
	}
	if st, _ := cameraState(e.app, third); st.WaitingFor != nil {
		t.Fatalf("still waiting_for %q once ready", *st.WaitingFor)
	}
}

// TestClockSkewKeepsSessions: with the host clock 70 s ahead of Google's,
// or 90 s behind, 60 s sessions are generated once and extended on time
// (at 80 % of their lifetime), with no swap.
func TestClockSkewKeepsSessions(t *testing.T) {
	t.Parallel()
	for _, offset := range []time.Duration{-70 * time.Second, 90 * time.Second} {
		t.Run(fmt.Sprintf("google%+ds", int(offset.Seconds())), func(t *testing.T) {
			t.Parallel()
			e := startE2E(t, nestsim.Options{StreamTTL: time.Minute, ClockOffset: offset}, nil)
			e.authorize()
			e.sync(map[string]string{"Front Door": "front-door"})
			cam := e.cams["Front Door"]
			r := readPath(t, e.rtspURL("front-door"))
			n := r.flowing(t, 0)
			deadline := time.Now().Add(70 * time.Second)
			for {
				ev := e.nextEvent(time.Until(deadline))
				if ev.Entity == nil || *ev.Entity != cam {
					continue
				}
				if ev.Event == "notReady" || ev.Event == "failed-extension" {
					t.Fatalf("%s with Google's clock %v off: %v", ev.Event, offset, ev.Details)
				}
				if ev.Event == "extended" {
					break
				}
			}
			gen, _ := lastCall(e.sim, "GenerateRtspStream", nestsim.FrontDoorID)
			ext, _ := lastCall(e.sim, "ExtendRtspStream", nestsim.FrontDoorID)
			if g, x := e.sim.CountCalls("GenerateRtspStream"), e.sim.CountCalls("ExtendRtspStream"); g != 1 || x != 1 {
				t.Fatalf("%d Generates and %d Extends, want one of each", g, x)
			}
			after := ext.At.Sub(gen.At)
			if after < 44*time.Second || after > 52*time.Second {
				t.Fatalf("extended %s after the Generate, want about 48 s (80 %% of 60 s)", after)
			}
			t.Logf("Google's clock %+v off: one Generate, extended %s after it", offset, after.Round(10*time.Millisecond))
			r.flowing(t, n)
		})
	}
}
