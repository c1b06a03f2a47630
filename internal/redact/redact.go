// Package redact hides the secrets that travel in URLs: the auth= query
// value of Google's stream URLs is a token that lets anyone watch the
// camera until the session ends.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// queryParam matches one key=value of a query, in a URL or in free text
// that quotes one (an error message, a log line).
var queryParam = regexp.MustCompile(`([?&])([^=&?#\s"'<>]+)=([^&#\s"'<>]*)`)

// AuthParams replaces the value of every auth= query parameter in s with
// REDACTED. The key matches in any case and URL-escaped; everything else,
// the order of the parameters included, stays as it was.
func AuthParams(s string) string {
	if !strings.Contains(s, "=") {
		return s
	}
	return queryParam.ReplaceAllStringFunc(s, func(m string) string {
		sub := queryParam.FindStringSubmatch(m)
		key, err := url.QueryUnescape(sub[2])
		if err != nil || !strings.EqualFold(key, "auth") {
			return m
		}
		return sub[1] + sub[2] + "=REDACTED"
	})
}
