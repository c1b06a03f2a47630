//go:build linux

package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/store"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// fillDisk writes dir/filler until the file system answers ENOSPC and
// returns a function that frees the space again.
func fillDisk(t *testing.T, dir string) (free func()) {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, 64<<10)
	for {
		if _, err := f.Write(buf); errors.Is(err, syscall.ENOSPC) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	return func() {
		t.Helper()
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
}

type healthz struct {
	status int
	body   string
	report struct {
		Healthy string `json:"healthy"`
		Details map[string]struct {
			Healthy *bool          `json:"healthy"`
			Meta    map[string]any `json:"meta"`
		} `json:"details"`
	}
}

func getHealthz(t *testing.T, a *App) healthz {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.HTTPAddr()+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	h := healthz{status: resp.StatusCode, body: string(b)}
	if err := json.Unmarshal(b, &h.report); err != nil {
		t.Fatalf("healthz %d %s: %v", resp.StatusCode, b, err)
	}
	return h
}

// A disk that fills makes health degraded with the reason, with nobody
// writing, and health heals by itself once space is freed.
func TestDiskFullHealth(t *testing.T) {
	root := testkit.SmallDisk(t, 4<<20)
	dataDir := filepath.Join(root, "data")
	var logs testkit.SyncBuffer
	a := startAppWith(t, func(c *config.Config) { c.DataDir = dataDir }, func(a *App) {
		a.Store().SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
		a.Store().SetWriteProbeInterval(20 * time.Millisecond)
		// No Google credential here, which alone makes health degraded:
		// only the store's verdict is under test.
		a.health.Register("setup", func(context.Context) api.Check { return api.OK(nil) })
	})
	var h healthz
	testkit.Eventually(t, 10*time.Second, "health to be healthy", func() bool {
		h = getHealthz(t, a)
		return h.report.Healthy == api.Healthy
	})

	free := fillDisk(t, root)
	testkit.Eventually(t, 10*time.Second, "health to notice the full disk", func() bool {
		h = getHealthz(t, a)
		return h.report.Healthy != api.Healthy
	})
	st := h.report.Details["store"]
	if h.status != http.StatusOK || h.report.Healthy != api.Degraded || st.Healthy != nil ||
		st.Meta["error"] != "the database cannot be written: no space left on device" || st.Meta["failing_since"] == nil {
		t.Fatalf("healthz on a full disk = %d %s", h.status, h.body)
	}
	if strings.Contains(h.body, root) {
		t.Errorf("healthz names the data directory: %s", h.body)
	}
	// A change cannot be saved (a value larger than any page the database
	// could reuse), and health still says why.
	_, err := a.Store().CreateCredential(store.Credential{Description: strings.Repeat("x", 256<<10)})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("CreateCredential on a full disk = %v, want ENOSPC", err)
	}
	if h = getHealthz(t, a); h.report.Details["store"].Meta["error"] != "the database cannot be written: no space left on device" {
		t.Fatalf("healthz after a failed write = %s", h.body)
	}

	free()
	testkit.Eventually(t, 10*time.Second, "health to notice the freed space", func() bool {
		h = getHealthz(t, a)
		return h.report.Healthy == api.Healthy
	})
	if st := h.report.Details["store"]; st.Healthy == nil || !*st.Healthy || st.Meta["error"] != nil {
		t.Fatalf("healthz after space was freed = %s", h.body)
	}
	if _, err := a.Store().CreateCredential(store.Credential{Description: strings.Repeat("x", 256<<10)}); err != nil {
		t.Fatalf("CreateCredential after space was freed: %v", err)
	}
	log := logs.String()
	if strings.Count(log, "level=WARN") != 1 || strings.Count(log, "level=INFO") != 1 ||
		!strings.Contains(log, `reason="no space left on device"`) || !strings.Contains(log, "the database can be written again") {
		t.Errorf("want one WARN and one INFO line, logged:\n%s", log)
	}
}

// A first start on a full disk fails with a clear error and leaves no
// database; the next start, with space, works.
func TestDiskFullFirstStart(t *testing.T) {
	root := testkit.SmallDisk(t, 4<<20)
	dataDir := filepath.Join(root, "data")
	free := fillDisk(t, root)

	cfg := config.Defaults()
	cfg.DataDir = dataDir
	cfg.HTTPAddress, cfg.MQTTListen, cfg.RTSPAddress, cfg.RTSPUDPAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.AdminPassword = adminPassword
	a, err := New(cfg, testLogger(), versionForTests)
	if err == nil {
		a.Shutdown(context.Background())
		t.Fatal("New on a full disk succeeded")
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.HasPrefix(err.Error(), "create database "+store.DatabasePath(dataDir)+": ") ||
		!strings.HasSuffix(err.Error(), ": no space left on device") {
		t.Errorf("New on a full disk = %q; want it to name the database and the cause", err)
	}
	entries, _ := os.ReadDir(dataDir)
	for _, e := range entries {
		if strings.Contains(e.Name(), "nestmtx.db") {
			t.Errorf("the failed start left %s", e.Name())
		}
	}
	if _, err := os.Stat(store.DatabasePath(dataDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("nestmtx.db after the failed start: %v", err)
	}

	free()
	a = startApp(t, func(c *config.Config) { c.DataDir = dataDir })
	if n, err := a.Store().CountUsers(); err != nil || n != 1 {
		t.Fatalf("users after the second start: %d, %v", n, err)
	}
	if _, err := a.Store().Authenticate("admin", adminPassword); err != nil {
		t.Fatalf("admin login after the second start: %v", err)
	}
	if h := getHealthz(t, a); h.report.Details["store"].Healthy == nil || !*h.report.Details["store"].Healthy {
		t.Fatalf("healthz after the second start = %s", h.body)
	}
}
