package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// adminPasswordIn returns the NESTMTX_ADMIN_PASSWORD a test starts the
// daemon with ("" when the daemon generates one).
func adminPasswordIn(env []string) string {
	pass := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "NESTMTX_ADMIN_PASSWORD="); ok {
			pass = v
		}
	}
	return pass
}

// generatedAdminPassword reads the password the first start generated.
func generatedAdminPassword(t testing.TB, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "initial-admin-password"))
	if err != nil {
		t.Fatalf("no admin password to log in with: %v", err)
	}
	return strings.TrimSpace(string(b))
}
