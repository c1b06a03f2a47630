package config

import (
	"slices"
	"strings"
	"testing"
)

// TestHooksMediaMTXSpelling: a MediaMTX user's keys load as written
// (camelCase, yes/no), as do this file's snake_case ones and the env vars.
func TestHooksMediaMTXSpelling(t *testing.T) {
	path := writeYAML(t, `
runOnReady: notify ready "$MTX_PATH"
runOnReadyRestart: yes
run_on_not_ready: notify gone
runOnDemand: ffmpeg -i x
runOnUnDemand: echo bye
runOnRead: echo r
runOnReadRestart: no
runOnUnread: echo u
`)
	c := mustLoad(t, nil, map[string]string{"NESTMTX_CONFIG": path, "NESTMTX_RUN_ON_DEMAND_RESTART": "true"})
	want := Hooks{RunOnDemand: "ffmpeg -i x", RunOnDemandRestart: true, RunOnUnDemand: "echo bye",
		RunOnReady: `notify ready "$MTX_PATH"`, RunOnReadyRestart: true, RunOnNotReady: "notify gone",
		RunOnRead: "echo r", RunOnUnread: "echo u"}
	if got := c.GlobalHooks(); got != want {
		t.Fatalf("hooks = %+v\nwant %+v", got, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// The environment and flags override the file, as for every setting.
	c = mustLoad(t, []string{"--run-on-ready=from-flag"}, map[string]string{"NESTMTX_CONFIG": path, "NESTMTX_RUN_ON_NOT_READY": "from-env"})
	if c.Hooks.RunOnReady != "from-flag" || c.Hooks.RunOnNotReady != "from-env" || c.Hooks.RunOnUnread != "echo u" {
		t.Fatalf("precedence: %+v", c.GlobalHooks())
	}
}

// TestHooksPathDefaults: MediaMTX's pathDefaults section sets the global
// hooks; nothing else may be in it.
func TestHooksPathDefaults(t *testing.T) {
	c := mustLoad(t, nil, map[string]string{"NESTMTX_CONFIG": writeYAML(t, "pathDefaults:\n  runOnReady: a\n  run_on_unread: b\n")})
	if c.Hooks.RunOnReady != "a" || c.Hooks.RunOnUnread != "b" {
		t.Fatalf("hooks = %+v", c.GlobalHooks())
	}
	for _, tc := range []struct{ yaml, want string }{
		{"pathDefaults:\n  source: rtsp://x\n", `unknown key "pathDefaults.source"`},
		{"pathDefaults:\n  log_level: debug\n", "only the hooks"},
		{"runOnReady: a\npathDefaults:\n  run_on_ready: b\n", "pathDefaults.run_on_ready: already set on line 1"},
		{"runOnReady: a\nrun_on_ready: b\n", "run_on_ready: already set on line 1"},
		{"pathDefaults: [a]\n", "must be a mapping"},
	} {
		loadCase(t, nil, map[string]string{"NESTMTX_CONFIG": writeYAML(t, tc.yaml)}, []string{tc.want})
	}
}

func TestHooksRejected(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{"runOnReady: echo 'unterminated\n", []string{"runOnReady", "unterminated single quote", "without a shell"}},
		{"runOnReadyRestart: maybe\n", []string{"runOnReadyRestart", `"maybe" is not a boolean`}},
		{"runOnInit: ffmpeg\n", []string{`unknown key "runOnInit"`, "not supported"}},
		{"run_on_un_demand: x\n", []string{`did you mean "run_on_undemand"`}},
		{"paths: x\n", []string{"paths: must be a mapping"}},
		{"paths:\n  cam:\n    source: rtsp://x\n", []string{"paths: cam:", `unknown key "source"`, "Google device", "runOnReady"}},
		{"paths:\n  cam:\n    runOnReady: [a]\n", []string{"cam: runOnReady: must be a single value"}},
		{"paths:\n  cam:\n    runOnRead: '\"x'\n", []string{"cam: runOnRead: the command line has an unterminated double quote"}},
		{"paths:\n  cam:\n    runOnRead: a\n    run_on_read: b\n", []string{"run_on_read: already set as runOnRead"}},
		{"paths:\n  '~(':\n    runOnRead: a\n", []string{"~(: not a regular expression"}},
		{"paths:\n  all: {}\n  all_others: {}\n", []string{"same entry"}},
		{"paths:\n  cam: 3\n", []string{"cam: expected a mapping of hooks"}},
	} {
		loadCase(t, nil, map[string]string{"NESTMTX_CONFIG": writeYAML(t, tc.yaml)}, tc.want)
	}
	loadCase(t, []string{"--paths", "[a]"}, nil, []string{"--paths", "expected a mapping"})
}

// TestHooksPaths: an entry overlays the global hooks for its paths, found
// as MediaMTX finds it: by name, else by ~regexp (groups as G1...), else
// all_others.
func TestHooksPaths(t *testing.T) {
	// An anchor in one entry, used by another (MediaMTX files do this).
	path := writeYAML(t, `
runOnReady: global-ready
runOnRead: global-read
paths:
  front-door:
    runOnReady: front "$MTX_PATH"
    runOnReadyRestart: yes
  backyard: &quiet
    runOnRead: ""
  garage:
  '~^cam-(\d+)$':
    run_on_ready: numbered $G1
  all_others:
    runOnUnread: others
  porch: *quiet
`)
	c := mustLoad(t, nil, map[string]string{"NESTMTX_CONFIG": path})
	if n := c.Paths.Len(); n != 6 {
		t.Fatalf("Paths.Len() = %d, want 6", n)
	}
	for _, tc := range []struct {
		path   string
		want   Hooks
		groups []string
	}{
		{"front-door", Hooks{RunOnReady: `front "$MTX_PATH"`, RunOnReadyRestart: true, RunOnRead: "global-read"}, nil},
		{"backyard", Hooks{RunOnReady: "global-ready"}, nil},
		{"porch", Hooks{RunOnReady: "global-ready"}, nil},
		{"garage", Hooks{RunOnReady: "global-ready", RunOnRead: "global-read"}, nil},
		{"cam-12", Hooks{RunOnReady: "numbered $G1", RunOnRead: "global-read"}, []string{"cam-12", "12"}},
		{"attic", Hooks{RunOnReady: "global-ready", RunOnRead: "global-read", RunOnUnread: "others"}, nil},
	} {
		h, groups := c.HooksFor(tc.path)
		if h != tc.want || !slices.Equal(groups, tc.groups) {
			t.Errorf("HooksFor(%q) = %+v %q\nwant %+v %q", tc.path, h, groups, tc.want, tc.groups)
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(c.Paths.Text(), "front-door") {
		t.Errorf("Text() = %q", c.Paths.Text())
	}

	// The same in flow form from the environment (JSON is flow YAML).
	c = mustLoad(t, nil, map[string]string{"NESTMTX_PATHS": `{"front-door": {"runOnReady": "x"}}`, "NESTMTX_RUN_ON_READY": "y"})
	if h, _ := c.HooksFor("front-door"); h.RunOnReady != "x" {
		t.Errorf("env paths: %+v", h)
	}
	if h, _ := c.HooksFor("backyard"); h.RunOnReady != "y" {
		t.Errorf("no entry, no all_others: want the global hook, got %+v", h)
	}
	// Without paths the zero value matches nothing and compares equal.
	if _, _, ok := Defaults().Paths.Lookup("front-door"); ok || Defaults() != mustLoad(t, nil, nil) {
		t.Error("empty Paths")
	}
}

func TestParsePathsEmpty(t *testing.T) {
	for _, text := range []string{"", "  \n", "~\n", "# nothing\n"} {
		p, err := ParsePaths(text)
		if err != nil || p.Len() != 0 {
			t.Errorf("ParsePaths(%q) = %d entries, %v", text, p.Len(), err)
		}
	}
	if _, err := ParsePaths("a: {}\n---\nb: {}\n"); err == nil {
		t.Error("two documents accepted")
	}
}

// TestYAMLAliasesUnique: an alias names one setting only, and no setting's
// own key.
func TestYAMLAliasesUnique(t *testing.T) {
	seen := map[string]string{}
	for _, s := range Settings() {
		for _, n := range append([]string{s.YAMLKey}, s.YAMLAliases...) {
			if n == "" {
				continue
			}
			if prev, dup := seen[n]; dup {
				t.Errorf("%s names both %s and %s", n, prev, s.YAMLKey)
			}
			seen[n] = s.YAMLKey
		}
	}
	for _, f := range hookFields {
		if i := yamlSettingIndex(f.mediaMTX); i < 0 || settings[i].YAMLKey != f.key {
			t.Errorf("%s is not the alias of %s", f.mediaMTX, f.key)
		}
	}
}
