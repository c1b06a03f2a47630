package source

import "regexp"

var authParam = regexp.MustCompile(`([?&]auth=)[^&\s"']+`)

// RedactURLs replaces the value of every auth= query parameter in s.
func RedactURLs(s string) string { return authParam.ReplaceAllString(s, "${1}REDACTED") }
