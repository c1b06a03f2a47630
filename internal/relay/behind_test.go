package relay_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestReaderFarBehindLiveIsDropped: a reader that stops reading a stream
// of modest bitrate is dropped once its oldest queued unit is maxBehind
// old, long before its backlog reaches the byte limit: what a reader can
// pin is bounded by time as well as by bytes. The other reader misses
// nothing.
func TestReaderFarBehindLiveIsDropped(t *testing.T) {
	defer relay.SetMaxBehind(300 * time.Millisecond)()
	_, sps, pps := clipAUs(t)
	var logs testkit.SyncBuffer
	r, url, _ := startRelayWith(t, relay.Params{SPS: sps, PPS: pps},
		&rtspserver.FixedPath{Log: slog.New(slog.NewTextHandler(&logs, nil))}, nil)
	good := play(t, url)
	playStuck(t, url)

	// 20 kB pictures at 200 a second (4 MB/s): the stuck reader's socket
	// buffers fill within a second or so, then its queue grows by about
	// 1.2 MB per 300 ms, far under the 4 MiB limit.
	au := append([]byte{0x65}, bytes.Repeat([]byte{0x55}, 20_000)...)
	seg := r.BeginSegment()
	frames := 0
	start := time.Now()
	for r.Stats().ReadersDropped == 0 {
		if time.Since(start) > 20*time.Second {
			t.Fatal("the stuck reader was never dropped")
		}
		if err := seg.WriteVideo(uint32(frames)*450, [][]byte{au}); err != nil {
			t.Fatal(err)
		}
		frames++
		time.Sleep(5 * time.Millisecond) // the camera's pace
	}
	if l := logs.String(); !strings.Contains(l, "behind live") {
		t.Fatalf("the reader was dropped for another reason:\n%s", l)
	}
	checkGotAll(t, r, good, frames)
}
