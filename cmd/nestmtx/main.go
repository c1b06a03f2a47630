// Command nestmtx turns Google Nest cameras into on-demand RTSP streams and
// serves its API and events over MQTT v5.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/app"
	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/memlimit"
)

// Set at build time with -ldflags "-X main.release=... -X main.commit=...".
var (
	release = "dev"
	commit  = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "simulate":
		return simulate(args[1:], stdout, stderr)
	case "admin":
		return admin(args[1:], os.LookupEnv, os.Stdin, stdout, stderr)
	case "login":
		return login(args[1:], os.LookupEnv, os.Stdin, stdout, stderr)
	case "healthcheck":
		return healthcheck(args[1:], os.LookupEnv, stdout, stderr)
	case "version", "--version", "-v":
		v := api.NewVersionInfo(release, commit)
		fmt.Fprintf(stdout, "nestmtx %s (commit %s, %s, %s)\n", v.Release, v.Commit, v.Go, v.Platform)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "nestmtx: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: nestmtx <command> [flags]

Commands:
  serve     run the daemon (nestmtx serve --help lists its settings)
  simulate  run a simulated Google (OAuth, SDM API, RTSPS cameras) for a daemon
            to use, and print the settings it needs (nestmtx simulate --help)
  admin     offline maintenance on the data directory, with the daemon stopped:
            admin reset-password USER gives USER a new password (nestmtx admin --help)
  login     sign a Google credential in from a headless box: talks to the running
            daemon, prints Google's sign-in address, and takes back the address
            the browser ends on (nestmtx login --help)
  healthcheck
            exit 0 if the daemon answers GET /healthz with 200, 1 otherwise
            (a container's HEALTHCHECK; nestmtx healthcheck --help)
  version   print the version
`)
}

func serve(args []string, stderr io.Writer) int {
	cfg, err := config.Load(args, os.LookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "nestmtx:", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	slog.SetDefault(log)
	if os.Getenv("GOMEMLIMIT") == "" {
		// A soft limit that follows the live heap (internal/memlimit): the
		// GC returns memory to the NAS sooner instead of letting the heap
		// double after a burst, but never runs without pause because the
		// limit sits below what the daemon needs. GOMEMLIMIT overrides it.
		go memlimit.Default.Run(context.Background())
	}

	a, err := app.New(cfg, log, api.NewVersionInfo(release, commit))
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	if err := a.Start(); err != nil {
		log.Error("cannot start", "error", err)
		_ = a.Shutdown(context.Background())
		return 1
	}

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	log.Info("shutting down", "signal", s.String())
	// NESTMTX_SHUTDOWN_TIMEOUT (8 s) bounds the stop; a second later the
	// process exits regardless, still inside the unit's TimeoutStopSec=10s,
	// so systemd never has to SIGKILL it.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			log.Warn("shutdown finished with errors", "error", err)
		}
		log.Info("stopped")
		return 0
	case <-sig:
		log.Warn("second signal: exiting without finishing the shutdown")
		return 1
	case <-time.After(cfg.ShutdownTimeout + time.Second):
		log.Error("shutdown did not finish in time; exiting")
		return 1
	}
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
