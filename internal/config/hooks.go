// Hooks: MediaMTX's runOn* commands, as global settings (MediaMTX's
// pathDefaults) and per camera path (its paths: section).

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/nestmtx/nestmtx/internal/hooks"
	"github.com/nestmtx/nestmtx/internal/hooks/cmdline"
)

// Hooks are the commands run on a camera's lifecycle events, by MediaMTX's
// names (docs/hooks.md): the hook runner's own type, so that what the
// settings hold is what it runs.
type Hooks = hooks.Set

// GlobalHooks are the hooks of every camera that paths: does not override.
func (c Config) GlobalHooks() Hooks { return c.Hooks }

// HooksFor is the hooks of the camera served at path: the global ones, with
// what the entry of paths: that matches path sets instead (as MediaMTX
// overlays a path's entry on pathDefaults), and the submatches of that
// entry's regular expression (MediaMTX's G1, G2...; nil for other entries).
func (c Config) HooksFor(path string) (Hooks, []string) {
	h := c.GlobalHooks()
	e, groups, ok := c.Paths.Lookup(path)
	if ok {
		e.overlay(&h)
	}
	return h, groups
}

// PathHooks are the hooks one entry of paths: sets; a nil field is not set
// there and comes from the global settings. An empty command set here
// turns the global one off for the entry's paths.
type PathHooks struct {
	RunOnDemand        *string
	RunOnDemandRestart *bool
	RunOnUnDemand      *string
	RunOnReady         *string
	RunOnReadyRestart  *bool
	RunOnNotReady      *string
	RunOnRead          *string
	RunOnReadRestart   *bool
	RunOnUnread        *string
}

func (p PathHooks) overlay(h *Hooks) {
	for _, f := range hookFields {
		if f.pathStr != nil {
			if v := *f.pathStr(&p); v != nil {
				*f.str(h) = *v
			}
		} else if v := *f.pathBool(&p); v != nil {
			*f.bool(h) = *v
		}
	}
}

// hookField ties a hook's names together: its setting's YAML key, its
// MediaMTX name and its fields.
type hookField struct {
	key, mediaMTX string
	str           func(*Hooks) *string
	bool          func(*Hooks) *bool
	pathStr       func(*PathHooks) **string
	pathBool      func(*PathHooks) **bool
}

var hookFields = []hookField{
	{key: "run_on_demand", mediaMTX: "runOnDemand",
		str: func(h *Hooks) *string { return &h.RunOnDemand }, pathStr: func(p *PathHooks) **string { return &p.RunOnDemand }},
	{key: "run_on_demand_restart", mediaMTX: "runOnDemandRestart",
		bool: func(h *Hooks) *bool { return &h.RunOnDemandRestart }, pathBool: func(p *PathHooks) **bool { return &p.RunOnDemandRestart }},
	{key: "run_on_undemand", mediaMTX: "runOnUnDemand",
		str: func(h *Hooks) *string { return &h.RunOnUnDemand }, pathStr: func(p *PathHooks) **string { return &p.RunOnUnDemand }},
	{key: "run_on_ready", mediaMTX: "runOnReady",
		str: func(h *Hooks) *string { return &h.RunOnReady }, pathStr: func(p *PathHooks) **string { return &p.RunOnReady }},
	{key: "run_on_ready_restart", mediaMTX: "runOnReadyRestart",
		bool: func(h *Hooks) *bool { return &h.RunOnReadyRestart }, pathBool: func(p *PathHooks) **bool { return &p.RunOnReadyRestart }},
	{key: "run_on_not_ready", mediaMTX: "runOnNotReady",
		str: func(h *Hooks) *string { return &h.RunOnNotReady }, pathStr: func(p *PathHooks) **string { return &p.RunOnNotReady }},
	{key: "run_on_read", mediaMTX: "runOnRead",
		str: func(h *Hooks) *string { return &h.RunOnRead }, pathStr: func(p *PathHooks) **string { return &p.RunOnRead }},
	{key: "run_on_read_restart", mediaMTX: "runOnReadRestart",
		bool: func(h *Hooks) *bool { return &h.RunOnReadRestart }, pathBool: func(p *PathHooks) **bool { return &p.RunOnReadRestart }},
	{key: "run_on_unread", mediaMTX: "runOnUnread",
		str: func(h *Hooks) *string { return &h.RunOnUnread }, pathStr: func(p *PathHooks) **string { return &p.RunOnUnread }},
}

// hookFieldByName finds a hook by its YAML key or MediaMTX name.
func hookFieldByName(name string) (hookField, bool) {
	i := slices.IndexFunc(hookFields, func(f hookField) bool { return f.key == name || f.mediaMTX == name })
	if i < 0 {
		return hookField{}, false
	}
	return hookFields[i], true
}

// unsupportedMediaMTX names the MediaMTX path keys nestmtx knows but does
// not take, with what to do instead, so that a copied MediaMTX file fails
// with a useful message.
var unsupportedMediaMTX = map[string]string{
	"runOnInit":                  "a camera path is not a process to initialize; use runOnReady with a persistent camera",
	"runOnInitRestart":           "a camera path is not a process to initialize; use runOnReady with a persistent camera",
	"runOnDemandStartTimeout":    "the stream's start is bounded by on_demand_start_timeout",
	"runOnDemandCloseAfter":      "the stream closes after on_demand_close_after without readers",
	"runOnRecordSegmentCreate":   "nestmtx does not record",
	"runOnRecordSegmentComplete": "nestmtx does not record",
	"runOnConnect":               "nestmtx has no connection hooks",
	"runOnDisconnect":            "nestmtx has no connection hooks",
	"source":                     "a camera's source is its Google device, chosen in the web UI or API",
	"sourceOnDemand":             "cameras are on demand unless set persistent in the web UI or API",
}

func unsupportedHint(key string) string {
	if why, ok := unsupportedMediaMTX[key]; ok {
		return fmt.Sprintf(" (MediaMTX's %s is not supported: %s)", key, why)
	}
	return ""
}

// hookCommand validates a hook's command line: it must split into words
// (the program and its arguments), as it will be run without a shell.
func hookCommand(v string) error {
	if err := cmdline.Check(v); err != nil {
		return fmt.Errorf("%w (it is run without a shell: quote as in sh, or write sh -c '...')", err)
	}
	return nil
}

// parseHookBool also takes MediaMTX's yes and no (YAML 1.1 booleans).
func parseHookBool(raw string) (bool, error) {
	switch strings.ToLower(raw) {
	case "yes", "on", "y":
		return true, nil
	case "no", "off", "n":
		return false, nil
	}
	b, err := strconv.ParseBool(strings.ToLower(raw))
	if err != nil {
		return false, fmt.Errorf("%q is not a boolean (true, false, yes, no, 1 or 0)", raw)
	}
	return b, nil
}

// hookSetting is the global setting of one hook: snake_case in the table,
// with MediaMTX's camelCase accepted in the file.
func hookSetting(key, desc string, field func(*Config) *string) Setting {
	f, _ := hookFieldByName(key)
	s := stringSetting(key, "", desc, field, hookCommand)
	s.YAMLAliases = []string{f.mediaMTX}
	s.hook = true
	return s
}

func hookRestartSetting(key, desc string, field func(*Config) *bool) Setting {
	f, _ := hookFieldByName(key)
	s := boolSetting(key, "false", desc, field)
	s.apply = func(c *Config, raw string) error {
		b, err := parseHookBool(raw)
		if err != nil {
			return err
		}
		*field(c) = b
		return nil
	}
	s.YAMLAliases = []string{f.mediaMTX}
	s.hook = true
	return s
}

// Paths is the paths: section: hooks per camera path. The zero value has no
// entries. A Paths never changes once made, so Configs sharing one stay
// independent (and comparable).
type Paths struct{ t *pathTable }

type pathTable struct {
	text    string // as given, for Text
	exact   map[string]PathHooks
	regexps []regexpEntry // sorted by name, as MediaMTX sorts them
	others  *PathHooks    // all_others (or its older name all)
}

type regexpEntry struct {
	name  string
	re    *regexp.Regexp
	hooks PathHooks
}

// Len is the number of entries.
func (p Paths) Len() int {
	if p.t == nil {
		return 0
	}
	n := len(p.t.exact) + len(p.t.regexps)
	if p.t.others != nil {
		n++
	}
	return n
}

// Text is the section as it was given ("" for none).
func (p Paths) Text() string {
	if p.t == nil {
		return ""
	}
	return p.t.text
}

// Lookup finds the entry for a camera path as MediaMTX does: the entry
// named path, else the first "~regexp" entry (by name) that matches it,
// else all_others (or all). groups are the regexp's submatches, the whole
// match first (MediaMTX's G1 is groups[1]).
func (p Paths) Lookup(path string) (hooks PathHooks, groups []string, ok bool) {
	if p.t == nil || path == "" {
		return PathHooks{}, nil, false
	}
	if h, ok := p.t.exact[path]; ok {
		return h, nil, true
	}
	for _, e := range p.t.regexps {
		if m := e.re.FindStringSubmatch(path); m != nil {
			return e.hooks, m, true
		}
	}
	if p.t.others != nil {
		return *p.t.others, nil, true
	}
	return PathHooks{}, nil, false
}

// ParsePaths reads a paths: section: a YAML mapping (block or flow style,
// so JSON too) from a camera's path, "~regexp" or all_others (or all) to
// its hooks, by MediaMTX's names (runOnReady) or this file's (run_on_ready).
// An entry may be empty (MediaMTX's "front-door:"): it takes the global
// hooks, which matters only to keep all_others off that path.
func ParsePaths(text string) (Paths, error) {
	if strings.TrimSpace(text) == "" {
		return Paths{}, nil
	}
	dec := yaml.NewDecoder(strings.NewReader(text))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Paths{}, nil
		}
		return Paths{}, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Paths{}, errors.New("only one YAML document is allowed")
	}
	if len(doc.Content) == 0 {
		return Paths{}, nil
	}
	root := deref(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return Paths{}, nil
	}
	if root.Kind != yaml.MappingNode {
		return Paths{}, fmt.Errorf("expected a mapping from camera paths to their hooks, got %s", kindName(root))
	}
	t := &pathTable{text: text, exact: map[string]PathHooks{}}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := deref(root.Content[i]), deref(root.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			return Paths{}, fmt.Errorf("path names must be plain non-empty names, got %s", kindName(k))
		}
		name := k.Value
		if seen[name] {
			return Paths{}, fmt.Errorf("%s: given twice", name)
		}
		seen[name] = true
		hooks, err := parsePathEntry(v)
		if err != nil {
			return Paths{}, fmt.Errorf("%s: %w", name, err)
		}
		switch {
		case name == "all_others" || name == "all":
			if t.others != nil {
				return Paths{}, fmt.Errorf("%s: all and all_others are the same entry; give one", name)
			}
			t.others = &hooks
		case strings.HasPrefix(name, "~"):
			re, err := regexp.Compile(name[1:])
			if err != nil {
				return Paths{}, fmt.Errorf("%s: not a regular expression: %w", name, err)
			}
			t.regexps = append(t.regexps, regexpEntry{name: name, re: re, hooks: hooks})
		default:
			t.exact[name] = hooks
		}
	}
	slices.SortFunc(t.regexps, func(a, b regexpEntry) int { return strings.Compare(a.name, b.name) })
	return Paths{t}, nil
}

func parsePathEntry(v *yaml.Node) (PathHooks, error) {
	var h PathHooks
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
		return h, nil
	}
	if v.Kind != yaml.MappingNode {
		return h, fmt.Errorf("expected a mapping of hooks (runOnReady: ...), got %s", kindName(v))
	}
	seen := map[string]string{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := deref(v.Content[i]), deref(v.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return h, fmt.Errorf("keys must be plain names, got %s", kindName(k))
		}
		f, ok := hookFieldByName(k.Value)
		if !ok {
			return h, fmt.Errorf("unknown key %q%s; a path takes only the hooks %s", k.Value, unsupportedHint(k.Value), hookNames())
		}
		if prev, dup := seen[f.key]; dup {
			return h, fmt.Errorf("%s: already set as %s", k.Value, prev)
		}
		seen[f.key] = k.Value
		if val.Kind != yaml.ScalarNode {
			return h, fmt.Errorf("%s: must be a single value, got %s", k.Value, kindName(val))
		}
		if val.ShortTag() == "!!null" {
			continue // unset, as at the top level
		}
		raw := val.Value
		if f.pathStr != nil {
			if err := hookCommand(raw); err != nil {
				return h, fmt.Errorf("%s: %w", k.Value, err)
			}
			*f.pathStr(&h) = &raw
			continue
		}
		b, err := parseHookBool(raw)
		if err != nil {
			return h, fmt.Errorf("%s: %w", k.Value, err)
		}
		*f.pathBool(&h) = &b
	}
	return h, nil
}

func hookNames() string {
	names := make([]string, len(hookFields))
	for i, f := range hookFields {
		names[i] = f.mediaMTX
	}
	return strings.Join(names, ", ")
}

// pathsSetting is the paths: section as a setting: a YAML mapping in the
// file, its flow form (or JSON) in the environment or a flag.
func pathsSetting(desc string) Setting {
	s := newSetting("paths", "", desc)
	s.apply = func(c *Config, raw string) error {
		p, err := ParsePaths(raw)
		if err != nil {
			return err
		}
		c.Paths = p
		return nil
	}
	s.check = func(*Config) error { return nil } // a Paths is valid once made
	s.mapping = true
	return s
}

// encodeNode gives a mapping from the file back as YAML text, for a
// setting (paths) whose value is a mapping.
func encodeNode(n *yaml.Node) (string, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	if err := enc.Encode(n); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return b.String(), nil
}
