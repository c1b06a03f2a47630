package config

import (
	"os"
	"strings"
	"testing"
)

// TestREADMETableIsCurrent keeps the README's configuration table generated
// from the one settings table, so the docs cannot drift from the code.
func TestREADMETableIsCurrent(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), strings.TrimRight(MarkdownTable(), "\n")) {
		t.Fatal("README.md's configuration table differs from config.MarkdownTable(); regenerate it between the config-table markers")
	}
}
