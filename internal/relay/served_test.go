package relay_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestServedReaderSkipsAGOPTooLongForItsQueue: gortsplib's per-reader
// write queue is small (every reader pays for it), so a UDP reader that
// joins while the cached GOP is longer than the queue holds is not given
// the GOP, which would overflow it and lose packets at random. It starts
// with the live packets instead, and gets every packet of the next IDR.
func TestServedReaderSkipsAGOPTooLongForItsQueue(t *testing.T) {
	_, sps, pps := clipAUs(t)
	r, _, srv := startRelayWith(t, relay.Params{SPS: sps, PPS: pps}, &rtspserver.FixedPath{},
		func(o *rtspserver.Options) { o.UDPRTPAddress = testkit.FreeUDPPair(t) })

	// A GOP of about 650 packets: a 100 kB IDR and twenty 40 kB pictures.
	idr := append([]byte{0x65}, bytes.Repeat([]byte{0x55}, 100_000)...)
	pframe := append([]byte{0x41}, bytes.Repeat([]byte{0x33}, 40_000)...)
	seg := r.BeginSegment()
	ts := uint32(0)
	write := func(au []byte) {
		t.Helper()
		if err := seg.WriteVideo(ts, [][]byte{au}); err != nil {
			t.Fatal(err)
		}
		ts += 3000
	}
	write(idr)
	for range 20 {
		write(pframe)
	}
	before := r.Stats().RTPPackets

	var mu sync.Mutex
	var seqs []uint16
	var lost uint64
	idrSeen := make(chan struct{})
	var once sync.Once
	playUDP(t, "rtsp://"+srv.Addr()+"/cam", func(p *rtp.Packet) {
		mu.Lock()
		seqs = append(seqs, p.SequenceNumber)
		mu.Unlock()
		if startsIDR(p.Payload) {
			once.Do(func() { close(idrSeen) })
		}
	}, func(n uint64) { mu.Lock(); lost += n; mu.Unlock() })

	// The live stream goes on: pictures, then the next GOP's IDR.
	deadline := time.After(10 * time.Second)
	for i := 0; ; i++ {
		if i%10 == 9 {
			write(idr)
		} else {
			write(pframe)
		}
		select {
		case <-idrSeen:
		case <-deadline:
			t.Fatal("the UDP reader never got an IDR")
		case <-time.After(20 * time.Millisecond): // the camera's pace
			continue
		}
		break
	}
	// Three more pictures, so that the IDR's last packets are followed.
	for range 3 {
		write(pframe)
	}
	after := r.Stats().RTPPackets
	testkit.Eventually(t, 5*time.Second, "the UDP reader to get the live packets", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return uint64(len(seqs)) >= after-before-30 // the first live picture may race the PLAY
	})
	mu.Lock()
	defer mu.Unlock()
	if uint64(len(seqs)) > after-before {
		t.Fatalf("the reader got %d packets, more than the %d written after the GOP: the GOP was replayed", len(seqs), after-before)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("packet %d: sequence %d after %d: packets were lost", i, seqs[i], seqs[i-1])
		}
	}
	if lost != 0 {
		t.Fatalf("the reader reports %d packets lost", lost)
	}
}

// TestServedReaderGetsAGOPThatFits: a UDP reader that joins while the
// cached GOP fits its write queue gets it first, from its IDR, then the
// live packets, without a gap.
func TestServedReaderGetsAGOPThatFits(t *testing.T) {
	_, sps, pps := clipAUs(t)
	r, url, _ := startRelayWith(t, relay.Params{SPS: sps, PPS: pps}, &rtspserver.FixedPath{},
		func(o *rtspserver.Options) { o.UDPRTPAddress = testkit.FreeUDPPair(t) })
	// A GOP of about 40 packets: a 20 kB IDR and five 5 kB pictures.
	idr := append([]byte{0x65}, bytes.Repeat([]byte{0x55}, 20_000)...)
	pframe := append([]byte{0x41}, bytes.Repeat([]byte{0x33}, 5_000)...)
	seg := r.BeginSegment()
	for i, au := range [][]byte{idr, pframe, pframe, pframe, pframe, pframe} {
		if err := seg.WriteVideo(uint32(i)*3000, [][]byte{au}); err != nil {
			t.Fatal(err)
		}
	}
	gop := int(r.Stats().RTPPackets)

	var mu sync.Mutex
	var pkts []*rtp.Packet
	playUDP(t, url, func(p *rtp.Packet) {
		mu.Lock()
		pkts = append(pkts, p)
		mu.Unlock()
	}, nil)
	if err := seg.WriteVideo(6*3000, [][]byte{pframe}); err != nil {
		t.Fatal(err)
	}
	want := int(r.Stats().RTPPackets)
	testkit.Eventually(t, 5*time.Second, "the GOP and the live picture", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(pkts) >= want
	})
	mu.Lock()
	defer mu.Unlock()
	if len(pkts) != want {
		t.Fatalf("got %d packets, want the GOP's %d and the live picture's %d", len(pkts), gop, want-gop)
	}
	if !startsIDR(pkts[0].Payload) {
		t.Fatal("the replay does not start with the IDR")
	}
	for i := 1; i < len(pkts); i++ {
		if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 {
			t.Fatalf("packet %d: sequence %d after %d", i, pkts[i].SequenceNumber, pkts[i-1].SequenceNumber)
		}
	}
}

// playUDP plays url over UDP (so gortsplib's writer feeds it), handing
// every RTP packet to onPacket and packet losses to onLost (if not nil).
func playUDP(t *testing.T, url string, onPacket func(*rtp.Packet), onLost func(uint64)) {
	t.Helper()
	udp := gortsplib.TransportUDP
	c := &gortsplib.Client{Transport: &udp, OnPacketsLost: onLost}
	u, _ := base.ParseURL(url)
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		t.Fatal(err)
	}
	c.OnPacketRTPAny(func(_ *description.Media, _ format.Format, p *rtp.Packet) { onPacket(p) })
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
}
