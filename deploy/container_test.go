package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/nestmtx/nestmtx/internal/config"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// No container engine runs where the tests run, so the image is checked
// without building it: a linter, the Dockerfile's instructions against the
// daemon's defaults, and the build context against what the build reads.

// dockerfileUtilsVersion is the pinned linter, which scripts/test.sh
// installs with npm into testdata/dockerfile-utils:
//
//	npm install --prefix deploy/testdata/dockerfile-utils --no-save --no-audit --no-fund --no-package-lock dockerfile-utils@0.16.3
const dockerfileUtilsVersion = "0.16.3"

var dockerfileUtilsDir = filepath.Join("testdata", "dockerfile-utils")

// requireDockerfileUtils returns node and the linter's script: in CI (CI
// set) their absence fails the test, elsewhere it is skipped, saying so.
func requireDockerfileUtils(t *testing.T) (node, script string) {
	t.Helper()
	node = testkit.RequireTool(t, "node", "nodejs")
	mod := filepath.Join(dockerfileUtilsDir, "node_modules", "dockerfile-utils")
	b, err := os.ReadFile(filepath.Join(mod, "package.json"))
	if err != nil {
		msg := "dockerfile-utils is not installed in deploy/testdata/dockerfile-utils; scripts/test.sh installs it " +
			"(npm install --prefix deploy/testdata/dockerfile-utils --no-save dockerfile-utils@" + dockerfileUtilsVersion + ")"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; skipping because CI is unset")
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(b, &pkg); err != nil || pkg.Version != dockerfileUtilsVersion {
		t.Fatalf("dockerfile-utils %q is installed; the test pins %s (run scripts/test.sh)", pkg.Version, dockerfileUtilsVersion)
	}
	return node, filepath.Join(mod, "bin", "dockerfile-utils")
}

// TestDockerfileLint lints the Dockerfile with dockerfile-utils (the
// linter behind VS Code's Dockerfile support): errors exit 1, warnings
// only print, so any output fails. A broken Dockerfile is linted first to
// show the linter at work.
func TestDockerfileLint(t *testing.T) {
	node, script := requireDockerfileUtils(t)
	lint := func(path string) (string, error) {
		out, err := exec.Command(node, script, "lint", path).CombinedOutput()
		return string(out), err
	}
	bad := filepath.Join(t.TempDir(), "Dockerfile")
	if err := os.WriteFile(bad, []byte("FROM scratch\nHEALTHCHECK --bogus=1 CMD true\nCMD [\"a\"]\nCMD [\"b\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := lint(bad); err == nil || !strings.Contains(out, "bogus") {
		t.Fatalf("the linter passed a Dockerfile with an unknown HEALTHCHECK flag (%v):\n%s", err, out)
	}
	if out, err := lint(filepath.Join("..", "Dockerfile")); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("dockerfile-utils lint Dockerfile: %v\n%s", err, out)
	}
}

// dockerStage is one FROM ... AS name stage: its base and instructions.
type dockerStage struct {
	base, name string
	instr      []dockerInstr
}

type dockerInstr struct{ cmd, args string }

func (s dockerStage) all(cmd string) []string {
	var out []string
	for _, in := range s.instr {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// parseDockerfile splits the Dockerfile into stages, continuation lines
// joined and comments dropped; instructions before the first FROM (ARG)
// form a stage of their own with no base.
func parseDockerfile(t *testing.T, path string) []dockerStage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stages := []dockerStage{{}}
	var cur strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		tl := strings.TrimSpace(l)
		if strings.HasPrefix(tl, "#") || (tl == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(tl, "\\") {
			cur.WriteString(strings.TrimSuffix(tl, "\\") + " ")
			continue
		}
		cur.WriteString(tl)
		line := cur.String()
		cur.Reset()
		cmd, args, _ := strings.Cut(line, " ")
		cmd, args = strings.ToUpper(cmd), strings.TrimSpace(args)
		if cmd == "FROM" {
			f := strings.Fields(args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			st := dockerStage{base: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		last := &stages[len(stages)-1]
		last.instr = append(last.instr, dockerInstr{cmd, args})
	}
	return stages
}

// TestDockerfile checks the images against the daemon: the default (last)
// stage is the static one, both runtime stages run as 65532 with the data
// in the /data volume, expose the daemon's default ports, check health
// with `nestmtx healthcheck`, and the binary comes from scripts/release.sh
// with the Go of go.mod.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, filepath.Join("..", "Dockerfile"))
	byName := map[string]dockerStage{}
	for _, s := range stages[1:] {
		byName[s.name] = s
	}
	if len(stages) != 4 || stages[3].name != "static" {
		t.Fatalf("want stages build, ffmpeg and static (the default, last); got %d: %+v", len(stages)-1, stages[1:])
	}

	// The builder's Go is go.mod's.
	gomod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	if args := stages[0].all("ARG"); !slices.Contains(args, "GO_VERSION="+string(m[1])) {
		t.Errorf("ARG GO_VERSION is not go.mod's %s: %q", m[1], args)
	}
	build := byName["build"]
	if !strings.HasPrefix(build.base, "golang:${GO_VERSION}") {
		t.Errorf("the build stage is FROM %s, want golang:${GO_VERSION}-...", build.base)
	}
	if runs := strings.Join(build.all("RUN"), "\n"); !strings.Contains(runs, "scripts/release.sh") {
		t.Errorf("the build stage does not build with scripts/release.sh (make release's flags):\n%s", runs)
	}
	if !strings.HasPrefix(byName["static"].base, "gcr.io/distroless/static") {
		t.Errorf("the default image is FROM %s, want distroless/static", byName["static"].base)
	}
	if runs := strings.Join(byName["ffmpeg"].all("RUN"), "\n"); !strings.Contains(runs, " ffmpeg ") {
		t.Errorf("the ffmpeg stage does not install ffmpeg:\n%s", runs)
	}

	d := config.Defaults()
	ports := []string{
		port(t, d.HTTPAddress) + "/tcp", port(t, d.RTSPAddress) + "/tcp", port(t, d.MQTTListen) + "/tcp",
		port(t, d.RTSPUDPAddress) + "/udp", nextPort(t, d.RTSPUDPAddress) + "/udp",
	}
	for _, name := range []string{"ffmpeg", "static"} {
		s := byName[name]
		want := map[string][]string{
			"USER":       {"65532:65532"},
			"ENV":        {"NESTMTX_DATA_DIR=/data"},
			"VOLUME":     {`["/data"]`},
			"ENTRYPOINT": {`["/usr/local/bin/nestmtx"]`},
			"CMD":        {`["serve"]`},
		}
		for cmd, args := range want {
			if got := s.all(cmd); !slices.Equal(got, args) {
				t.Errorf("stage %s: %s %q, want %q", name, cmd, got, args)
			}
		}
		exposed := strings.Fields(strings.Join(s.all("EXPOSE"), " "))
		slices.Sort(exposed)
		wantPorts := slices.Clone(ports)
		slices.Sort(wantPorts)
		if !slices.Equal(exposed, wantPorts) {
			t.Errorf("stage %s exposes %v, want the daemon's default ports %v", name, exposed, wantPorts)
		}
		hc := s.all("HEALTHCHECK")
		if len(hc) != 1 || !strings.Contains(hc[0], `CMD ["/usr/local/bin/nestmtx", "healthcheck"]`) {
			t.Errorf("stage %s: HEALTHCHECK %q, want CMD [\"/usr/local/bin/nestmtx\", \"healthcheck\"]", name, hc)
		}
		copies := strings.Join(s.all("COPY"), "\n")
		if !strings.Contains(copies, "--chown=65532:65532 /out/data /data") {
			t.Errorf("stage %s: /data is not the non-root user's:\n%s", name, copies)
		}
	}
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func nextPort(t *testing.T, addr string) string {
	t.Helper()
	n, err := strconv.Atoi(port(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(n + 1)
}

// dockerignore is a .dockerignore's patterns, matched as Docker matches
// them: against the path and each of its parents, the last matching
// pattern deciding, "!" taking a path back in.
type dockerignore []struct {
	re     *regexp.Regexp
	negate bool
}

func readDockerignore(t *testing.T, file string) dockerignore {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var di dockerignore
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		neg := strings.HasPrefix(l, "!")
		l = path.Clean(strings.TrimPrefix(strings.TrimPrefix(l, "!"), "/"))
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(l); i++ {
			switch {
			case strings.HasPrefix(l[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(l[i:], "**"):
				re.WriteString(".*")
				i++
			case l[i] == '*':
				re.WriteString("[^/]*")
			case l[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(l[i : i+1]))
			}
		}
		re.WriteString("$")
		di = append(di, struct {
			re     *regexp.Regexp
			negate bool
		}{regexp.MustCompile(re.String()), neg})
	}
	return di
}

// excluded tells whether the slash-separated path p stays out of the
// build context.
func (di dockerignore) excluded(p string) bool {
	var candidates []string
	for q := p; q != "." && q != "/"; q = path.Dir(q) {
		candidates = append(candidates, q)
	}
	out := false
	for _, pat := range di {
		for _, c := range candidates {
			if pat.re.MatchString(c) {
				out = !pat.negate
				break
			}
		}
	}
	return out
}

// TestDockerignore checks that the build context holds every file `go
// build ./cmd/nestmtx` reads for each release platform (this module's Go
// files and embedded files), go.mod, go.sum and scripts/release.sh, and
// leaves out what only weighs: bin/, the tests, node_modules.
func TestDockerignore(t *testing.T) {
	goBin := testkit.RequireTool(t, "go", "golang")
	root := repoRoot(t)
	di := readDockerignore(t, filepath.Join(root, ".dockerignore"))

	need := map[string]bool{"go.mod": true, "go.sum": true, "scripts/release.sh": true, "Dockerfile": false}
	for _, rt := range releaseTargets {
		cmd := exec.Command(goBin, "list", "-deps", "-f",
			`{{if and .Module .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}`,
			"./cmd/nestmtx")
		cmd.Dir = root
		cmd.Env = rt.buildEnv()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list for %s: %v", rt.target, err)
		}
		for _, f := range strings.Fields(string(out)) {
			rel, err := filepath.Rel(root, f)
			if err != nil {
				t.Fatal(err)
			}
			need[filepath.ToSlash(rel)] = true
		}
	}
	if !need["testdata/clip.h264"] {
		t.Fatal("go list named no embedded file; the check would prove nothing")
	}
	var missing []string
	for f, want := range need {
		if want && di.excluded(f) {
			missing = append(missing, f)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf(".dockerignore leaves out files the image's build reads: %v", missing)
	}
	for _, f := range []string{
		"bin/nestmtx", ".git/config", "data/nestmtx.db", "cmd/nestmtx/main_test.go",
		"internal/app/testdata/socketio/node_modules/socket.io-client/package.json", "README.md",
	} {
		if !di.excluded(f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}

// composeFile is the part of deploy/compose.yaml the test reads.
type composeFile struct {
	Name     string
	Services map[string]struct {
		Image string
		Build struct {
			Context string
			Target  string
		}
		Environment map[string]string
		Ports       []string
		Volumes     []string
		Secrets     []string
		DependsOn   yaml.Node `yaml:"depends_on"`
	}
	Secrets map[string]struct{ File string }
	Volumes map[string]any
}

// TestCompose checks deploy/compose.yaml: it parses, nestmtx builds from
// the repository's Dockerfile, its variables are settings with values the
// daemon takes, its broker is the mosquitto service with the password from
// a declared secret, Frigate waits for nestmtx's healthcheck, and the
// Frigate camera in the comments reads nestmtx by its service name.
func TestCompose(t *testing.T) {
	raw, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(false)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if err := dec.Decode(new(any)); err != io.EOF {
		t.Fatalf("compose.yaml holds more than one document: %v", err)
	}
	for _, name := range []string{"nestmtx", "mosquitto", "frigate"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no service %q (services: %v)", name, keys(c.Services))
		}
	}

	n := c.Services["nestmtx"]
	if _, err := os.Stat(filepath.Join(n.Build.Context, "Dockerfile")); err != nil {
		t.Errorf("nestmtx's build context %q has no Dockerfile: %v", n.Build.Context, err)
	}
	if _, err := config.LoadOffline(nil, envOf(n.Environment), io.Discard); err != nil {
		t.Errorf("nestmtx's environment: %v", err)
	}
	known := map[string]bool{}
	for _, s := range config.Settings() {
		known[s.Env[0]] = true
	}
	for k := range n.Environment {
		if !known[k] {
			t.Errorf("nestmtx's environment sets %s, which is no setting's name", k)
		}
	}
	if u, err := url.Parse(n.Environment["NESTMTX_MQTT_URL"]); err != nil || u.Hostname() != "mosquitto" {
		t.Errorf("NESTMTX_MQTT_URL=%q, want the mosquitto service", n.Environment["NESTMTX_MQTT_URL"])
	}
	pwFile := n.Environment["NESTMTX_MQTT_PASSWORD_FILE"]
	secret := strings.TrimPrefix(pwFile, "/run/secrets/")
	if _, ok := c.Secrets[secret]; !ok || !slices.Contains(n.Secrets, secret) || secret == pwFile {
		t.Errorf("NESTMTX_MQTT_PASSWORD_FILE=%s is not a secret given to nestmtx", pwFile)
	}
	if !slices.ContainsFunc(n.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") }) {
		t.Errorf("nestmtx mounts no volume at /data: %v", n.Volumes)
	}
	d := config.Defaults()
	for _, want := range []string{port(t, d.RTSPAddress) + ":" + port(t, d.RTSPAddress), port(t, d.HTTPAddress) + ":" + port(t, d.HTTPAddress)} {
		if !slices.Contains(n.Ports, want) {
			t.Errorf("nestmtx does not publish %s: %v", want, n.Ports)
		}
	}

	if !slices.ContainsFunc(c.Services["mosquitto"].Volumes, func(v string) bool { return strings.HasSuffix(v, ":/mosquitto/config") }) {
		t.Errorf("mosquitto has no config mount: %v", c.Services["mosquitto"].Volumes)
	}
	var deps map[string]struct{ Condition string }
	frigate := c.Services["frigate"]
	if err := frigate.DependsOn.Decode(&deps); err != nil || deps["nestmtx"].Condition != "service_healthy" {
		t.Errorf("frigate does not wait for nestmtx to be healthy (%v): %+v", err, deps)
	}
	// No host port published twice.
	seen := map[string]string{}
	for name, s := range c.Services {
		for _, p := range s.Ports {
			host, _, _ := strings.Cut(p, ":")
			proto := "tcp"
			if strings.HasSuffix(p, "/udp") {
				proto = "udp"
			}
			if other, dup := seen[host+proto]; dup {
				t.Errorf("host port %s/%s is published by %s and %s", host, proto, other, name)
			}
			seen[host+proto] = name
		}
	}
	want := fmt.Sprintf("rtsp://frigate:{FRIGATE_RTSP_PASSWORD}@nestmtx:%s/", port(t, d.RTSPAddress))
	if !strings.Contains(string(raw), want) {
		t.Errorf("compose.yaml's Frigate example does not read %s<path>", want)
	}
	if !strings.Contains(string(raw), "cp mosquitto-acl.conf ") {
		t.Error("compose.yaml does not say to install deploy/mosquitto-acl.conf")
	}
	if _, err := os.Stat("mosquitto-acl.conf"); err != nil {
		t.Error(err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
