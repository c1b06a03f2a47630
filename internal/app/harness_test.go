package app

import (
	"context"
	"github.com/eclipse/paho.golang/paho"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

const adminPassword = "correct horse battery"

// testLogger keeps test output readable; NESTMTX_TEST_LOG=1 shows the daemon's log.
func testLogger() *slog.Logger {
	if os.Getenv("NESTMTX_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startApp runs a daemon in this process on free loopback ports.
func startApp(t testing.TB, mutate func(*config.Config)) *App {
	return startAppWith(t, mutate, nil)
}

// startAppWith also lets the test adjust the App before it starts.
func startAppWith(t testing.TB, mutate func(*config.Config), adjust func(*App)) *App {
	t.Helper()
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddress = "127.0.0.1:0"
	cfg.MQTTListen = "127.0.0.1:0"
	cfg.RTSPAddress = "127.0.0.1:0"
	cfg.RTSPUDPAddress = ""
	cfg.AdminPassword = adminPassword
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := New(cfg, testLogger(), api.NewVersionInfo("test", "abc123"))
	if err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(a)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return a
}

// client connects a test client and a request/response helper to addr.
func client(t testing.TB, addr, base string) (*testkit.Client, *testkit.RR) {
	t.Helper()
	c := testkit.Dial(t, addr, "admin", adminPassword)
	rr, err := c.NewRR(base + "/requests")
	if err != nil {
		t.Fatal(err)
	}
	return c, rr
}

// seedCamera adds a camera row the way Google device sync will.
func seedCamera(t testing.TB, a *App, name string) store.Camera {
	t.Helper()
	creds, err := a.Store().ListCredentials()
	if err != nil {
		t.Fatal(err)
	}
	var credID uint64
	if len(creds) > 0 {
		credID = creds[0].ID
	} else {
		c, err := a.Store().CreateCredential(store.Credential{Description: "seed", OAuthClientID: "id",
			OAuthClientSecret: "seed-secret", DACProjectID: "project"})
		if err != nil {
			t.Fatal(err)
		}
		credID = c.ID
	}
	cam, err := a.Store().UpsertCamera(credID, "enterprises/project/devices/"+name, func(c *store.Camera, isNew bool) error {
		c.Name, c.Room, c.Type = name, "Hall", "sdm.devices.types.CAMERA"
		c.Protocols, c.CodecsVideo, c.CodecsAudio = []string{"RTSP"}, []string{"H264"}, []string{"AAC"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a.cameras.CameraChanged(cam) // as sync will announce a new camera
	return cam
}

// req builds a request map.
func req(command, module string, kv ...any) map[string]any {
	m := map[string]any{"command": command, "module": module}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

type pahoPublish = paho.Publish

var versionForTests = api.NewVersionInfo("test", "abc123")
