package relay_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReaderFarBehindLiveIsDropped: a reader that stops reading a stream
// of modest bitrate is dropped once its oldest queued unit is maxBehind
// old, long before its backlog reaches the byte limit: what a reader can
// pin is bounded by time as well as by bytes. The other reader misses
// nothing.
func TestReaderFarBehindLiveIsDropped(t *testing.T) {
	defer relay.SetMaxBehind(300 * time.Millisecond)()
	_, sps, pps := clipAUs(t)
	var logs syncBuffer
	path := &rtspserver.FixedPath{Log: slog.New(slog.NewTextHandler(&logs, nil))}
	srv, err := rtspserver.Start(rtspserver.Options{Address: "127.0.0.1:0", StartTimeout: 5 * time.Second,
		Resolver: rtspserver.Paths{"cam": path}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	r, err := relay.New(srv.Gortsplib(), relay.Params{SPS: sps, PPS: pps})
	if err != nil {
		t.Fatal(err)
	}
	path.Relay = r
	t.Cleanup(r.Close)
	url := "rtsp://" + srv.Addr() + "/cam"
	good := play(t, url)

	stuck, desc := describe(t, url)
	if err := stuck.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	defer close(block)
	stuck.OnPacketRTPAny(func(*description.Media, format.Format, *rtp.Packet) { <-block })
	if _, err := stuck.Play(nil); err != nil {
		t.Fatal(err)
	}

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
	perFrame := int(r.Stats().RTPPackets) / frames
	pkts := good.waitFor(t, frames*perFrame)
	for i := 1; i < len(pkts); i++ {
		if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 {
			t.Fatalf("the good reader lost packets at %d", i)
		}
	}
}
