// Over 500 lines: the in-process benchmark's rig (clip, feeder, reader child, server side) is one piece, read top to bottom.

package main

// In-process benchmarks of the daemon's forward path, to see where its CPU
// and allocations go: relay.Relay fed with a clip's access units, through
// the daemon's RTSP server, to real RTSP readers over TCP on loopback.
//
// The readers run in a child process (this test binary re-executed), so the
// benchmark's CPU time, allocations and profiles are the server side's
// alone. Each op is one video access unit (plus the audio units due by its
// timestamp): it is written, then the benchmark waits until every reader has
// received it, as at 30 fps where every frame arrives as one burst.
//
//	RELAYBENCH_CLIP_DIR=<dir with clip.h264 and clip.aac> go test ./cmd/nestmtx-relaybench \
//	  -run '^$' -bench . -benchmem -benchtime 3000x -cpuprofile cpu.pprof -memprofile mem.pprof
//
// Without RELAYBENCH_CLIP_DIR the committed 640x360 testdata clip is used.

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
)

const (
	childURLEnv     = "RELAYBENCH_CHILD_URL"
	childReadersEnv = "RELAYBENCH_CHILD_READERS"
	clipDirEnv      = "RELAYBENCH_CLIP_DIR"
)

func TestMain(m *testing.M) {
	n, _ := strconv.Atoi(os.Getenv(childReadersEnv))
	if url := os.Getenv(childURLEnv); url != "" {
		if err := readerChild(url, n); err != nil {
			fmt.Fprintln(os.Stderr, "reader child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// ---- The clip ----

type benchClip struct {
	name     string
	sps, pps []byte
	fps      int
	video    [][][]byte // access units
	audio    [][]byte   // AAC access units
	audioCfg *mpeg4audio.AudioSpecificConfig
	// videoPkts is how many RTP packets the relay makes of each video unit
	// (deterministic: the relay's encoder settings, SPS/PPS already in band).
	videoPkts []int
}

var (
	clipOnce sync.Once
	clipVal  *benchClip
	clipErr  error
)

func loadBenchClip(tb testing.TB) *benchClip {
	tb.Helper()
	clipOnce.Do(func() { clipVal, clipErr = readBenchClip() })
	if clipErr != nil {
		tb.Fatal(clipErr)
	}
	return clipVal
}

func readBenchClip() (*benchClip, error) {
	dir := os.Getenv(clipDirEnv)
	if dir == "" {
		var err error
		if dir, err = nestsim.FindTestdata(); err != nil {
			return nil, err
		}
	}
	vraw, err := os.ReadFile(filepath.Join(dir, nestsim.ClipH264File))
	if err != nil {
		return nil, err
	}
	araw, err := os.ReadFile(filepath.Join(dir, nestsim.ClipAACFile))
	if err != nil {
		return nil, err
	}
	c := &benchClip{}
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(vraw); err != nil {
		return nil, err
	}
	c.video = nestsim.SplitAccessUnits(nalus)
	for _, au := range c.video {
		for _, n := range au {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				c.sps = n
			case h264.NALUTypePPS:
				c.pps = n
			}
		}
	}
	if c.sps == nil || c.pps == nil || len(c.video) == 0 || !h264.IsRandomAccess(c.video[0]) {
		return nil, errors.New("the H.264 clip needs SPS/PPS in band and must start with an IDR")
	}
	var sps h264.SPS
	if err := sps.Unmarshal(c.sps); err != nil {
		return nil, err
	}
	c.fps = int(sps.FPS() + 0.5)
	if c.fps <= 0 {
		c.fps = 25
	}
	var adts mpeg4audio.ADTSPackets
	if err := adts.Unmarshal(araw); err != nil {
		return nil, err
	}
	if len(adts) == 0 {
		return nil, errors.New("no AAC frames")
	}
	c.audioCfg = &mpeg4audio.AudioSpecificConfig{Type: adts[0].Type, SampleRate: adts[0].SampleRate, ChannelCount: adts[0].ChannelCount}
	for _, p := range adts {
		c.audio = append(c.audio, p.AU)
	}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1, PayloadMaxSize: 1400}
	if err := enc.Init(); err != nil {
		return nil, err
	}
	var bytes int
	for _, au := range c.video {
		pkts, err := enc.Encode(au)
		if err != nil {
			return nil, err
		}
		c.videoPkts = append(c.videoPkts, len(pkts))
		for _, n := range au {
			bytes += len(n)
		}
	}
	c.name = fmt.Sprintf("%dx%d@%d %.2f Mbit/s video, %s", sps.Width(), sps.Height(), c.fps,
		float64(bytes)*8*float64(c.fps)/float64(len(c.video))/1e6, dir)
	return c, nil
}

// ---- The server side: what the daemon runs ----

// feeder writes the clip into the relay with continuous timestamps, video
// access unit by access unit, interleaving the audio due by each.
type feeder struct {
	clip       *benchClip
	seg        *relay.Segment
	vi, ai     int    // next units, counted from the start (not wrapped)
	sentPerRdr uint64 // RTP packets each reader is due so far
}

func (f *feeder) next() error {
	c := f.clip
	vts := uint32(f.vi) * uint32(90000/c.fps)
	if err := f.seg.WriteVideo(vts, c.video[f.vi%len(c.video)]); err != nil {
		return err
	}
	f.sentPerRdr += uint64(c.videoPkts[f.vi%len(c.video)])
	f.vi++
	// Audio units whose time has come by the next video frame.
	until := float64(f.vi) / float64(c.fps)
	for float64(f.ai)*mpeg4audio.SamplesPerAccessUnit/float64(c.audioCfg.SampleRate) < until {
		if err := f.seg.WriteAudio(uint32(f.ai)*mpeg4audio.SamplesPerAccessUnit, c.audio[f.ai%len(c.audio)]); err != nil {
			return err
		}
		f.sentPerRdr++ // one packet per AAC unit (each is far under 1400 bytes)
		f.ai++
	}
	return nil
}

// child is the reader process: it is told a packet count on its stdin and
// answers one byte once every reader has received that many.
type child struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  io.ReadCloser
	buf  []byte
	ack  []byte
	done chan error
}

func startChild(env ...string) (*child, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, in: in, out: out, buf: make([]byte, 8), ack: make([]byte, 1), done: make(chan error, 1)}
	// The child says it is ready (all readers playing) with one byte.
	if _, err := io.ReadFull(out, c.ack); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("reader child did not start: %w", err)
	}
	return c, nil
}

// waitFor blocks until every reader has received n packets.
func (c *child) waitFor(n uint64) error {
	binary.LittleEndian.PutUint64(c.buf, n)
	if _, err := c.in.Write(c.buf); err != nil {
		return err
	}
	_, err := io.ReadFull(c.out, c.ack)
	return err
}

func (c *child) stop() {
	c.in.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// readerChild runs in the child process.
func readerChild(url string, n int) error {
	var target atomic.Uint64
	sig := make(chan struct{}, 1)
	rs, err := startReaders(url, n, func(c *counters) {
		if c.pkts.Load() >= target.Load() {
			select {
			case sig <- struct{}{}:
			default:
			}
		}
	})
	if rs != nil {
		defer rs.close()
	}
	if err != nil {
		return err
	}
	counts := make([]*atomic.Uint64, len(rs.list))
	for i, r := range rs.list {
		counts[i] = &r.n.pkts
	}
	return serveAcks(&target, sig, counts, rs.err)
}

// serveAcks is the child's side of the protocol: "ready", then for each
// target read from stdin, one byte once every counter has reached it.
func serveAcks(target *atomic.Uint64, sig chan struct{}, counts []*atomic.Uint64, failed func() error) error {
	out := bufio.NewWriter(os.Stdout)
	out.WriteByte('R')
	out.Flush()
	in := bufio.NewReader(os.Stdin)
	buf := make([]byte, 8)
	for {
		if _, err := io.ReadFull(in, buf); err != nil {
			return nil // the benchmark is over
		}
		target.Store(binary.LittleEndian.Uint64(buf))
		deadline := time.Now().Add(20 * time.Second)
		for {
			if err := failed(); err != nil {
				return err
			}
			least := ^uint64(0)
			for _, c := range counts {
				least = min(least, c.Load())
			}
			if least >= target.Load() {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("readers stuck at %d, want %d", least, target.Load())
			}
			select {
			case <-sig:
			case <-time.After(2 * time.Millisecond):
			}
		}
		out.WriteByte('A')
		out.Flush()
	}
}

type rig struct {
	clip  *benchClip
	srv   *gortsplib.Server
	r     *relay.Relay
	feed  *feeder
	child *child
}

func startRig(b *testing.B, readers int) *rig {
	b.Helper()
	c := loadBenchClip(b)
	path := &rtspserver.FixedPath{}
	// The readers are another process: their connections order nothing
	// for the race detector. Every request they make is checked by the
	// authenticator first, so its taking ready (held until the rig is
	// built, before any reader exists) orders the rig's set-up before the
	// server's use of it.
	ready := &sync.RWMutex{}
	ready.Lock()
	// Logins on, as the daemon serves by default; the readers log in once
	// each (Digest, which gortsplib chooses), before the measured window.
	rs, err := rtspserver.Start(rtspserver.Options{Address: "127.0.0.1:0", StartTimeout: 5 * time.Second,
		Resolver: rtspserver.Paths{"bench": path}, Authenticator: benchAuth{ready}, Realm: benchRealm})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rs.Close)
	srv, addr := rs.Gortsplib(), rs.Addr()
	r, err := relay.New(srv, relay.Params{SPS: c.sps, PPS: c.pps, Audio: c.audioCfg})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.Close)
	path.Relay = r
	g := &rig{clip: c, srv: srv, r: r, feed: &feeder{clip: c, seg: r.BeginSegment()}}
	// Fill the GOP cache to a full GOP, as a live camera's would be when
	// readers join (they are sent it at PLAY).
	gop := 1
	for gop < len(c.video) && !h264.IsRandomAccess(c.video[gop]) {
		gop++
	}
	for i := 0; i < gop-1; i++ {
		if err := g.feed.next(); err != nil {
			b.Fatal(err)
		}
	}
	ready.Unlock()
	if readers > 0 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		u := url.URL{Scheme: "rtsp", User: url.UserPassword(benchUser, benchPassword), Host: addr, Path: "/bench"}
		ch, err := startChild(childURLEnv+"="+u.String(), childReadersEnv+"="+strconv.Itoa(readers))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(ch.stop)
		g.child = ch
		runtime.ReadMemStats(&after)
		b.Logf("clip %s; %d readers joined with a %d-frame GOP cached: %.1f MiB allocated, heap in use %.1f -> %.1f MiB",
			c.name, readers, gop-1, float64(after.TotalAlloc-before.TotalAlloc)/(1<<20),
			float64(before.HeapInuse)/(1<<20), float64(after.HeapInuse)/(1<<20))
		// The joiners got the cached GOP: count from there.
		if err := g.settle(); err != nil {
			b.Fatal(err)
		}
	}
	// Warm up: a few GOPs in steady state.
	for i := 0; i < 2*gop; i++ {
		if err := g.step(); err != nil {
			b.Fatal(err)
		}
	}
	return g
}

// The one account of the in-process server. The daemon checks Basic with
// argon2id behind its login gate and Digest against a sealed HA1; this
// stand-in compares plaintext, which costs the forward path nothing either
// way.
const (
	benchUser     = "bench"
	benchPassword = "bench-password"
	benchRealm    = "nestmtx"
)

type benchAuth struct{ ready *sync.RWMutex }

func (a benchAuth) Basic(_ context.Context, username, password, _ string) (rtspserver.Account, error) {
	a.ready.RLock()
	a.ready.RUnlock() //nolint:staticcheck // an empty section: only the ordering is wanted
	if subtle.ConstantTimeCompare([]byte(username+":"+password), []byte(benchUser+":"+benchPassword)) != 1 {
		return rtspserver.Account{}, errors.New("invalid username or password")
	}
	return rtspserver.Account{Username: benchUser}, nil
}

func (a benchAuth) DigestHA1(username string) (string, rtspserver.Account, bool) {
	a.ready.RLock()
	a.ready.RUnlock() //nolint:staticcheck // an empty section: only the ordering is wanted
	if username != benchUser {
		return "", rtspserver.Account{}, false
	}
	h := md5.Sum([]byte(benchUser + ":" + benchRealm + ":" + benchPassword))
	return hex.EncodeToString(h[:]), rtspserver.Account{Username: benchUser}, true
}

func (benchAuth) Failed(string, string)       {}
func (benchAuth) Succeeded(string, string)    {}
func (benchAuth) Blocked(string, string) bool { return false }

// settle makes the packet count the readers are due start from what each
// has already received (the replayed GOP).
func (g *rig) settle() error {
	cached := uint64(0)
	for i := 0; i < g.feed.vi; i++ {
		cached += uint64(g.clip.videoPkts[i%len(g.clip.video)])
	}
	cached += uint64(g.feed.ai)
	g.feed.sentPerRdr = cached
	return g.child.waitFor(cached)
}

// step forwards one video unit (and its audio) and waits until every
// reader has it.
func (g *rig) step() error {
	if err := g.feed.next(); err != nil {
		return err
	}
	if g.child != nil {
		return g.child.waitFor(g.feed.sentPerRdr)
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRelayFanout forwards the clip through relay.Relay and gortsplib
// to 0, 1 and 50 TCP readers. Per op (one video access unit plus its audio):
// allocs/op and B/op from -benchmem; pkts/op per reader; allocs/pkt and
// B/pkt per packet written to the stream (not per reader); cpu-ns/op, the
// process's user+system CPU time; core%@fps, that CPU at the clip's frame
// rate as a percentage of one core (compare with the daemon's, which also
// pays the upstream's TLS and depacketisation).
func BenchmarkRelayFanout(b *testing.B) {
	for _, readers := range []int{0, 1, 50} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			g := startRig(b, readers)
			startPkts := g.feed.sentPerRdr
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := g.step(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			runtime.ReadMemStats(&ms1)
			pkts := float64(g.feed.sentPerRdr - startPkts)
			b.ReportMetric(pkts/float64(b.N), "pkts/op")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/pkts, "allocs/pkt")
			b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/pkts, "B/pkt")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)*float64(g.clip.fps)/1e9*100, "core%@fps")
		})
	}
}

// BenchmarkUpstreamDepacketize is the source side of the daemon: the
// H.264 RTP decoder (internal/source uses format.H264's) turning the
// camera's packets back into access units, per video access unit.
func BenchmarkUpstreamDepacketize(b *testing.B) {
	c := loadBenchClip(b)
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1, PayloadMaxSize: 1400 - 12}
	if err := enc.Init(); err != nil {
		b.Fatal(err)
	}
	var units [][]*rtp.Packet
	for _, au := range c.video {
		pkts, err := enc.Encode(au)
		if err != nil {
			b.Fatal(err)
		}
		units = append(units, pkts)
	}
	f := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: c.sps, PPS: c.pps}
	dec, err := f.CreateDecoder()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var pkts int
	for i := 0; i < b.N; i++ {
		for _, p := range units[i%len(units)] {
			pkts++
			if _, err := dec.Decode(p); err != nil && !errors.Is(err, rtph264.ErrMorePacketsNeeded) {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(pkts)/float64(b.N), "pkts/op")
}
