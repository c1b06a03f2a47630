package app

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/supervisor"
)

// TestCameraStats: a camera's retained state carries its figures: bytes
// and packets from Google and to the reader, the bitrate, readers, ready
// time, extensions and swaps with the last one's reason; a restart (Home
// Assistant's button) is a swap the reader does not notice.
func TestCameraStats(t *testing.T) {
	t.Parallel()
	e := startE2EWith(t, nestsim.Options{StreamTTL: 3 * time.Second}, nil, func(a *App) {
		a.statsPeriod = 300 * time.Millisecond
		a.googleLimits = benchLimits
	})
	e.authorize()
	e.sync(map[string]string{"Front Door": "front-door"})
	id := e.cams["Front Door"]
	r := readPath(t, e.rtspURL("front-door"))
	n := r.flowing(t, 0)
	st := waitState(t, e.app, id, "figures moving and an extension", func(s supervisor.State) bool {
		return s.Stats.BytesReceived > 0 && s.Stats.BytesSent > 0 && s.BitrateKbps > 0 && s.Stats.Extensions >= 1
	})
	if st.Stats.PacketsReceived == 0 || st.Stats.PacketsSent == 0 || st.Stats.ReadersTotal != 1 ||
		st.Stats.ReadySince == nil || st.Stats.ReadySeconds <= 0 || st.Stats.Swaps != 0 {
		t.Fatalf("stats %+v", st.Stats)
	}
	// The sim's clip is about 500 kbit/s of video and 48 of audio.
	if st.BitrateKbps < 100 || st.BitrateKbps > 2000 {
		t.Fatalf("bitrate %.0f kbit/s", st.BitrateKbps)
	}
	t.Logf("stats after the first extension: %+v, bitrate %.0f kbit/s", st.Stats, st.BitrateKbps)
	// cameras read shows the same live state.
	var view struct {
		State *struct {
			Status string `json:"status"`
			Stats  struct {
				BytesReceived uint64 `json:"bytes_received"`
				Extensions    uint64 `json:"extensions"`
			} `json:"stats"`
		} `json:"state"`
	}
	if err := json.Unmarshal(e.call("read", "cameras", "entity", fmt.Sprint(id)), &view); err != nil {
		t.Fatal(err)
	}
	if view.State == nil || view.State.Status != "ready" || view.State.Stats.BytesReceived == 0 || view.State.Stats.Extensions < 1 {
		t.Fatalf("cameras read's state: %+v", view.State)
	}

	readySince := *st.Stats.ReadySince
	if !e.app.cameras.Restart(id) {
		t.Fatal("no camera to restart")
	}
	st = waitState(t, e.app, id, "the restart's swap", func(s supervisor.State) bool { return s.Stats.Swaps == 1 })
	if !strings.Contains(st.Stats.LastSwapReason, "restart") {
		t.Fatalf("last swap reason %q", st.Stats.LastSwapReason)
	}
	r.flowing(t, n)
	if ssrcs := r.ssrcSet(); len(ssrcs) != 1 {
		t.Fatalf("%d SSRCs across the restart", len(ssrcs))
	}
	// The restart was a hand-over: the camera never stopped being ready,
	// so its ready period is the one that began before.
	if st.Stats.ReadySince == nil || !st.Stats.ReadySince.Equal(readySince) || !st.Ready {
		t.Fatalf("after the restart: ready %v since %v, before since %v", st.Ready, st.Stats.ReadySince, readySince)
	}
}
