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
	defer relay.SetMaxBehind(time.Second)()
	_, sps, pps := clipAUs(t)
	var logs testkit.SyncBuffer
	r, url, _ := startRelayWith(t, relay.Params{SPS: sps, PPS: pps},
		&rtspserver.FixedPath{Log: slog.New(slog.NewTextHandler(&logs, nil))}, nil)
	good := play(t, url)
	playStuck(t, url)

	// 10 kB pictures at 200 a second (2 MB/s): the stuck reader's socket
	// buffers fill within a few seconds, then its queue grows by about
	// 2 MB a second, under the 4 MiB limit when it is a second behind.
	// A second leaves the good reader room under -race on a busy machine.
	au := append([]byte{0x65}, bytes.Repeat([]byte{0x55}, 10_000)...)
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
