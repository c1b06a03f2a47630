// Command nestmtx-soak runs the real daemon for a long time against a
// simulated Google with injected faults and readers that come and go, and
// checks that nothing leaks, stalls or breaks Google's quota. It is not run
// in CI: scripts/soak.sh builds the daemon and this tool and runs it (an
// hour by default; --duration 3m for a smoke run).
//
// The simulated Google (internal/nestsim) runs in this process, so that its
// call log can be read and its faults switched on and off on a fixed,
// printed schedule. The daemon is a subprocess on free loopback ports,
// authorized through its MQTT API as a user would. Readers are gortsplib
// clients over TCP; every reader records the gaps in its packets, checks
// sequence numbers and timestamps per SSRC, and notices SSRC changes.
//
// Output: the schedule, one line per minute, then a summary. The exit code is
// 1 when an invariant broke (more than 10 executeCommand calls in a rolling
// minute, an RTP timestamp going backwards, a reader that could not connect
// outside an injected fault's window, the daemon dying), 2 on a setup error.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
)

type options struct {
	daemon       string
	workDir      string
	duration     time.Duration
	streamTTL    time.Duration
	seed         uint64
	warmupMinute int
	enforceQuota bool
	incidents    bool
	readTimeout  time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.daemon, "daemon", "", "path of the nestmtx binary to run (required; scripts/soak.sh builds it)")
	flag.StringVar(&o.workDir, "work-dir", "", "directory for the daemon's data, its log, the CA file and incidents.log (default: a new temporary directory)")
	flag.DurationVar(&o.duration, "duration", time.Hour, "how long to soak once the cameras are set up")
	flag.DurationVar(&o.streamTTL, "stream-ttl", 60*time.Second, "lifetime of the simulated Google stream sessions")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the readers' come-and-go schedule")
	flag.IntVar(&o.warmupMinute, "warmup-minute", 2, "the minute whose sample is the baseline of the leak figures")
	flag.BoolVar(&o.enforceQuota, "enforce-quota", true, "make the simulator answer 429 beyond 10 executeCommand calls a rolling minute, as Google does")
	flag.BoolVar(&o.incidents, "incidents", false, "also print every incident (gap, failed connect, notReady...) on stdout; they always go to <work-dir>/incidents.log")
	flag.DurationVar(&o.readTimeout, "reader-timeout", 25*time.Second, "a reader's RTSP read timeout: how long it waits for an answer (longer than the daemon's 20 s start timeout, so that a held DESCRIBE gets the daemon's verdict) and for packets while playing")
	flag.Parse()
	if o.daemon == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: nestmtx-soak --daemon <path of nestmtx> [--duration 1h] [flags]")
		flag.PrintDefaults()
		os.Exit(2)
	}
	if o.duration < time.Minute {
		fmt.Fprintln(os.Stderr, "nestmtx-soak: --duration must be at least 1m")
		os.Exit(2)
	}
	os.Exit(run(o))
}

func run(o options) int {
	daemonPath, err := filepath.Abs(o.daemon)
	if err != nil {
		return setupFail("--daemon: %v", err)
	}
	o.daemon = daemonPath
	if o.workDir == "" {
		if o.workDir, err = os.MkdirTemp("", "nestmtx-soak-"); err != nil {
			return setupFail("%v", err)
		}
	}
	if err := os.MkdirAll(o.workDir, 0o755); err != nil {
		return setupFail("%v", err)
	}
	incidents, err := os.Create(filepath.Join(o.workDir, "incidents.log"))
	if err != nil {
		return setupFail("%v", err)
	}
	defer incidents.Close()
	simLog, err := os.Create(filepath.Join(o.workDir, "nestsim.log"))
	if err != nil {
		return setupFail("%v", err)
	}
	defer simLog.Close()

	tracker := newSimTracker(slog.NewTextHandler(simLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sim, err := nestsim.Start(nestsim.Options{
		Cameras:      soakCameras(),
		StreamTTL:    o.streamTTL,
		EnforceQuota: o.enforceQuota,
		Log:          slog.New(tracker),
	})
	if err != nil {
		return setupFail("starting the simulator: %v", err)
	}
	defer sim.Close()
	caFile := filepath.Join(o.workDir, "nestsim-ca.pem")
	if err := sim.WriteCAFile(caFile); err != nil {
		return setupFail("%v", err)
	}

	h := newHarness(o, sim, incidents)
	h.simSt = tracker.st
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	fmt.Printf("# nestmtx-soak: duration %s, stream TTL %s, seed %d, enforce quota %v\n", o.duration, o.streamTTL, o.seed, o.enforceQuota)
	fmt.Printf("# daemon %s, work dir %s\n", o.daemon, o.workDir)
	fmt.Printf("# simulator: http %s, rtsps %s\n", sim.HTTPAddress(), sim.RTSPSAddress())

	if err := h.startDaemon(caFile); err != nil {
		h.stopDaemon()
		return setupFail("starting the daemon: %v (log: %s)", err, h.daemonLogPath)
	}
	setupCtx, cancel := context.WithTimeout(sigCtx, 2*time.Minute)
	err = h.setup(setupCtx)
	cancel()
	if err != nil {
		h.stopDaemon()
		return setupFail("setting the daemon up: %v (log: %s)", err, h.daemonLogPath)
	}

	h.soak(sigCtx)
	code := h.stopDaemon()
	sim.Close()
	return h.summary(code)
}

// soakCameras are five RTSP cameras with stable ids.
func soakCameras() []nestsim.Device {
	var cams []nestsim.Device
	for i := 1; i <= numCameras; i++ {
		cams = append(cams, nestsim.Device{
			ID:         soakDeviceID(i),
			CustomName: fmt.Sprintf("Soak %d", i),
			Room:       fmt.Sprintf("Room %d", i),
			Type:       nestsim.TypeCamera,
			Protocols:  []string{nestsim.ProtocolRTSP},
		})
	}
	return cams
}

const numCameras = 5

func soakDeviceID(i int) string { return fmt.Sprintf("AVPHwEuSoakCamera%02d", i) }

func setupFail(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "nestmtx-soak: "+format+"\n", a...)
	return 2
}

// sleepCtx sleeps d or until ctx ends; it reports whether the full time passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// fmtOffset renders an offset from the soak's start as +mm:ss.
func fmtOffset(d time.Duration) string {
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	d = d.Round(time.Second)
	return fmt.Sprintf("%s%02d:%02d", sign, int(d/time.Minute), int(d%time.Minute/time.Second))
}
