package app

import (
	"os/exec"
	"strings"
	"testing"
)

// libraries are the packages that know protocols (Google's API, RTSP
// sources and relays, sockets) and nothing of the daemon: they may import
// each other but no application package, so that each can be used and
// tested alone.
var libraries = []string{"nest", "source", "relay", "framebatch", "netguard", "events", "secret", "password",
	"backoff", "redact", "tlsfiles", "transcode", "logstream", "memlimit"}

// applicationPackages are the daemon's own wiring and policy.
var applicationPackages = []string{"app", "api", "mqtt", "supervisor", "credentials", "store", "config",
	"login", "rtspserver", "nestsim", "testkit", "socketio", "httpapi", "hooks"}

const modulePrefix = "github.com/nestmtx/nestmtx/internal/"

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", modulePrefix+pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestDependencyGraph: the transport-neutral API and its MQTT binding do
// not pull in the RTSP stack, and the protocol libraries import no
// application package.
func TestDependencyGraph(t *testing.T) {
	t.Parallel()
	for _, pkg := range []string{"api", "mqtt", "credentials", "store", "socketio", "httpapi"} {
		for _, d := range deps(t, pkg) {
			if strings.Contains(d, "gortsplib") || d == modulePrefix+"relay" || d == modulePrefix+"supervisor" ||
				d == modulePrefix+"rtspserver" {
				t.Errorf("%s depends on %s: the API side must not reach the RTSP stack", pkg, d)
			}
		}
	}
	for _, lib := range libraries {
		for _, d := range deps(t, lib) {
			for _, a := range applicationPackages {
				if d == modulePrefix+a {
					t.Errorf("library %s imports application package %s", lib, a)
				}
			}
		}
	}
}
