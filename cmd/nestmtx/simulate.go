package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
)

// simulate runs the simulated Google (internal/nestsim) on its own, so that a
// daemon in another process can be pointed at it. It prints what the daemon
// needs on stdout, logs on stderr and runs until SIGINT or SIGTERM.
func simulate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nestmtx simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", "127.0.0.1:9080", "listen address (host:port) of the simulated OAuth and SDM endpoints")
	rtspsAddr := fs.String("rtsps", "127.0.0.1:9443", "listen address (host:port) of the simulated cameras' RTSPS server")
	publicHost := fs.String("public-host", "", "host put into the URLs the simulator hands out and into its certificate (default: the listen address, or 127.0.0.1 when it listens on all interfaces)")
	streamTTL := fs.Duration("stream-ttl", 5*time.Minute, "lifetime of a generated or extended stream session")
	accessTTL := fs.Duration("access-token-ttl", time.Hour, "lifetime of the OAuth access tokens")
	faultSpec := fs.String("faults", "", "faults to inject, a comma list: extend_fail, drop=<duration>, rate_limit (as NESTMTX_DEMO_FAULTS)")
	clockOffset := fs.Duration("clock-offset", 0, "run the simulator's clock (its Date headers and expiresAt values) ahead (positive) or behind (negative) by this much, as if the daemon's clock were off the other way")
	enforceQuota := fs.Bool("enforce-quota", false, "answer 429 beyond 10 executeCommand calls per minute, as Google's sandbox does")
	caFile := fs.String("ca-file", "./nestsim-ca.pem", "where to write the RTSPS server's CA certificate (PEM) for NESTMTX_GOOGLE_CA_FILE")
	clipDir := fs.String("clip-dir", "", "directory holding the clip every simulated camera plays instead of the built-in one: "+
		nestsim.ClipH264File+" (H.264 Annex-B elementary stream of at most 8 MiB with SPS/PPS in band, starting with an IDR, no B-frames) and "+
		nestsim.ClipAACFile+" (AAC-LC in ADTS), as described in testdata/README.md")
	rtspCameras := fs.Int("rtsp-cameras", defaultRTSPCameras(), "RTSP cameras to serve in all: fewer drops the last default ones, more adds cameras named \"Camera 3\", \"Camera 4\" … "+
		"(ids "+extraCameraID(3)+" …), all playing the same clip; the thermostat and the WebRTC camera stay")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: nestmtx simulate [flags]

Runs a simulated Google (OAuth consent and token endpoints, the Smart Device
Management API and RTSPS cameras) until SIGINT or SIGTERM, and prints the
settings a nestmtx daemon needs to use it.

It shares the RTSP doorbell "Front Door", the RTSP camera "Backyard", a
thermostat and a WebRTC camera in the "Living Room"; --rtsp-cameras N serves
N RTSP cameras instead (e.g. 8 for a load test: "Camera 3" to "Camera 8"
join the two).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "nestmtx simulate: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q", fs.Arg(0))
	}
	if *streamTTL <= 0 {
		return fail("--stream-ttl must be positive, got %s", *streamTTL)
	}
	if *accessTTL <= 0 {
		return fail("--access-token-ttl must be positive, got %s", *accessTTL)
	}
	faults, err := nestsim.ParseFaults(*faultSpec)
	if err != nil {
		return fail("--faults: %v", err)
	}
	if *caFile == "" {
		return fail("--ca-file must name a file")
	}
	caPath, err := filepath.Abs(*caFile)
	if err != nil {
		return fail("--ca-file: %v", err)
	}
	cameras, err := simulatedCameras(*rtspCameras)
	if err != nil {
		return fail("--rtsp-cameras: %v", err)
	}
	var clip *nestsim.Clip // nil plays the built-in clip
	if *clipDir != "" {
		clip, err = nestsim.LoadClipFiles(filepath.Join(*clipDir, nestsim.ClipH264File), filepath.Join(*clipDir, nestsim.ClipAACFile))
		if err != nil {
			return fail("--clip-dir: %v", err)
		}
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(log)

	// Signals are caught before anything starts, so a stop sent as soon as
	// the banner appears still closes the simulator cleanly.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)

	sim, err := nestsim.Start(nestsim.Options{
		HTTPAddress:    *httpAddr,
		RTSPSAddress:   *rtspsAddr,
		PublicHost:     *publicHost,
		AccessTokenTTL: *accessTTL,
		StreamTTL:      *streamTTL,
		EnforceQuota:   *enforceQuota,
		ClockOffset:    *clockOffset,
		Cameras:        cameras,
		Clip:           clip,
		Log:            log.With("component", "nestsim"),
	})
	if err != nil {
		log.Error("cannot start the simulator", "error", err)
		return 1
	}
	sim.Faults().Apply(faults)
	if err := sim.WriteCAFile(caPath); err != nil {
		log.Error("cannot write the CA certificate", "file", caPath, "error", err)
		sim.Close()
		return 1
	}
	printSimulateBanner(stdout, sim, caPath)
	log.Info("simulator running", "http", sim.HTTPAddress(), "rtsps", sim.RTSPSAddress(),
		"ca_file", caPath, "stream_ttl", streamTTL.String(), "access_token_ttl", accessTTL.String(),
		"faults", faults.String(), "enforce_quota", *enforceQuota, "clock_offset", clockOffset.String(), "rtsp_cameras", *rtspCameras)

	s := <-sig
	log.Info("shutting down", "signal", s.String())
	sim.Close()
	log.Info("stopped")
	return 0
}

// maxRTSPCameras bounds --rtsp-cameras: every camera is a player goroutine
// (parked while nobody streams it) and a device in every list answer.
const maxRTSPCameras = 256

// defaultRTSPCameras is how many RTSP cameras nestsim.DefaultCameras has.
func defaultRTSPCameras() int {
	n := 0
	for _, d := range nestsim.DefaultCameras() {
		if slices.Contains(d.Protocols, nestsim.ProtocolRTSP) {
			n++
		}
	}
	return n
}

// extraCameraID is the id of the added RTSP camera "Camera <n>": stable, so
// that a daemon restarted against a new simulator finds the same cameras.
func extraCameraID(n int) string { return fmt.Sprintf("AVPHwEuSimCamera%03d", n) }

// simulatedCameras is the device list for --rtsp-cameras n: nil (the
// simulator's defaults) when n is their count; else the defaults with the
// RTSP cameras beyond the nth left out, or with "Camera 3", "Camera 4" …
// (numbered on from the defaults) appended after them.
func simulatedCameras(n int) ([]nestsim.Device, error) {
	if n < 0 || n > maxRTSPCameras {
		return nil, fmt.Errorf("must be between 0 and %d, got %d", maxRTSPCameras, n)
	}
	def := defaultRTSPCameras()
	if n == def {
		return nil, nil
	}
	var out []nestsim.Device
	rtsp := 0
	for _, d := range nestsim.DefaultCameras() {
		if slices.Contains(d.Protocols, nestsim.ProtocolRTSP) {
			if rtsp++; rtsp > n {
				continue
			}
		}
		out = append(out, d)
	}
	for i := def + 1; i <= n; i++ {
		out = append(out, nestsim.Device{ID: extraCameraID(i), CustomName: fmt.Sprintf("Camera %d", i),
			Room: fmt.Sprintf("Room %d", i), Type: nestsim.TypeCamera, Protocols: []string{nestsim.ProtocolRTSP}})
	}
	return out, nil
}

// printSimulateBanner prints the daemon's environment as lines that can be
// pasted into a shell (with export or set -a) or an EnvironmentFile; every
// other line is a comment, so the whole output can be pasted.
func printSimulateBanner(w io.Writer, sim *nestsim.Sim, caPath string) {
	payload, _ := json.Marshal(struct {
		Description  string `json:"description"`
		ClientID     string `json:"oauth_client_id"`
		ClientSecret string `json:"oauth_client_secret"`
		ProjectID    string `json:"dac_project_id"`
	}{"Simulated Google", sim.ClientID(), sim.ClientSecret(), sim.ProjectID()})
	var b strings.Builder
	b.WriteString("# Simulated Google is running. Start the daemon with this environment:\n")
	for _, kv := range [][2]string{
		{"NESTMTX_GOOGLE_AUTH_URL", sim.AuthURL()},
		{"NESTMTX_GOOGLE_TOKEN_URL", sim.TokenURL()},
		{"NESTMTX_GOOGLE_SDM_URL", sim.SDMURL()},
		{"NESTMTX_GOOGLE_CA_FILE", caPath},
	} {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	b.WriteString("#\n# Then create a credential (credentials create) with this OAuth client and Device Access project:\n")
	fmt.Fprintf(&b, "#   oauth_client_id:     %s\n", sim.ClientID())
	fmt.Fprintf(&b, "#   oauth_client_secret: %s\n", sim.ClientSecret())
	fmt.Fprintf(&b, "#   dac_project_id:      %s\n", sim.ProjectID())
	fmt.Fprintf(&b, "# payload: %s\n", payload)
	b.WriteString("#\n# Consent: credentials update {\"redirect_uri\": \"http://<daemon http address>/oauth/callback\"} returns a URL;\n")
	b.WriteString("# open it and the simulator consents at once and redirects to the daemon, which then syncs the cameras.\n")
	io.WriteString(w, b.String())
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+,=-]+$`)

// shellQuote leaves plain values bare and single-quotes the rest, which both
// POSIX shells and systemd's EnvironmentFile understand.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
