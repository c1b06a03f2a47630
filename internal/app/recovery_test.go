package app

import (
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
)

// TestE2EStallRegenerates: Google's stream stays connected but sends
// nothing; after the stall timeout the camera says notReady with a reason,
// regenerates, and the reader, still connected, gets frames again.
func TestE2EStallRegenerates(t *testing.T) {
	t.Parallel()
	e := startE2E(t, nestsim.Options{}, func(c *config.Config) { c.StallTimeout = time.Second })
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	cam := e.cams["Front Door"]
	r := readPath(t, e.rtspURL("front-door"))
	n := r.flowing(t, 0)
	start := time.Now()
	e.sim.Faults().FreezeStreams(true)
	ev := e.waitEvent("camera", cam, "notReady")
	if reason, _ := ev.Details["reason"].(string); !strings.Contains(reason, "no media") {
		t.Fatalf("notReady reason %q", reason)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("stall noticed after %s with a 1 s stall timeout", took)
	}
	e.sim.Faults().FreezeStreams(false)
	e.waitEvent("camera", cam, "ready")
	r.flowing(t, n)
	if g := e.sim.CountCalls("GenerateRtspStream"); g < 2 {
		t.Fatalf("%d Generate calls: the stall did not regenerate", g)
	}
}
