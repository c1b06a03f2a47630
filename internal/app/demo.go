package app

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/nestmtx/nestmtx/internal/nest"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/store"
)

// demoCredential is the description the demo's credential is found by.
const demoCredential = "Demo"

// demoPaths are the paths the demo's cameras are served at, by simulated
// device: two RTSP cameras, a WebRTC-only camera and a WebRTC battery
// doorbell (which refuses extensions), so a new user sees every kind.
var demoPaths = []struct{ device, path string }{
	{nestsim.FrontDoorID, "front-door"},
	{nestsim.BackyardID, "backyard"},
	{nestsim.LivingRoomID, "living-room"},
	{nestsim.BatteryDoorbellID, "porch"},
}

// startDemo runs the simulated Google in this process and returns where
// it is, for the daemon to use instead of Google, so a new user sees
// streams at once. The configuration is left as the user gave it.
func (a *App) startDemo() (googleSide, error) {
	faults, err := nestsim.ParseFaults(a.cfg.DemoFaults)
	if err != nil {
		return googleSide{}, fmt.Errorf("NESTMTX_DEMO_FAULTS: %w", err)
	}
	sim, err := nestsim.Start(nestsim.Options{StreamTTL: a.cfg.DemoStreamTTL, Log: a.log.With("component", "nestsim"),
		Cameras: append(nestsim.DefaultCameras(), nestsim.BatteryDoorbell())})
	if err != nil {
		return googleSide{}, fmt.Errorf("demo: %w", err)
	}
	a.sim = sim
	sim.Faults().Apply(faults)
	side := googleSide{Endpoints: nest.Endpoints{AuthURL: sim.AuthURL(), TokenURL: sim.TokenURL(), SDMURL: sim.SDMURL()},
		CAFile: filepath.Join(a.cfg.DataDir, "demo-ca.pem")}
	if err := sim.WriteCAFile(side.CAFile); err != nil {
		return googleSide{}, fmt.Errorf("demo: %w", err)
	}

	// The simulator forgets its tokens when the process ends, so the demo
	// credential gets a fresh refresh token at every start.
	creds, err := a.store.ListCredentials()
	if err != nil {
		return googleSide{}, err
	}
	now := time.Now().UTC()
	setup := func(c *store.Credential) error {
		c.OAuthClientID, c.OAuthClientSecret, c.DACProjectID = sim.ClientID(), sim.ClientSecret(), sim.ProjectID()
		c.RefreshToken, c.AccessToken, c.TokenExpiry = sim.IssueRefreshToken(), "", time.Time{}
		c.AuthenticatedAt = &now
		return nil
	}
	for _, c := range creds {
		if c.Description == demoCredential {
			_, err := a.store.UpdateCredential(c.ID, setup)
			a.demoCredentialID = c.ID
			return side, err
		}
	}
	var c store.Credential
	c.Description = demoCredential
	if err := setup(&c); err != nil {
		return googleSide{}, err
	}
	c, err = a.store.CreateCredential(c)
	a.demoCredentialID = c.ID
	return side, err
}

// finishDemo syncs the demo cameras and serves them at their demo paths,
// unless the user has configured them already.
func (a *App) finishDemo() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := a.creds.Sync(ctx, a.demoCredentialID); err != nil {
		return fmt.Errorf("demo: syncing the simulated cameras: %w", err)
	}
	cams, err := a.store.ListCameras()
	if err != nil {
		return err
	}
	urls := []any{}
	for _, c := range cams {
		if c.CredentialID != a.demoCredentialID {
			continue
		}
		for _, d := range demoPaths {
			if !strings.HasSuffix(c.UID, "/devices/"+d.device) {
				continue
			}
			// The URLs name the login to use, never its password.
			urls = append(urls, d.path, "rtsp://admin:PASSWORD@"+a.RTSPAddr()+"/"+d.path)
			if c.Path != "" {
				continue
			}
			updated, err := a.store.UpdateCamera(c.ID, func(c *store.Camera) error {
				c.Path, c.IsEnabled = d.path, true
				return nil
			})
			if err != nil {
				return fmt.Errorf("demo: serving %s at %s: %w", c.Name, d.path, err)
			}
			a.cameras.CameraChanged(updated)
		}
	}
	a.log.Info("demo cameras ready", append(urls, "stream_ttl", a.cfg.DemoStreamTTL.String(),
		"faults", a.cfg.DemoFaults)...)
	return nil
}

// DemoDataDir is where `serve --demo` keeps its store: a folder of its own
// under the data directory.
func DemoDataDir(dataDir string) string { return filepath.Join(dataDir, "demo") }

// forgetDemoData removes, from a real install's store, the demo's credential
// and cameras that releases before the demo had its own folder left there:
// the real daemon would refresh the simulator's token against Google and
// list cameras that do not exist. They are recognised by the demo's
// credential name and the simulator's project id together, so nothing a
// user set up is touched; what goes is said in the log.
func forgetDemoData(st *store.Store, dataDir string, log *slog.Logger) error {
	creds, err := st.ListCredentials()
	if err != nil {
		return err
	}
	for _, c := range creds {
		if c.Description != demoCredential || c.DACProjectID != nestsim.DefaultProjectID {
			continue
		}
		if err := st.DeleteCredential(c.ID); err != nil {
			return fmt.Errorf("removing the demo's data from %s: %w", dataDir, err)
		}
		log.Warn("removed the demo's simulated credential and its cameras from the store: the demo keeps its data in its own folder now",
			"credential_id", c.ID, "demo_data_dir", DemoDataDir(dataDir))
	}
	return nil
}
