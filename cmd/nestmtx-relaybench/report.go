package main

// The window's figures: two snapshots, what they make, and the report with
// its one-line summary (relaybench-result), which scripts parse.

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
)

type snap struct {
	at                time.Time
	daemon, sim, self procCPU
	kids              []childProc // the daemon's
	simOK             bool
	busy, total       uint64
	perReader         []readerSnap
}

type readerSnap struct {
	cam                             int
	pkts, bytes, video, audio, lost uint64
}

func snapshot(o options, rs *readers) snap {
	var s snap
	rs.mu.Lock()
	list := slices.Clone(rs.list)
	rs.mu.Unlock()
	s.perReader = readerCounts(list)
	s.busy, s.total = machineCPU()
	s.daemon, _ = readProcCPU(o.pid)
	s.kids = children(o.pid)
	s.self, _ = readProcCPU(os.Getpid())
	if o.simPID > 0 {
		var err error
		s.sim, err = readProcCPU(o.simPID)
		s.simOK = err == nil
	}
	s.at = time.Now()
	return s
}

// readerCounts reads every reader's counters, each camera's readers at a
// moment when none of them is receiving, if one comes within 200 ms. A
// frame reaches a camera's readers one after the other: read in the middle
// of one (an IDR is a hundred packets), some readers would have it and the
// others not, and the window's least/best ratio would show a loss that is
// not there. Quiet is two reads 2 ms apart that agree.
func readerCounts(list []*reader) []readerSnap {
	out := make([]readerSnap, len(list))
	byCam := map[int][]int{}
	for i, r := range list {
		byCam[r.cam] = append(byCam[r.cam], i)
	}
	read := func(idx []int) (sum uint64) {
		for _, i := range idx {
			r := list[i]
			out[i] = readerSnap{r.cam, r.n.pkts.Load(), r.n.bytes.Load(), r.n.video.Load(), r.n.audio.Load(), r.n.lost.Load()}
			sum += out[i].pkts
		}
		return sum
	}
	for _, idx := range byCam {
		sum := read(idx)
		for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); {
			time.Sleep(2 * time.Millisecond)
			again := read(idx)
			if again == sum {
				break
			}
			sum = again
		}
	}
	return out
}

type result struct {
	window                       time.Duration
	cpuPct, simPct, selfPct      float64
	machinePct                   float64 // of all cores, 100% = every core busy
	cpuSeconds                   float64
	threads                      int
	hwm, rss                     uint64
	mem                          phasePeaks
	rssLo, rssHi                 uint64 // VmRSS sampled over the window
	rssAnon, rssFile             uint64 // at the window's end
	pktsPerSec, mbitPerSec       float64
	videoPerSec, audioPerSec     float64
	lost                         uint64
	perReaderPkts, perReaderMbit []float64
	minReaderPkts, maxReaderPkts float64
	// The daemon's child processes (the AAC transcoder): their CPU over
	// the window, those alive at its end, and their summed RSS then.
	childPct, childSeconds float64
	kids                   []childProc
	childRSS, childAnon    uint64
	tracks                 []string // the codecs of the readers' SDP

	cameras []camera
	// camRatio is, per camera, its least reader's packets in the window
	// over its best reader's; minRatio the least of them.
	camRatio []float64
	minRatio float64
	// bytes are the RTP bytes (header and payload) the readers received in
	// the window; cpuMsPerMB the daemon's CPU (with its children's) per
	// 10^6 of them.
	bytes                     float64
	deliveredMBps, cpuMsPerMB float64
	dropped, failed           int
	joiners                   int // joiners that played
	join                      joinStats
	joinT, coldT              joinTimes
	// baseRSS is the greatest VmRSS in the second half of the baseline,
	// while only the first readers played (baseLo the least); rssPerReader
	// what each joiner added to it by the window, in bytes (without
	// joiners, -1); baseNote whether a GC preceded the baseline.
	baseLo, baseRSS uint64
	rssPerReader    float64
	baseNote        string
	// gcFrac is the GC's share of the daemon's Go CPU in the window, -1
	// when unknown (gcNote says why); gcCycles the GCs in the window.
	gcFrac   float64
	gcCycles float64
	gcNote   string
}

func compute(o options, a, b snap) result {
	r := result{window: b.at.Sub(a.at), gcFrac: -1, rssPerReader: -1}
	sec := r.window.Seconds()
	tick := float64(o.clkTck)
	r.cpuSeconds = float64(b.daemon.ticks-a.daemon.ticks) / tick
	r.cpuPct = 100 * r.cpuSeconds / sec
	r.selfPct = 100 * float64(b.self.ticks-a.self.ticks) / tick / sec
	if a.simOK && b.simOK {
		r.simPct = 100 * float64(b.sim.ticks-a.sim.ticks) / tick / sec
	} else {
		r.simPct = -1
	}
	if b.total > a.total {
		r.machinePct = 100 * float64(b.busy-a.busy) / float64(b.total-a.total)
	}
	if kb, ka := childTicks(b.daemon, b.kids), childTicks(a.daemon, a.kids); kb > ka {
		r.childSeconds = float64(kb-ka) / tick
	}
	r.childPct = 100 * r.childSeconds / sec
	r.kids = b.kids
	for _, k := range b.kids {
		r.childRSS += k.rss
		r.childAnon += k.anon
	}
	r.threads = b.daemon.threads
	r.hwm, r.rss, _ = readProcMem(o.pid)
	r.rssAnon, r.rssFile = procStatusBytes(o.pid, "RssAnon"), procStatusBytes(o.pid, "RssFile")
	var pkts, bytes, video, audio float64
	r.minReaderPkts = -1
	cams := make([]int, len(b.perReader))
	ncam := 0
	for i := range b.perReader {
		d := readerSnap{b.perReader[i].cam, b.perReader[i].pkts - a.perReader[i].pkts, b.perReader[i].bytes - a.perReader[i].bytes,
			b.perReader[i].video - a.perReader[i].video, b.perReader[i].audio - a.perReader[i].audio,
			b.perReader[i].lost - a.perReader[i].lost}
		p := float64(d.pkts)
		pkts += p
		bytes += float64(d.bytes)
		video += float64(d.video)
		audio += float64(d.audio)
		r.lost += d.lost
		r.perReaderPkts = append(r.perReaderPkts, p/sec)
		r.perReaderMbit = append(r.perReaderMbit, float64(d.bytes)*8/sec/1e6)
		if r.minReaderPkts < 0 || p < r.minReaderPkts {
			r.minReaderPkts = p
		}
		r.maxReaderPkts = max(r.maxReaderPkts, p)
		cams[i] = d.cam
		ncam = max(ncam, d.cam+1)
	}
	r.camRatio = cameraRatios(cams, r.perReaderPkts, ncam)
	r.minRatio = 1
	for _, x := range r.camRatio {
		r.minRatio = min(r.minRatio, x)
	}
	r.pktsPerSec = pkts / sec
	r.mbitPerSec = bytes * 8 / sec / 1e6
	r.videoPerSec = video / sec
	r.audioPerSec = audio / sec
	r.bytes = bytes
	r.deliveredMBps = bytes / 1e6 / sec
	r.cpuMsPerMB = cpuPerMB(r.cpuSeconds+r.childSeconds, bytes)
	return r
}

// cpuPerMB is CPU seconds per 10^6 bytes delivered, in milliseconds; -1
// when nothing was.
func cpuPerMB(cpuSeconds, bytes float64) float64 {
	if bytes <= 0 {
		return -1
	}
	return 1000 * cpuSeconds / (bytes / 1e6)
}

// cameraRatios is, for each of ncam cameras, the packets of its least
// reader over those of its best (cams[i] is reader i's camera): a reader
// that fell behind, lost packets or was dropped shows below 1. A camera
// whose readers all got nothing scores 0.
func cameraRatios(cams []int, pkts []float64, ncam int) []float64 {
	lo := make([]float64, ncam)
	hi := make([]float64, ncam)
	seen := make([]bool, ncam)
	for i, c := range cams {
		if !seen[c] || pkts[i] < lo[c] {
			lo[c] = pkts[i]
		}
		hi[c] = max(hi[c], pkts[i])
		seen[c] = true
	}
	out := make([]float64, ncam)
	for c := range out {
		if hi[c] > 0 {
			out[c] = lo[c] / hi[c]
		}
	}
	return out
}

func stats(v []float64) (lo, med, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

func med0(v []float64) float64 { _, m, _ := stats(v); return m }

// percentile is the nearest-rank pth percentile of v (p in (0, 100]):
// the smallest value at least p% of the values are at or under, so always
// one of them. -1 for no values.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return -1
	}
	s := slices.Clone(v)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// secretFlags are the flags whose values the report never shows.
var secretFlags = map[string]bool{"password": true, "credential": true, "metrics-token": true}

// redactArgs is a command line with the values of secretFlags replaced, in
// each of the forms the flag package takes (-f v, --f v, -f=v, --f=v).
func redactArgs(args []string) []string {
	out := slices.Clone(args)
	for i := 0; i < len(out); i++ {
		a := out[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !secretFlags[name] {
			continue
		}
		if hasValue {
			out[i] = a[:strings.IndexByte(a, '=')+1] + "<redacted>"
		} else if i+1 < len(out) {
			out[i+1] = "<redacted>"
			i++
		}
	}
	return out
}

func (r result) print(w io.Writer, o options) {
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	cam := r.cameras[0]
	p("== nestmtx relay benchmark ==")
	p("machine:          %d cores, %s, %s", numCPU(), cpuModel(), kernel())
	if o.command != "" {
		p("command:          %s", o.command)
	}
	p("bench tool:       %s", strings.Join(redactArgs(os.Args), " "))
	p("daemon:           pid %d: %s", o.pid, procCmdline(o.pid))
	clip := clipInfo(o.clipDir)
	if cam.webRTCOnly() {
		clip += "; over WebRTC the simulator sends its video with its built-in Opus tone instead of the AAC"
	}
	p("clip:             %s", clip)
	if len(r.cameras) == 1 {
		p("camera:           %q %s, served at rtsp://%s/%s; Google protocols %s, audio %s, tracks %s", cam.Name, cam.Resolution, o.rtspAddr, cam.Path,
			strings.Join(cam.Protocols, "+"), cam.audioMode(), strings.Join(r.tracks, "+"))
	} else {
		names := make([]string, len(r.cameras))
		for i, c := range r.cameras {
			names[i] = fmt.Sprintf("%q at /%s", c.Name, c.Path)
		}
		p("cameras:          %d, each %s, Google protocols %s, audio %s, tracks %s: %s", len(r.cameras), cam.Resolution,
			strings.Join(cam.Protocols, "+"), cam.audioMode(), strings.Join(r.tracks, "+"), strings.Join(names, ", "))
	}
	p("readers:          %d over TCP (gortsplib v4 clients, all in this process), %d per camera; warm-up %s with the first reader of each camera alone, %s after the joins; window %s",
		len(r.perReaderPkts), o.readers, o.baseline, o.warmup, r.window.Round(time.Millisecond))
	ms := func(v []float64) string {
		if len(v) == 0 {
			return "n/a"
		}
		return fmt.Sprintf("median %.0f ms, p95 %.0f ms", percentile(v, 50), percentile(v, 95))
	}
	p("cold start:       first reader of each camera, from connecting (DESCRIBE starts the stream) to its first packet %s, to its first IDR %s",
		ms(r.coldT.firstPkt), ms(r.coldT.firstIDR))
	if r.join.prepared+r.failed > 0 {
		p("joins:            %d joiners connected and SETUP in %d ms (%d at a time), then sent PLAY together (all answered in %d ms); %d failed",
			r.join.prepared, r.join.setup.Milliseconds(), o.joinConcurrency, r.join.play.Milliseconds(), r.failed)
		p("                  from PLAY to the first packet %s, to the first IDR %s; by the end %d had no packet, %d no IDR",
			ms(r.joinT.firstPkt), ms(r.joinT.firstIDR), r.joinT.noPkt, r.joinT.noIDR)
	} else {
		p("joins:            none (one reader per camera)")
	}
	p("daemon CPU:       %.2f s in %.1f s = %.2f%% of one core (utime+stime, CLK_TCK %d), %d threads",
		r.cpuSeconds, r.window.Seconds(), r.cpuPct, o.clkTck, r.threads)
	kids := "none"
	if len(r.kids) > 0 {
		names := make([]string, len(r.kids))
		for i, k := range r.kids {
			names[i] = fmt.Sprintf("%s pid %d", k.comm, k.pid)
		}
		kids = strings.Join(names, ", ")
	}
	p("daemon children:  %.2f s = %.2f%% of one core (utime+stime of the children, alive or reaped), RSS %.1f MiB (anon %.1f) at the window's end; alive then: %s",
		r.childSeconds, r.childPct, mib(r.childRSS), mib(r.childAnon), kids)
	p("daemon+children:  %.2f%% of one core", r.cpuPct+r.childPct)
	p("cost:             %.3f ms of daemon (+children) CPU per delivered MB (10^6 bytes of RTP the readers received); delivered %.2f MB/s",
		r.cpuMsPerMB, r.deliveredMBps)
	gc := "n/a (" + r.gcNote + ")"
	if r.gcFrac >= 0 {
		gc = fmt.Sprintf("%.1f%% of the daemon's Go CPU (Δgc / (Δtotal − Δidle) of go_cpu_classes_* on /metrics), %.0f GC cycles in the window", 100*r.gcFrac, r.gcCycles)
	}
	p("daemon GC:        %s", gc)
	m := r.mem
	p("daemon memory:    peak RSS (VmHWM) %.1f MiB over the process's life; RSS in the window %.1f-%.1f MiB (sampled every 100 ms), at its end %.1f MiB (anon %.1f, file %.1f)",
		mib(m.max()), mib(r.rssLo), mib(r.rssHi), mib(r.rss), mib(r.rssAnon), mib(r.rssFile))
	perReader := "n/a (no joiners)"
	rssPerReaderKB := -1.0
	if r.joiners > 0 {
		rssPerReaderKB = r.rssPerReader / 1e3
		perReader = fmt.Sprintf("%.1f kB (max in the window − max of the baseline) / %d joiners", rssPerReaderKB, r.joiners)
	}
	p("                  RSS max in the window %.1f MiB = %.1f MB (10^6 bytes); baseline, the first readers alone (%s, then the second half of %s): %.1f-%.1f MiB, max %.1f MB; per added reader %s",
		mib(r.rssHi), float64(r.rssHi)/1e6, r.baseNote, o.baseline, mib(r.baseLo), mib(r.baseRSS), float64(r.baseRSS)/1e6, perReader)
	if m.resetOK {
		p("                  VmHWM by phase (reset to the RSS of the moment at each phase's start): idle %.1f, API set-up %.1f, cold start %.1f, first readers alone %.1f, %d joins %.1f, warm-up %.1f, window %.1f MiB",
			mib(m.start), mib(m.setup), mib(m.cold), mib(m.baseline), r.joiners, mib(m.join), mib(m.warmup), mib(m.window))
	} else {
		p("                  VmHWM by phase: unavailable (cannot reset it through /proc/%d/clear_refs: %v)", o.pid, m.resetErr)
	}
	p("received:         %.0f packets/s, %.2f Mbit/s summed over readers (video %.0f/s, audio %.0f/s); lost %d",
		r.pktsPerSec, r.mbitPerSec, r.videoPerSec, r.audioPerSec, r.lost)
	lo, med, hi := stats(r.perReaderPkts)
	p("per reader:       packets/s min %.1f  median %.1f  max %.1f", lo, med, hi)
	lo, med, hi = stats(r.perReaderMbit)
	p("                  Mbit/s    min %.3f  median %.3f  max %.3f", lo, med, hi)
	ratios := make([]string, len(r.camRatio))
	for i, x := range r.camRatio {
		ratios[i] = fmt.Sprintf("%.4f", x)
	}
	p("                  least reader / best reader of its camera, in packets: %s; dropped %d, failed to join %d",
		strings.Join(ratios, " "), r.dropped, r.failed)
	sim := "n/a"
	if r.simPct >= 0 {
		sim = fmt.Sprintf("%.2f%%", r.simPct)
	}
	p("context:          simulator %s, bench tool (the readers, on the same cores) %.2f%% of one core; machine busy %.1f%% of %d cores",
		sim, r.selfPct, r.machinePct, numCPU())
	p("relaybench-result cpu_pct=%.3f cpu_s=%.3f peak_rss_mib=%.1f window_rss_max_mib=%.1f window_rss_min_mib=%.1f rss_mib=%.1f pkts_per_s=%.0f mbit_per_s=%.2f per_reader_pkts_per_s=%.1f per_reader_mbit_per_s=%.3f lost=%d machine_busy_pct=%.1f"+
		" child_cpu_pct=%.3f child_cpu_s=%.3f total_cpu_pct=%.3f children=%d child_rss_mib=%.1f video_pkts_per_s=%.0f audio_pkts_per_s=%.0f sim_cpu_pct=%.3f child_rss_anon_mib=%.1f"+
		" cameras=%d readers_per_camera=%d readers=%d joiners=%d window_s=%.1f warmup_s=%.1f baseline_s=%.1f"+
		" cpu_ms_per_mb=%.3f delivered_mb_per_s=%.2f window_rss_max_mb=%.1f baseline_rss_mib=%.1f baseline_rss_mb=%.1f rss_per_reader_kb=%.1f gc_cpu_pct=%.2f gc_cycles=%.0f"+
		" join_first_pkt_med_ms=%.1f join_first_pkt_p95_ms=%.1f join_first_idr_med_ms=%.1f join_first_idr_p95_ms=%.1f join_no_pkt=%d join_no_idr=%d"+
		" cold_first_pkt_med_ms=%.1f cold_first_idr_med_ms=%.1f self_cpu_pct=%.2f dropped=%d failed=%d min_reader_ratio=%.4f",
		r.cpuPct, r.cpuSeconds, mib(m.max()), mib(r.rssHi), mib(r.rssLo), mib(r.rss), r.pktsPerSec, r.mbitPerSec, med0(r.perReaderPkts), med0(r.perReaderMbit), r.lost, r.machinePct,
		r.childPct, r.childSeconds, r.cpuPct+r.childPct, len(r.kids), mib(r.childRSS), r.videoPerSec, r.audioPerSec, r.simPct, mib(r.childAnon),
		len(r.cameras), o.readers, len(r.perReaderPkts), r.joiners, r.window.Seconds(), o.warmup.Seconds(), o.baseline.Seconds(),
		r.cpuMsPerMB, r.deliveredMBps, float64(r.rssHi)/1e6, mib(r.baseRSS), float64(r.baseRSS)/1e6, rssPerReaderKB, pct(r.gcFrac), r.gcCycles,
		percentile(r.joinT.firstPkt, 50), percentile(r.joinT.firstPkt, 95), percentile(r.joinT.firstIDR, 50), percentile(r.joinT.firstIDR, 95), r.joinT.noPkt, r.joinT.noIDR,
		percentile(r.coldT.firstPkt, 50), percentile(r.coldT.firstIDR, 50), r.selfPct, r.dropped, r.failed, r.minRatio)
}

// pct is a fraction as a percentage, keeping -1 (unknown) as it is.
func pct(frac float64) float64 {
	if frac < 0 {
		return -1
	}
	return 100 * frac
}

func clipInfo(dir string) string {
	if dir == "" {
		return "unknown (no --clip-dir)"
	}
	vpath, apath := filepath.Join(dir, nestsim.ClipH264File), filepath.Join(dir, nestsim.ClipAACFile)
	c, err := nestsim.LoadClipFiles(vpath, apath)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	vst, err1 := os.Stat(vpath)
	ast, err2 := os.Stat(apath)
	if err1 != nil || err2 != nil {
		return "unreadable"
	}
	vdur := c.Duration().Seconds()
	adur := float64(c.AudioFrames()) * 1024 / float64(c.SampleRate)
	vk := float64(vst.Size()) * 8 / vdur / 1000
	ak := float64(ast.Size()) * 8 / adur / 1000
	return fmt.Sprintf("H.264 %dx%d@%d, %d frames (%.1f s), %.0f kbit/s + AAC %d Hz %d ch %.0f kbit/s = %.2f Mbit/s (file sizes / duration)",
		c.Width, c.Height, c.FPS, c.VideoFrames(), vdur, vk, c.SampleRate, c.Channels, ak, (vk+ak)/1000)
}
