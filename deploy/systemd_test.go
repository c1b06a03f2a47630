package deploy

import (
	"bufio"
	"bytes"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

const (
	unitFile   = "nestmtx.service"
	envExample = "nestmtx.env.example"
	// credDir is where systemd puts the unit's credentials (%d) for a
	// system service named nestmtx.service.
	credDir = "/run/credentials/nestmtx.service/"
	// maxExposure is systemd-analyze security's "OK" bound.
	maxExposure = 2.0
)

// unitDirectives reads a unit file's [Service] directives, each key with
// its values in order (a key may repeat).
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not key=value", path, line)
			}
			out[k] = append(out[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestUnitSecurity rates the unit's sandbox with systemd-analyze, offline:
// 2.0 or less is its "OK" (the unit shipped at 8.3 "EXPOSED" before).
func TestUnitSecurity(t *testing.T) {
	sa := testkit.RequireTool(t, "systemd-analyze", "systemd")
	out, err := exec.Command(sa, "security", "--offline=yes", "--threshold=20", "--no-pager", unitFile).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for nestmtx\.service: (\d+\.\d+) (\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no overall exposure level (%v):\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: %s %s", m[1], m[2])
	if score > maxExposure || err != nil {
		var failed []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "✗") {
				failed = append(failed, l)
			}
		}
		t.Fatalf("exposure %s %s (exit: %v), want at most %.1f; not passed:\n%s", m[1], m[2], err, maxExposure, strings.Join(failed, "\n"))
	}
}

// TestUnitVerify runs systemd-analyze verify, which warns about unknown
// keys and bad values (and still exits 0: any output fails the test). It
// needs ExecStart's program to exist, so it checks a copy whose ExecStart
// names this test's own binary.
func TestUnitVerify(t *testing.T) {
	sa := testkit.RequireTool(t, "systemd-analyze", "systemd")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	const exec0 = "ExecStart=/usr/local/bin/nestmtx serve\n"
	if !bytes.Contains(unit, []byte(exec0)) {
		t.Fatalf("%s has no line %q", unitFile, exec0)
	}
	copyPath := filepath.Join(t.TempDir(), unitFile)
	unit = bytes.Replace(unit, []byte(exec0), []byte("ExecStart="+self+" serve\n"), 1)
	if err := os.WriteFile(copyPath, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", "--recursive-errors=no", copyPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitSettings checks the unit against the daemon: the stop timeout
// covers the daemon's own shutdown bound, each credential has its fallback
// and its *_FILE variable in the env example, and the sandbox keeps what
// the daemon needs.
func TestUnitSettings(t *testing.T) {
	d := unitDirectives(t, unitFile)
	one := func(k string) string {
		t.Helper()
		if len(d[k]) != 1 {
			t.Fatalf("%s: %s= is set %d times, want once", unitFile, k, len(d[k]))
		}
		return d[k][0]
	}

	if got := one("ExecStart"); got != "/usr/local/bin/nestmtx serve" {
		t.Errorf("ExecStart=%s", got)
	}
	// The daemon's stop takes NESTMTX_SHUTDOWN_TIMEOUT and it exits a second
	// later regardless; systemd must not SIGKILL it first.
	stop, err := time.ParseDuration(one("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if bound := config.Defaults().ShutdownTimeout + time.Second; stop <= bound {
		t.Errorf("TimeoutStopSec=%s, want more than the daemon's %s (NESTMTX_SHUTDOWN_TIMEOUT + 1 s)", stop, bound)
	}
	if one("DynamicUser") != "yes" || one("StateDirectory") != "nestmtx" {
		t.Errorf("want DynamicUser=yes and StateDirectory=nestmtx")
	}
	if got := d["Environment"]; len(got) != 1 || got[0] != "NESTMTX_DATA_DIR=/var/lib/nestmtx" {
		t.Errorf("Environment=%q, want NESTMTX_DATA_DIR=/var/lib/nestmtx alone (other settings go in the env file)", got)
	}
	if got := one("EnvironmentFile"); got != "-/etc/nestmtx/nestmtx.env" {
		t.Errorf("EnvironmentFile=%s", got)
	}
	// pion's ICE lists interfaces over netlink; without AF_NETLINK WebRTC
	// cameras would find no local address.
	fams := strings.Fields(one("RestrictAddressFamilies"))
	for _, f := range []string{"AF_INET", "AF_INET6", "AF_NETLINK"} {
		if !contains(fams, f) {
			t.Errorf("RestrictAddressFamilies=%v lacks %s", fams, f)
		}
	}

	// Credentials: each LoadCredential= has a SetCredential= fallback (a
	// missing file would stop the unit: 243/CREDENTIALS), and its *_FILE
	// setting in the env example points at the copy systemd makes.
	set := map[string]bool{}
	for _, v := range d["SetCredential"] {
		id, _, _ := strings.Cut(v, ":")
		set[id] = true
	}
	envLines := envExampleLines(t)
	fileSettings := map[string]string{} // env var -> credential id
	for _, v := range d["LoadCredential"] {
		id, path, ok := strings.Cut(v, ":")
		if !ok || path != "/etc/nestmtx/"+id {
			t.Errorf("LoadCredential=%s, want <id>:/etc/nestmtx/<id>", v)
		}
		if !set[id] {
			t.Errorf("LoadCredential=%s has no SetCredential=%s: fallback: the unit would not start without the file", v, id)
		}
		found := false
		for _, l := range envLines {
			if l.value == credDir+id {
				found = true
				fileSettings[l.name] = id
			}
		}
		if !found {
			t.Errorf("%s names no variable with %s%s", envExample, credDir, id)
		}
	}
	// Every secret the daemon reads from a file is offered as a credential.
	for _, s := range config.Settings() {
		if strings.HasSuffix(s.YAMLKey, "_password_file") || strings.HasSuffix(s.YAMLKey, "_token_file") {
			if _, ok := fileSettings[s.Env[0]]; !ok {
				t.Errorf("%s (%s) has no credential in the unit and %s", s.YAMLKey, s.Env[0], envExample)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

type envLine struct {
	line        int
	name, value string
	commented   bool
}

var envLineRE = regexp.MustCompile(`^(#?)([A-Z][A-Z0-9_]*)=(.*)$`)

// envExampleLines are the env example's assignments, commented out or not.
func envExampleLines(t *testing.T) []envLine {
	t.Helper()
	b, err := os.ReadFile(envExample)
	if err != nil {
		t.Fatal(err)
	}
	var out []envLine
	for i, l := range strings.Split(string(b), "\n") {
		if m := envLineRE.FindStringSubmatch(l); m != nil {
			out = append(out, envLine{line: i + 1, commented: m[1] == "#", name: m[2], value: m[3]})
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no NESTMTX_* lines", envExample)
	}
	return out
}

// envOf is an environment lookup holding only kv.
func envOf(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := kv[k]
		return v, ok
	}
}

// TestEnvExample checks that each variable the env example shows is a
// setting of the daemon, with a value it accepts.
func TestEnvExample(t *testing.T) {
	known := map[string]bool{}
	for _, s := range config.Settings() {
		for _, e := range s.Env {
			known[e] = true
		}
	}
	for _, l := range envExampleLines(t) {
		if !known[l.name] {
			t.Errorf("%s:%d: %s is not a setting of the daemon", envExample, l.line, l.name)
			continue
		}
		// systemd's EnvironmentFile= takes the value as written, quotes
		// aside; the examples need none.
		if strings.ContainsAny(l.value, `"'\$`) {
			t.Errorf("%s:%d: %s's value %q needs quoting rules: keep examples plain", envExample, l.line, l.name, l.value)
		}
		if _, err := config.LoadOffline(nil, envOf(map[string]string{l.name: l.value}), io.Discard); err != nil {
			t.Errorf("%s:%d: %s=%s: %v", envExample, l.line, l.name, l.value, err)
		}
	}
}

// TestMakeInstall runs `make install DESTDIR=...` twice: files, modes, the
// env file kept on the second run, PREFIX in the unit's ExecStart.
func TestMakeInstall(t *testing.T) {
	makeBin := testkit.RequireTool(t, "make", "make")
	root := repoRoot(t)
	dest := t.TempDir()
	bin := filepath.Join(t.TempDir(), "nestmtx")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho stand-in\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	install := func(args ...string) string {
		t.Helper()
		// RELEASE and COMMIT keep make from asking git for them.
		cmd := exec.Command(makeBin, append([]string{"--no-print-directory", "-C", root, "install",
			"DESTDIR=" + dest, "BINARY=" + bin, "RELEASE=test", "COMMIT=test"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make install %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := install()

	unit, _ := os.ReadFile(unitFile)
	env, _ := os.ReadFile(envExample)
	standIn, _ := os.ReadFile(bin)
	checkFile(t, filepath.Join(dest, "usr/local/bin/nestmtx"), 0o755, standIn)
	checkFile(t, filepath.Join(dest, "etc/systemd/system/nestmtx.service"), 0o644, unit)
	checkFile(t, filepath.Join(dest, "etc/nestmtx"), fs.ModeDir|0o700, nil)
	checkFile(t, filepath.Join(dest, "etc/nestmtx/nestmtx.env"), 0o600, env)
	for _, want := range []string{
		"systemctl daemon-reload", "systemctl enable --now nestmtx",
		"/var/lib/private/nestmtx/initial-admin-password", "journalctl -u nestmtx", "/etc/nestmtx/admin-password",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("make install's next steps do not mention %q:\n%s", want, out)
		}
	}

	// An upgrade: the operator's settings stay, the unit follows PREFIX.
	mine := []byte("NESTMTX_LOG_LEVEL=debug\n")
	if err := os.WriteFile(filepath.Join(dest, "etc/nestmtx/nestmtx.env"), mine, 0o600); err != nil {
		t.Fatal(err)
	}
	out = install("PREFIX=/opt/nestmtx")
	if !strings.Contains(out, "kept") {
		t.Errorf("second make install does not say it kept nestmtx.env:\n%s", out)
	}
	checkFile(t, filepath.Join(dest, "etc/nestmtx/nestmtx.env"), 0o600, mine)
	checkFile(t, filepath.Join(dest, "opt/nestmtx/bin/nestmtx"), 0o755, standIn)
	got, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/nestmtx.service"))
	want := bytes.Replace(unit, []byte("ExecStart=/usr/local/bin/nestmtx serve"), []byte("ExecStart=/opt/nestmtx/bin/nestmtx serve"), 1)
	if bytes.Equal(want, unit) || !bytes.Equal(got, want) {
		t.Errorf("with PREFIX=/opt/nestmtx the installed unit is not the shipped one with ExecStart=/opt/nestmtx/bin/nestmtx serve:\n%s", got)
	}
}

// checkFile checks a path's mode and, unless content is nil, its content.
func checkFile(t *testing.T, path string, mode fs.FileMode, content []byte) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if got := st.Mode() & (fs.ModeDir | fs.ModePerm); got != mode {
		t.Errorf("%s: mode %v, want %v", path, got, mode)
	}
	if content != nil {
		b, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(b, content) {
			t.Errorf("%s: content differs from its source (%v)", path, err)
		}
	}
}
