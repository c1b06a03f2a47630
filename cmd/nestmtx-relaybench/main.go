// Command nestmtx-relaybench measures what relaying cameras costs the
// daemon: it authorizes a credential against a running `nestmtx serve`
// (pointed at `nestmtx simulate`) through the MQTT API, serves a camera at
// a path (the first RTSP camera, or the one --camera names, such as the
// simulator's WebRTC camera "Living Room"; with --cameras N the first N
// RTSP cameras at path-1 … path-N), optionally sets its audio mode (--audio
// aac makes the daemon transcode a WebRTC camera's Opus with an ffmpeg
// child), and connects RTSP readers over TCP: first one per camera, which
// starts the stream; after a warm-up with those alone (the memory
// baseline), the rest of --readers per camera connect and SETUP, then send
// PLAY all at once, each timing its first packet and its first IDR. After
// another warm-up it measures the daemon over a fixed window: CPU time
// (utime+stime from /proc) as a percentage of one core and per delivered
// MB, that of its child processes (the AAC transcoder) apart and in the
// total, resident memory (peak, in the window, per added reader), the GC's
// share of its CPU (from its /metrics, with --metrics), what the readers
// received, and this process's own CPU: the readers run here, on the same
// cores as the daemon.
//
//	nestmtx-relaybench table [flags] < results
//
// prints the markdown table of scripts/bench-scale.sh from the
// relaybench-result lines of several runs, with the scaling targets.
//
// scripts/bench-relay.sh builds the clip, starts both processes and runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
)

type options struct {
	broker, base         string
	user, password       string
	httpAddr, rtspAddr   string
	credential           string
	path                 string
	readers, cameras     int
	joinConcurrency      int
	warmup, duration     time.Duration
	baseline             time.Duration
	pid, simPID          int
	clipDir              string
	pprofURL, pprofOut   string
	metricsURL           string
	metricsToken         string
	command              string
	clkTck               int
	setupTimeout         time.Duration
	minReaderRatio       float64
	allowDisconnectedRdr bool
	camera, audio        string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "table" {
		os.Exit(tableMain(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	var o options
	flag.StringVar(&o.broker, "broker", "127.0.0.1:1883", "the daemon's MQTT broker (host:port)")
	flag.StringVar(&o.base, "base-topic", "nestmtx", "the daemon's base topic")
	flag.StringVar(&o.user, "username", "admin", "API user")
	flag.StringVar(&o.password, "password", os.Getenv("NESTMTX_ADMIN_PASSWORD"), "API password (default $NESTMTX_ADMIN_PASSWORD)")
	flag.StringVar(&o.httpAddr, "http", "127.0.0.1:2000", "the daemon's HTTP address, for the OAuth redirect URI")
	flag.StringVar(&o.rtspAddr, "rtsp", "127.0.0.1:8554", "the daemon's RTSP address")
	flag.StringVar(&o.credential, "credential", "", "credentials create payload as JSON (the '# payload:' line `nestmtx simulate` prints); default: the simulator's built-in client and project")
	flag.StringVar(&o.path, "path", "bench", "mtx_path to serve the camera at; with --cameras N, the cameras are served at <path>-1 … <path>-N")
	flag.IntVar(&o.readers, "readers", 50, "RTSP readers over TCP per camera: the first starts the stream, the others join it together")
	flag.IntVar(&o.cameras, "cameras", 1, "how many cameras to read: the first N RTSP ones the daemon lists (nestmtx simulate --rtsp-cameras serves more than two)")
	flag.IntVar(&o.joinConcurrency, "join-concurrency", 16, "joiners connecting, DESCRIBing and SETUPing at once before they all PLAY together")
	flag.DurationVar(&o.baseline, "baseline", 5*time.Second, "warm-up with only the first reader of each camera; the daemon's RSS then is the baseline of RSS per reader")
	flag.DurationVar(&o.warmup, "warmup", 5*time.Second, "time between the joiners playing and the measured window")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "measured window")
	flag.IntVar(&o.pid, "pid", 0, "the daemon's process id (required: its CPU and memory are what is measured)")
	flag.IntVar(&o.simPID, "sim-pid", 0, "the simulator's process id, to show its CPU alongside (optional)")
	flag.StringVar(&o.clipDir, "clip-dir", "", "directory with the clip.h264 and clip.aac the simulator plays, to print its real bitrate (optional)")
	flag.StringVar(&o.pprofURL, "pprof", "", "URL of the daemon's CPU profile endpoint (net/http/pprof, e.g. http://127.0.0.1:2000/debug/pprof/profile); fetched over the window, skipped if the daemon exposes nothing there")
	flag.StringVar(&o.pprofOut, "pprof-out", "relaybench-daemon.cpu.pprof", "where to write the profile fetched with --pprof")
	flag.StringVar(&o.metricsURL, "metrics", "", "URL of the daemon's /metrics (e.g. http://127.0.0.1:2000/metrics), scraped at the window's start and end for the GC's share of its CPU; its bearer token is read from $NESTMTX_METRICS_TOKEN")
	flag.StringVar(&o.command, "command", "", "the command line that started the benchmark, printed with the results")
	flag.IntVar(&o.clkTck, "clk-tck", 0, "clock ticks per second of /proc/<pid>/stat (default: getconf CLK_TCK, else 100)")
	flag.DurationVar(&o.setupTimeout, "setup-timeout", 90*time.Second, "how long logging in, authorization and the camera sync may take")
	flag.Float64Var(&o.minReaderRatio, "min-reader-ratio", 0.95, "fail unless every reader received at least this share of the packets of its camera's best reader in the window")
	flag.BoolVar(&o.allowDisconnectedRdr, "allow-disconnects", false, "do not fail when a reader disconnects during the run or a joiner cannot join (both are counted and reported)")
	flag.StringVar(&o.camera, "camera", "", "the camera to serve, by name as `cameras list` shows it (e.g. \"Living Room\", the simulator's WebRTC camera) or by id; default: the first RTSP camera")
	flag.StringVar(&o.audio, "audio", "", "set the camera's audio before reading: opus, aac (a WebRTC camera's Opus made AAC by an ffmpeg child of the daemon), none, or default (the global camera_audio); empty leaves it as it is")
	flag.Parse()
	// The token comes from the environment so that it is in no command
	// line (ps, the report's "bench tool" line).
	o.metricsToken = os.Getenv("NESTMTX_METRICS_TOKEN")
	if o.pid <= 0 {
		fmt.Fprintln(os.Stderr, "nestmtx-relaybench: --pid (the daemon's process id) is required")
		os.Exit(2)
	}
	if o.readers <= 0 || o.cameras <= 0 || o.duration <= 0 || o.warmup < 0 || o.baseline < 0 {
		fmt.Fprintln(os.Stderr, "nestmtx-relaybench: --readers, --cameras and --duration must be positive, --warmup and --baseline not negative")
		os.Exit(2)
	}
	if o.camera != "" && o.cameras != 1 {
		fmt.Fprintln(os.Stderr, "nestmtx-relaybench: --camera names one camera; it does not go with --cameras")
		os.Exit(2)
	}
	switch o.audio {
	case "", "opus", "aac", "none", "default":
	default:
		fmt.Fprintf(os.Stderr, "nestmtx-relaybench: --audio must be opus, aac, none or default, not %q\n", o.audio)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "nestmtx-relaybench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.clkTck <= 0 {
		o.clkTck = clockTicks()
	}
	if _, err := readProcCPU(o.pid); err != nil {
		return fmt.Errorf("daemon pid %d: %w", o.pid, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.setupTimeout)
	defer cancel()

	// Peak RSS by phase: VmHWM is read, then reset (clear_refs 5), at each
	// phase's end, so that the streaming phases are not hidden by the
	// set-up's peak (argon2id logins, the OAuth flow).
	var mem phasePeaks
	mem.mark(o.pid, &mem.start)
	api, err := dialAPI(ctx, o)
	if err != nil {
		return err
	}
	defer api.close()
	cams, err := api.prepareCameras(ctx, o)
	if err != nil {
		return err
	}
	urls := make([]*base.URL, len(cams))
	for i, cam := range cams {
		fmt.Fprintf(os.Stderr, "camera %d %q (%s, %s, %s, audio %s) served at rtsp://%s/%s\n", cam.ID, cam.Name, cam.Resolution,
			strings.Join(append(slices.Clone(cam.CodecsVideo), cam.CodecsAudio...), "+"), strings.Join(cam.Protocols, "+"),
			cam.audioMode(), o.rtspAddr, cam.Path)
		// The readers log in as the API user, as Frigate does with its URL.
		u := (&url.URL{Scheme: "rtsp", User: url.UserPassword(o.user, o.password), Host: o.rtspAddr, Path: "/" + cam.Path}).String()
		if urls[i], err = base.ParseURL(u); err != nil {
			return err
		}
	}
	mem.mark(o.pid, &mem.setup)

	// The cold start: one reader per camera starts its stream.
	rs := &readers{}
	defer rs.close()
	if err := rs.coldStart(urls); err != nil {
		return err
	}
	mem.mark(o.pid, &mem.cold)
	if err := checkAudioTrack(o.audio, cams[0], rs.tracks); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d first reader(s) playing (tracks %s); %s with them alone\n", len(cams), strings.Join(rs.tracks, "+"), o.baseline)
	// The baseline: the first readers alone, once the set-up's garbage is
	// collected and its memory returned (the first half of the period).
	gcNote := "no GC asked (no --pprof)"
	if o.pprofURL != "" {
		gcNote = collectGarbage(o.pprofURL)
	}
	baseLo, baseHi := sampleRSS(o.pid, o.baseline, o.baseline/2, 100*time.Millisecond)
	if err := rs.err(); err != nil && !o.allowDisconnectedRdr {
		return fmt.Errorf("with the first readers alone: %w", err)
	}
	mem.mark(o.pid, &mem.baseline)

	// The joiners: connected and set up a few at a time, then PLAY at once.
	var js joinStats
	if o.readers > 1 {
		fmt.Fprintf(os.Stderr, "%d joiners connecting (%d at a time), then playing together\n", (o.readers-1)*len(cams), o.joinConcurrency)
		js = rs.join(urls, o.readers-1, o.joinConcurrency)
		if err := rs.joinErr(); err != nil && !o.allowDisconnectedRdr {
			return err
		}
	}
	mem.mark(o.pid, &mem.join)
	fmt.Fprintf(os.Stderr, "%d readers playing; warming up for %s\n", len(rs.list), o.warmup)
	time.Sleep(o.warmup)
	if err := rs.err(); err != nil && !o.allowDisconnectedRdr {
		return fmt.Errorf("during warm-up: %w", err)
	}
	mem.mark(o.pid, &mem.warmup)

	// The measured window.
	var prof *profileFetch
	if o.pprofURL != "" {
		prof = fetchProfile(o.pprofURL, o.duration, o.pprofOut)
	}
	fmt.Fprintf(os.Stderr, "measuring for %s\n", o.duration)
	var gcA, gcB goCPU
	var gcErr error
	if o.metricsURL != "" {
		gcA, gcErr = scrapeGoCPU(context.Background(), o.metricsURL, o.metricsToken)
	}
	before := snapshot(o, rs)
	rssLo, rssHi := sampleRSS(o.pid, o.duration, 0, 100*time.Millisecond)
	after := snapshot(o, rs)
	if o.metricsURL != "" && gcErr == nil {
		gcB, gcErr = scrapeGoCPU(context.Background(), o.metricsURL, o.metricsToken)
	}
	rerr := rs.err()

	mem.mark(o.pid, &mem.window)
	res := compute(o, before, after)
	res.cameras = cams
	res.mem = mem
	res.rssLo, res.rssHi = rssLo, rssHi
	res.tracks = rs.tracks
	res.join = js
	res.dropped, res.failed = rs.counts()
	res.coldT = timesOf(rs.list, false, func(r *reader) int64 { return r.startAt })
	res.joinT = timesOf(rs.list, true, func(r *reader) int64 { return r.playAt })
	res.joiners = len(res.joinT.firstPkt) + res.joinT.noPkt
	res.baseLo, res.baseRSS, res.baseNote = baseLo, baseHi, gcNote
	if res.joiners > 0 {
		res.rssPerReader = (float64(rssHi) - float64(baseHi)) / float64(res.joiners)
	}
	switch {
	case o.metricsURL == "":
		res.gcNote = "no --metrics"
	case gcErr != nil:
		res.gcNote = gcErr.Error()
	default:
		if f, ok := gcFraction(gcA, gcB); ok {
			res.gcFrac, res.gcCycles = f, gcB.cycles-gcA.cycles
		} else {
			res.gcNote = "the runtime counted no CPU between the scrapes"
		}
	}
	res.print(os.Stdout, o)
	if prof != nil {
		fmt.Fprintf(os.Stdout, "pprof:            %s\n", prof.wait())
	}
	if rerr != nil && !o.allowDisconnectedRdr {
		return rerr
	}
	if res.minRatio < o.minReaderRatio {
		return fmt.Errorf("readers received unequal amounts (least/best of a camera %.4f, min %.0f, max %.0f packets): some fell behind or lost packets",
			res.minRatio, res.minReaderPkts, res.maxReaderPkts)
	}
	if res.pktsPerSec == 0 {
		return errors.New("the readers received nothing in the window")
	}
	return nil
}
