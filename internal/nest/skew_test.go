package nest

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// A session's lifetime comes from Google's clock (expiresAt minus its Date
// header) and its local expiry from the monotonic clock, so a host clock
// that is minutes off neither extends late nor sees healthy sessions as
// expired.
func TestSessionLifetimeFollowsGoogleClock(t *testing.T) {
	for _, offset := range []time.Duration{70 * time.Second, -90 * time.Second, 0} {
		t.Run(fmt.Sprint(offset), func(t *testing.T) {
			s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
				google := time.Now().Add(offset).UTC()
				w.Header().Set("Date", google.Format(http.TimeFormat))
				// expiresAt is 60 s after Google's whole-second Date, as the
				// header carries whole seconds only.
				exp := google.Truncate(time.Second).Add(60 * time.Second).Format(time.RFC3339Nano)
				switch r.Body["command"] {
				case CmdGenerateRtspStream:
					writeJSON(w, 200, `{"results":{"streamUrls":{"rtspUrl":"`+rtspBase+`?auth=g.0.t"},
						"streamExtensionToken":"e0","streamToken":"g.0.t","expiresAt":"`+exp+`"}}`)
				case CmdExtendRtspStream:
					writeJSON(w, 200, `{"results":{"streamExtensionToken":"e1","streamToken":"g.1.t","expiresAt":"`+exp+`"}}`)
				}
			})
			c := newTestClient(s, &fakeTokens{})
			check := func(st RTSPStream, before, after time.Time) {
				t.Helper()
				// Google's Date has whole seconds: the lifetime is known to
				// within one, and a skewed host takes the short end.
				if st.Lifetime < 59*time.Second || st.Lifetime > 60*time.Second || (offset != 0 && st.Lifetime != 59*time.Second) {
					t.Fatalf("lifetime %v, want 59-60 s by Google's clock (59 s when the clocks disagree)", st.Lifetime)
				}
				if exp := st.LocalExpiry(); exp.Before(before.Add(59*time.Second)) || exp.After(after.Add(60*time.Second)) {
					t.Fatalf("local expiry %v is not 59-60 s after the answer (%v..%v)", exp, before, after)
				}
				if d := st.ClockSkew + offset; d < -2*time.Second || d > 2*time.Second {
					t.Fatalf("clock skew %v, want about %v", st.ClockSkew, -offset)
				}
			}
			before := time.Now()
			st, err := c.GenerateRtspStream(context.Background(), devRTSP)
			if err != nil {
				t.Fatal(err)
			}
			check(st, before, time.Now())
			before = time.Now()
			st, err = c.ExtendRtspStream(context.Background(), st)
			if err != nil {
				t.Fatal(err)
			}
			check(st, before, time.Now())
		})
	}
}

// Without a Date header the local clock is all there is.
func TestSessionLifetimeWithoutDateHeader(t *testing.T) {
	exp := time.Now().Add(2 * time.Minute).UTC()
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		w.Header()["Date"] = nil // net/http adds one otherwise
		writeJSON(w, 200, `{"results":{"streamUrls":{"rtspUrl":"`+rtspBase+`?auth=g.0.t"},
			"streamExtensionToken":"e0","streamToken":"g.0.t","expiresAt":"`+exp.Format(time.RFC3339Nano)+`"}}`)
	})
	st, err := newTestClient(s, &fakeTokens{}).GenerateRtspStream(context.Background(), devRTSP)
	if err != nil {
		t.Fatal(err)
	}
	if st.ClockSkew != 0 {
		t.Fatalf("skew %v without a Date header", st.ClockSkew)
	}
	if d := st.LocalExpiry().Sub(exp); d < -time.Second || d > time.Second {
		t.Fatalf("local expiry %v, want expiresAt %v", st.LocalExpiry(), exp)
	}
}
