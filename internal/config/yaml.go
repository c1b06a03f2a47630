// The YAML file: strict parsing of one flat mapping of settings.

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

type yamlEntry struct {
	// key is the setting's YAML key; name is how the file named it
	// (an alias, or pathDefaults.runOnReady), for messages.
	key, name, value string
}

func readYAML(path, origin string) ([]yamlEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", origin, pathError(path, err))
	}
	entries, err := parseYAML(data)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return entries, nil
}

// parseYAML walks the node tree rather than decoding into a struct or map so
// that it can reject unknown and duplicate keys, and keep scalars as written
// ("0123" stays 0123 instead of becoming 83 or 123).
func parseYAML(data []byte) ([]yamlEntry, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("line %d: only one YAML document is allowed", extra.Line)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	root := deref(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: expected a mapping of settings (key: value), got %s", root.Line, kindName(root))
	}

	var entries []yamlEntry
	seen := make(map[string]int)
	// add takes one key of the file (name as written there, for messages);
	// inDefaults: it is in pathDefaults, where only the hooks may be.
	add := func(k, v *yaml.Node, name string, inDefaults bool) error {
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: keys must be plain names, got %s", k.Line, kindName(k))
		}
		i := yamlSettingIndex(k.Value)
		if i < 0 {
			return fmt.Errorf("line %d: unknown key %q%s%s", k.Line, name, suggest(k.Value), unsupportedHint(k.Value))
		}
		if inDefaults && !settings[i].hook {
			return fmt.Errorf("line %d: %s: only the hooks (%s) may be set in pathDefaults", k.Line, name, hookNames())
		}
		key := settings[i].YAMLKey
		if line, dup := seen[key]; dup {
			return fmt.Errorf("line %d: %s: already set on line %d", k.Line, name, line)
		}
		seen[key] = k.Line
		if settings[i].mapping {
			switch {
			case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
				return nil
			case v.Kind != yaml.MappingNode:
				return fmt.Errorf("%s: must be a mapping (front-door: {runOnReady: ...}), got %s", name, kindName(v))
			}
			text, err := encodeNode(resolveAliases(v, 0))
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			entries = append(entries, yamlEntry{key: key, name: name, value: text})
			return nil
		}
		if v.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s: must be a string, number or boolean, got %s", name, kindName(v))
		}
		switch v.ShortTag() {
		case "!!null":
			// An empty value ("key:") is how templates leave a key
			// unset; treating it as "" would override defaults.
			return nil
		case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		default:
			return fmt.Errorf("%s: must be a string, number or boolean, got tag %s", name, v.ShortTag())
		}
		entries = append(entries, yamlEntry{key: key, name: name, value: v.Value})
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := deref(root.Content[i]), deref(root.Content[i+1])
		if k.Kind == yaml.ScalarNode && (k.Value == "pathDefaults" || k.Value == "path_defaults") {
			// MediaMTX's defaults of every path: here, the global hooks.
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
				continue
			}
			if v.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%s: must be a mapping of hooks (runOnReady: ...), got %s", k.Value, kindName(v))
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				ik, iv := deref(v.Content[j]), deref(v.Content[j+1])
				if err := add(ik, iv, k.Value+"."+ik.Value, true); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := add(k, v, k.Value, false); err != nil {
			return nil, err
		}
	}
	return entries, nil
}

// deref follows an alias to its anchor; an anchor cannot itself be an alias,
// so one step is enough.
func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	case yaml.AliasNode:
		return "an alias"
	}
	return "an empty document"
}

// suggest catches the common slip of writing a key in flag or env style,
// or with its words split or joined otherwise (run_on_un_demand).
func suggest(key string) string {
	norm := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	norm = strings.TrimPrefix(norm, "nestmtx_")
	if settingIndex(norm) >= 0 {
		return fmt.Sprintf(" (did you mean %q?)", norm)
	}
	squash := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	for _, s := range settings {
		if s.YAMLKey != "" && squash(s.YAMLKey) == squash(norm) {
			return fmt.Sprintf(" (did you mean %q?)", s.YAMLKey)
		}
	}
	return ""
}

// resolveAliases copies n with every alias replaced by what it names, so
// that a mapping can be encoded on its own (its aliases may name anchors
// elsewhere in the file).
func resolveAliases(n *yaml.Node, depth int) *yaml.Node {
	n = deref(n)
	c := *n
	c.Anchor = ""
	if depth > 64 { // yaml.v3 refuses cycles; this bounds a pathological nesting
		c.Content = nil
		return &c
	}
	if len(n.Content) > 0 {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, child := range n.Content {
			c.Content[i] = resolveAliases(child, depth+1)
		}
	}
	return &c
}
