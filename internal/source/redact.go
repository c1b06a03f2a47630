package source

import "github.com/nestmtx/nestmtx/internal/redact"

// RedactURLs replaces the value of every auth= query parameter in s.
func RedactURLs(s string) string { return redact.AuthParams(s) }
