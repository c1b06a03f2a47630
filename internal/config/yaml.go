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
	key, value string
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
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := deref(root.Content[i]), deref(root.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: keys must be plain names, got %s", k.Line, kindName(k))
		}
		key := k.Value
		if settingIndex(key) < 0 {
			return nil, fmt.Errorf("line %d: unknown key %q%s", k.Line, key, suggest(key))
		}
		if line, dup := seen[key]; dup {
			return nil, fmt.Errorf("line %d: %s: already set on line %d", k.Line, key, line)
		}
		seen[key] = k.Line
		if v.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s: must be a string, number or boolean, got %s", key, kindName(v))
		}
		switch v.ShortTag() {
		case "!!null":
			// An empty value ("key:") is how templates leave a key
			// unset; treating it as "" would override defaults.
			continue
		case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		default:
			return nil, fmt.Errorf("%s: must be a string, number or boolean, got tag %s", key, v.ShortTag())
		}
		entries = append(entries, yamlEntry{key: key, value: v.Value})
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

// suggest catches the common slip of writing a key in flag or env style.
func suggest(key string) string {
	norm := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	norm = strings.TrimPrefix(norm, "nestmtx_")
	if settingIndex(norm) >= 0 {
		return fmt.Sprintf(" (did you mean %q?)", norm)
	}
	return ""
}
