package app

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/store"
)

// TestDemoKeepsToItsFolder: the demo's store is <data>/demo, never the
// real one; and a real start on a store an older demo wrote to removes the
// demo's credential and cameras, and nothing of the user's.
func TestDemoKeepsToItsFolder(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	demo, err := st.CreateCredential(store.Credential{Description: demoCredential, DACProjectID: nestsim.DefaultProjectID,
		OAuthClientID: "sim", OAuthClientSecret: "sim-secret"})
	if err != nil {
		t.Fatal(err)
	}
	real, err := st.CreateCredential(store.Credential{Description: "Home", DACProjectID: "real-project",
		OAuthClientID: "id", OAuthClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	// A credential named Demo but for a real project is the user's.
	named, err := st.CreateCredential(store.Credential{Description: demoCredential, DACProjectID: "another-project",
		OAuthClientID: "id2", OAuthClientSecret: "secret2"})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	a := startApp(t, func(c *config.Config) { c.DataDir = dir })
	if _, err := a.store.GetCredential(demo.ID); err == nil {
		t.Fatal("the demo's credential survived a real start")
	}
	for _, id := range []uint64{real.ID, named.ID} {
		if _, err := a.store.GetCredential(id); err != nil {
			t.Fatalf("credential %d of the user's is gone: %v", id, err)
		}
	}

	demoDir := t.TempDir()
	d := startApp(t, func(c *config.Config) { c.DataDir = demoDir; c.Demo = true })
	if _, err := os.Stat(store.DatabasePath(filepath.Join(demoDir, "demo"))); err != nil {
		t.Fatalf("the demo's store is not in its folder: %v", err)
	}
	if _, err := os.Stat(store.DatabasePath(demoDir)); err == nil {
		t.Fatal("the demo wrote a store in the real data directory")
	}
	_ = d
}
