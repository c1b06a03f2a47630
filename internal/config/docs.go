// Documentation generated from the settings table: flag help and the
// README table.

package config

import (
	"fmt"
	"strings"
)

func flagUsage(s Setting) string {
	u := s.Description + "\n[env " + strings.Join(s.Env, ", ")
	if s.YAMLKey != "" {
		u += "; yaml " + strings.Join(append([]string{s.YAMLKey}, s.YAMLAliases...), ", ")
	}
	return u + "]"
}

// markdownEscaper keeps descriptions such as "nestmtx-<hostname>" from
// being swallowed as HTML tags or splitting a table cell.
var markdownEscaper = strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;")

// MarkdownTable renders Settings as a Markdown table for the README.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| YAML key | Environment | Flag | Default | Description |\n")
	b.WriteString("|---|---|---|---|---|\n")
	code := func(s string) string { return "`" + s + "`" }
	for _, s := range settings {
		yamlKey := "—"
		if s.YAMLKey != "" {
			yamlKey = code(s.YAMLKey)
			for _, a := range s.YAMLAliases {
				yamlKey += ", " + code(a)
			}
		}
		envs := make([]string, len(s.Env))
		for i, e := range s.Env {
			envs[i] = code(e)
		}
		def := "—"
		if s.Default != "" {
			def = code(s.Default)
		}
		desc := s.Description
		if s.Secret {
			desc += " Secret: redacted in logs."
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n",
			yamlKey, strings.Join(envs, ", "), code("--"+s.Flag), def, markdownEscaper.Replace(desc))
	}
	return b.String()
}
