package redact

import "testing"

func TestAuthParams(t *testing.T) {
	const base = "rtsps://stream-ue1.dropcam.com:443/sdm_live_stream/CiUA"
	for in, want := range map[string]string{
		base + "?auth=g.0.secret":             base + "?auth=REDACTED",
		base + "?x=1&auth=g.0.secret&y=2":     base + "?x=1&auth=REDACTED&y=2",
		base:                                  base,
		"":                                    "",
		"not a url %%% ?AUTH=g.0.secret":      "not a url %%% ?AUTH=REDACTED",
		base + "?auth=g.0.secret#frag":        base + "?auth=REDACTED#frag",
		base + "?authority=ok&auth=g.0.s%2F3": base + "?authority=ok&auth=REDACTED",
		base + "?%61uth=g.0.secret":           base + "?%61uth=REDACTED",
		`dial "` + base + `?auth=g.0.secret": EOF`:   `dial "` + base + `?auth=REDACTED": EOF`,
		"two: a?auth=one and b?x=1&auth=two, done":   "two: a?auth=REDACTED and b?x=1&auth=REDACTED done", // the value runs to a space
		"no query: auth=token is not a URL's secret": "no query: auth=token is not a URL's secret",
	} {
		if got := AuthParams(in); got != want {
			t.Errorf("AuthParams(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzAuthParams(f *testing.F) {
	f.Add("rtsps://h/p?auth=g.0.secret&x=1")
	f.Fuzz(func(t *testing.T, s string) {
		out := AuthParams(s)
		if AuthParams(out) != out {
			t.Fatalf("not idempotent: %q -> %q", s, out)
		}
	})
}
