package nest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// The secrets of the fixtures below: none may show up in a String, a log
// line or an error.
const (
	offerPwd       = "offerPwdS3cr3tDoNotLog0123"
	answerPwd      = "answerPwdS3cr3tDoNotLog456"
	answerPrint    = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
	mediaSession   = "JxdTxkkatHk4kVnXlKzQICbfVR-session-zero"
	mediaSession2  = "JxdTxkkatHk4kVnXlKzQICbfVR-session-next"
	webrtcExpires0 = "2026-01-04T18:30:00.000Z"
)

// testOffer is shaped as Google wants it (§5): audio, video, application,
// recvonly, non-trickle with a host candidate.
const testOffer = "v=0\r\n" +
	"o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0 1 2\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=ice-ufrag:offUfrag\r\n" +
	"a=ice-pwd:" + offerPwd + "\r\n" +
	"a=fingerprint:sha-256 11:22:33:44:55:66:77:88:99:00:11:22:33:44:55:66:77:88:99:00:11:22:33:44:55:66:77:88:99:00:11:22\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:0\r\n" +
	"a=recvonly\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=candidate:1966762134 1 udp 2130706431 192.168.1.20 50000 typ host\r\n" +
	"a=end-of-candidates\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=mid:1\r\n" +
	"a=recvonly\r\n" +
	"a=rtpmap:96 H264/90000\r\n" +
	"a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n" +
	"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=mid:2\r\n" +
	"a=sctp-port:5000\r\n"

const testAnswer = "v=0\r\n" +
	"o=- 0 2 IN IP4 127.0.0.1\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=group:BUNDLE 0 1 2\r\n" +
	"m=audio 19305 UDP/TLS/RTP/SAVPF 111\r\n" +
	"c=IN IP4 74.125.247.118\r\n" +
	"a=ice-ufrag:ansUfrag\r\n" +
	"a=ice-pwd:" + answerPwd + "\r\n" +
	"a=fingerprint:sha-256 " + answerPrint + "\r\n" +
	"a=mid:0\r\n" +
	"a=sendrecv\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=candidate: 1 udp 2113939711 74.125.247.118 19305 typ host generation 0\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 106 107\r\n" +
	"a=mid:1\r\n" +
	"a=sendrecv\r\n" +
	"a=rtpmap:106 H264/90000\r\n" +
	"a=rtpmap:107 H264/90000\r\n" +
	"m=application 9 DTLS/SCTP 5000\r\n" +
	"a=mid:2\r\n"

// generateResults is Google's answer to GenerateWebRtcStream (§2).
func generateResults(session, expiresAt string) string {
	answer, _ := json.Marshal(testAnswer)
	return `{"results":{"answerSdp":` + string(answer) + `,"expiresAt":"` + expiresAt + `","mediaSessionId":"` + session + `"}}`
}

func bodiesOf(reqs []sdmRequest) []map[string]any {
	var out []map[string]any
	for _, r := range reqs {
		out = append(out, r.Body)
	}
	return out
}

func TestWebRTCStreamLifecycle(t *testing.T) {
	var mu sync.Mutex
	ext := 0
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		if r.Method != "POST" || r.Path != devWebRTC+":executeCommand" {
			t.Errorf("request %s %s", r.Method, r.Path)
		}
		mu.Lock()
		defer mu.Unlock()
		switch r.Body["command"] {
		case CmdGenerateWebRtcStream:
			writeJSON(w, 200, generateResults(mediaSession, webrtcExpires0))
		case CmdExtendWebRtcStream:
			ext++
			// The first extension keeps the id, the second changes it.
			id := mediaSession
			if ext == 2 {
				id = mediaSession2
			}
			writeJSON(w, 200, fmt.Sprintf(`{"results":{"expiresAt":"2026-01-04T18:3%d:00.000Z","mediaSessionId":"%s"}}`, 4+ext, id))
		case CmdStopWebRtcStream:
			writeJSON(w, 200, `{}`)
		default:
			t.Errorf("command %v", r.Body["command"])
		}
	})
	c := newTestClient(s, &fakeTokens{})
	ctx := context.Background()

	// A bare device id is expanded, as for RTSP.
	st, err := c.GenerateWebRtcStream(ctx, "AVPHwEuX9y8Z7w", testOffer)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeviceName != devWebRTC || st.AnswerSDP != testAnswer || st.MediaSessionID != mediaSession ||
		!st.ExpiresAt.Equal(time.Date(2026, 1, 4, 18, 30, 0, 0, time.UTC)) || st.ReceivedAt.IsZero() {
		t.Fatalf("generated %s (answer kept: %v)", st, st.AnswerSDP == testAnswer)
	}

	for i, wantID := range []string{mediaSession, mediaSession2} {
		st, err = c.ExtendWebRtcStream(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if st.AnswerSDP != testAnswer || st.MediaSessionID != wantID || st.DeviceName != devWebRTC ||
			!st.ExpiresAt.Equal(time.Date(2026, 1, 4, 18, 35+i, 0, 0, time.UTC)) {
			t.Fatalf("after extension %d: %s (answer kept: %v)", i+1, st, st.AnswerSDP == testAnswer)
		}
	}
	if err := c.StopWebRtcStream(ctx, st); err != nil {
		t.Fatal(err)
	}

	// Bodies exactly as Google expects them (§2); each Extend and the Stop
	// name the newest media session id.
	wantBodies := []map[string]any{
		{"command": CmdGenerateWebRtcStream, "params": map[string]any{"offerSdp": testOffer}},
		{"command": CmdExtendWebRtcStream, "params": map[string]any{"mediaSessionId": mediaSession}},
		{"command": CmdExtendWebRtcStream, "params": map[string]any{"mediaSessionId": mediaSession}},
		{"command": CmdStopWebRtcStream, "params": map[string]any{"mediaSessionId": mediaSession2}},
	}
	if got := bodiesOf(s.requests()); !reflect.DeepEqual(got, wantBodies) {
		t.Fatalf("bodies:\n%v\nwant\n%v", got, wantBodies)
	}
	if st := c.Limiter().Stats(); st.InWindow != 4 {
		t.Fatalf("limiter counted %d commands, want 4", st.InWindow)
	}
}

// An extension answer without an id keeps the one the stream has.
func TestExtendWebRtcStreamWithoutSessionID(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		writeJSON(w, 200, `{"results":{"expiresAt":"2026-01-04T18:35:00Z"}}`)
	})
	st := WebRTCStream{DeviceName: devWebRTC, AnswerSDP: testAnswer, MediaSessionID: mediaSession}
	got, err := newTestClient(s, &fakeTokens{}).ExtendWebRtcStream(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if got.MediaSessionID != mediaSession || got.AnswerSDP != testAnswer || !got.ExpiresAt.Equal(time.Date(2026, 1, 4, 18, 35, 0, 0, time.UTC)) {
		t.Fatalf("extended %s", got)
	}
}

func TestWebRTCMissingFields(t *testing.T) {
	answer, _ := json.Marshal(testAnswer)
	cases := []struct {
		name, cmd, body string
	}{
		{"generate without answerSdp", CmdGenerateWebRtcStream, `{"results":{"expiresAt":"` + webrtcExpires0 + `","mediaSessionId":"` + mediaSession + `"}}`},
		{"generate without mediaSessionId", CmdGenerateWebRtcStream, `{"results":{"answerSdp":` + string(answer) + `,"expiresAt":"` + webrtcExpires0 + `"}}`},
		{"generate with empty results", CmdGenerateWebRtcStream, `{"results":{}}`},
		{"generate without results", CmdGenerateWebRtcStream, `{}`},
		{"generate with null results", CmdGenerateWebRtcStream, `{"results":null}`},
		{"generate with an empty body", CmdGenerateWebRtcStream, ``},
		{"generate with a wrong shape", CmdGenerateWebRtcStream, `{"results":{"answerSdp":["` + answerPwd + `"]}}`},
		{"extend without results", CmdExtendWebRtcStream, `{}`},
		{"extend with a wrong shape", CmdExtendWebRtcStream, `{"results":"` + answerPwd + `"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) { writeJSON(w, 200, tc.body) })
			c := newTestClient(s, &fakeTokens{})
			var err error
			if tc.cmd == CmdGenerateWebRtcStream {
				var st WebRTCStream
				st, err = c.GenerateWebRtcStream(context.Background(), devWebRTC, testOffer)
				if st != (WebRTCStream{}) {
					t.Fatalf("stream %s returned with an error", st)
				}
			} else {
				in := WebRTCStream{DeviceName: devWebRTC, AnswerSDP: testAnswer, MediaSessionID: mediaSession, ExpiresAt: time.Unix(1, 0)}
				var st WebRTCStream
				st, err = c.ExtendWebRtcStream(context.Background(), in)
				if st != in {
					t.Fatalf("a failed extension changed the stream: %s", st)
				}
			}
			if err == nil || apiError(err) != nil || IsTransient(err) {
				t.Fatalf("err = %v, want a local, non-transient error", err)
			}
			assertNoSecrets(t, err, offerPwd, answerPwd, "ya29.gen0")
		})
	}
}

// What cannot be sent is refused before it costs a command slot.
func TestWebRTCRefusedLocally(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) { t.Errorf("request sent: %v", r.Body) })
	c := newTestClient(s, &fakeTokens{})
	ctx := context.Background()
	noHost := strings.ReplaceAll(testOffer, "typ host", "typ srflx raddr 0.0.0.0 rport 0")
	noCandidate := strings.ReplaceAll(testOffer, "a=candidate:1966762134 1 udp 2130706431 192.168.1.20 50000 typ host\r\n", "")
	for name, offer := range map[string]string{"empty": "", "blank": " \r\n", "srflx only": noHost, "no candidate": noCandidate} {
		_, err := c.GenerateWebRtcStream(ctx, devWebRTC, offer)
		if !errors.Is(err, ErrInvalidOffer) || IsTransient(err) {
			t.Errorf("%s offer: err = %v, want ErrInvalidOffer", name, err)
		} else {
			assertNoSecrets(t, err, offerPwd)
		}
	}
	// A host candidate that is not the first one, or under another m-line,
	// is as good (a bundled offer may carry them anywhere).
	if err := checkOffer(strings.ReplaceAll(noCandidate, "a=sctp-port:5000\r\n",
		"a=sctp-port:5000\r\na=candidate:2 1 udp 1694498815 203.0.113.9 50000 typ srflx raddr 0.0.0.0 rport 0\r\na=candidate:1 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active\r\n")); err != nil {
		t.Errorf("offer with a late host candidate: %v", err)
	}
	if _, err := c.GenerateWebRtcStream(ctx, "enterprises/p/devices/x?y", testOffer); !errors.Is(err, ErrInvalidDeviceName) {
		t.Errorf("bad device name: %v", err)
	}
	if _, err := c.ExtendWebRtcStream(ctx, WebRTCStream{DeviceName: devWebRTC, AnswerSDP: testAnswer}); err == nil {
		t.Error("extension without a media session id was accepted")
	}
	if err := c.StopWebRtcStream(ctx, WebRTCStream{DeviceName: devWebRTC, AnswerSDP: testAnswer}); err == nil {
		t.Error("stop without a media session id was accepted")
	}
	if _, err := c.ExtendWebRtcStream(ctx, WebRTCStream{DeviceName: "enterprises/p/structures/x", MediaSessionID: mediaSession}); !errors.Is(err, ErrInvalidDeviceName) {
		t.Errorf("extension with a bad device name: %v", err)
	}
	if st := c.Limiter().Stats(); st.InWindow != 0 {
		t.Fatalf("limiter counted %d commands that were never sent", st.InWindow)
	}
}

// Google's known WebRTC failures (docs §4 and §5) map onto the existing
// helpers, and nothing of either SDP's ICE password leaks through them.
func TestWebRTCAPIErrors(t *testing.T) {
	quotedOffer, _ := json.Marshal("Invalid offer SDP: Offer must contain each of audio, video and application m lines in that order. Offer: " + testOffer)
	quotedOtherPwd, _ := json.Marshal("bad line a=ice-pwd:someOtherPwdValue0123456789 in offer")
	type helpers struct{ rate, transient, lost, refused bool }
	cases := []struct {
		name    string
		cmd     string
		status  int
		body    string
		status2 string
		msg     string // substring of the message; "" = no check
		want    helpers
	}{
		{"generate without host candidate", CmdGenerateWebRtcStream, 500,
			`{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}`,
			"INTERNAL", "Internal error encountered.", helpers{transient: true}},
		{"generate with an offer quoted back", CmdGenerateWebRtcStream, 400,
			`{"error":{"code":400,"message":` + string(quotedOffer) + `,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"params.offerSdp","description":` + string(quotedOffer) + `}]}]}}`,
			"INVALID_ARGUMENT", "Invalid offer SDP: Offer must contain", helpers{lost: true, refused: true}},
		{"generate quoting some other ice-pwd", CmdGenerateWebRtcStream, 400,
			`{"error":{"code":400,"message":` + string(quotedOtherPwd) + `,"status":"INVALID_ARGUMENT","details":[{"offer":` + string(quotedOtherPwd) + `}]}}`,
			"INVALID_ARGUMENT", "a=ice-pwd:REDACTED in offer", helpers{lost: true, refused: true}},
		{"generate with an empty offer", CmdGenerateWebRtcStream, 400,
			`{"error":{"code":400,"message":"offerSdp value must be set. This is a required field.","status":"INVALID_ARGUMENT"}}`,
			"INVALID_ARGUMENT", "offerSdp value must be set.", helpers{lost: true, refused: true}},
		{"extend on a battery doorbell", CmdExtendWebRtcStream, 400,
			`{"error":{"code":400,"message":"Precondition check failed.","status":"FAILED_PRECONDITION"}}`,
			"FAILED_PRECONDITION", "Precondition check failed.", helpers{lost: true, refused: true}},
		{"extend a dead session", CmdExtendWebRtcStream, 400,
			`{"error":{"code":400,"message":"WebRtc error caused by invalid session or user id mismatch.","status":"FAILED_PRECONDITION"}}`,
			"FAILED_PRECONDITION", "invalid session or user id mismatch", helpers{lost: true, refused: true}},
		{"extend rate limited", CmdExtendWebRtcStream, 429,
			`{"error":{"code":429,"message":"Rate limited for the ExecuteDeviceCommand API for the user.","status":"RESOURCE_EXHAUSTED"}}`,
			"RESOURCE_EXHAUSTED", "Rate limited", helpers{rate: true}},
		{"stop a dead session", CmdStopWebRtcStream, 404,
			`{"error":{"code":404,"message":"Session not found.","status":"NOT_FOUND"}}`,
			"NOT_FOUND", "Session not found.", helpers{lost: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
				if r.Body["command"] != tc.cmd {
					t.Errorf("command %v, want %s", r.Body["command"], tc.cmd)
				}
				writeJSON(w, tc.status, tc.body)
			})
			c := newTestClient(s, &fakeTokens{})
			st := WebRTCStream{DeviceName: devWebRTC, AnswerSDP: testAnswer, MediaSessionID: mediaSession}
			var err error
			switch tc.cmd {
			case CmdGenerateWebRtcStream:
				_, err = c.GenerateWebRtcStream(context.Background(), devWebRTC, testOffer)
			case CmdExtendWebRtcStream:
				var got WebRTCStream
				got, err = c.ExtendWebRtcStream(context.Background(), st)
				if got != st {
					t.Fatalf("a failed extension changed the stream: %s", got)
				}
			case CmdStopWebRtcStream:
				err = c.StopWebRtcStream(context.Background(), st)
			}
			ae := apiError(err)
			if ae == nil {
				t.Fatalf("err = %#v, want *APIError", err)
			}
			if ae.HTTPStatus != tc.status || ae.Status != tc.status2 || ae.Op != shortCommand(tc.cmd) || !strings.Contains(ae.Message, tc.msg) {
				t.Fatalf("APIError = %+v", ae)
			}
			got := helpers{IsRateLimited(err), IsTransient(err), IsSessionLost(err), IsRefused(err)}
			if got != tc.want {
				t.Fatalf("helpers = %+v, want %+v", got, tc.want)
			}
			secrets := []string{offerPwd, answerPwd, "someOtherPwdValue0123456789", "ya29.gen0"}
			assertNoSecrets(t, err, secrets...)
			for _, d := range ae.Details {
				if !json.Valid(d) {
					t.Errorf("detail no longer JSON: %s", d)
				}
				for _, sec := range secrets {
					if bytes.Contains(d, []byte(sec)) {
						t.Errorf("detail %s contains secret %q", d, sec)
					}
				}
			}
		})
	}
}

func TestScrubSDPErrorDetails(t *testing.T) {
	ae := &APIError{Op: "GenerateWebRtcStream", HTTPStatus: 400,
		Message: "see a=ice-pwd:AbC+/9xyzAbC+/9xyzAbC+/ and ICE-PWD:q1w2e3r4t5y6u7i8o9p0aa",
		Details: []json.RawMessage{
			json.RawMessage(`{"sdp":"a=ice-pwd:AbC\/9xyzAbC+\/9xyzAbC+\/\r\na=mid:0"}`),
			json.RawMessage(`{"k":"abcd","l":1}`),
		}}
	// A secret that, replaced verbatim, would break the JSON drops its
	// detail rather than leave it broken.
	err := scrubSDPError(fmt.Errorf("wrapped: %w", ae), []string{`abcd","l`})
	if ae.Message != "see a=ice-pwd:REDACTED and ICE-PWD:REDACTED" {
		t.Fatalf("message %q", ae.Message)
	}
	if got := string(ae.Details[0]); got != `{"sdp":"a=ice-pwd:REDACTED\r\na=mid:0"}` {
		t.Fatalf("detail %s", got)
	}
	if got := string(ae.Details[1]); got != `"REDACTED"` {
		t.Fatalf("detail %s", got)
	}
	if apiError(err) != ae || scrubSDPError(nil, nil) != nil {
		t.Fatal("scrubSDPError changed the error chain")
	}
	other := errors.New("transport")
	if scrubSDPError(other, []string{"x"}) != other {
		t.Fatal("scrubSDPError replaced a non-API error")
	}
}

// A WebRTC session's lifetime comes from Google's clock as an RTSP one's
// does, and an extension re-arms it from the new answer's Date while the
// SDP answer stays.
func TestWebRTCLifetimeFollowsGoogleClock(t *testing.T) {
	for _, offset := range []time.Duration{70 * time.Second, -90 * time.Second, 0} {
		t.Run(fmt.Sprint(offset), func(t *testing.T) {
			s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
				google := time.Now().Add(offset).UTC()
				w.Header().Set("Date", google.Format(http.TimeFormat))
				base := google.Truncate(time.Second)
				switch r.Body["command"] {
				case CmdGenerateWebRtcStream:
					writeJSON(w, 200, generateResults(mediaSession, base.Add(60*time.Second).Format(time.RFC3339Nano)))
				case CmdExtendWebRtcStream:
					writeJSON(w, 200, `{"results":{"expiresAt":"`+base.Add(300*time.Second).Format(time.RFC3339Nano)+`","mediaSessionId":"`+mediaSession+`"}}`)
				}
			})
			c := newTestClient(s, &fakeTokens{})
			check := func(st WebRTCStream, want time.Duration, before, after time.Time) {
				t.Helper()
				if st.Lifetime < want-time.Second || st.Lifetime > want || (offset != 0 && st.Lifetime != want-time.Second) {
					t.Fatalf("lifetime %v, want %v-%v by Google's clock (the short end when the clocks disagree)", st.Lifetime, want-time.Second, want)
				}
				if exp := st.LocalExpiry(); exp.Before(before.Add(want-time.Second)) || exp.After(after.Add(want)) {
					t.Fatalf("local expiry %v is not %v after the answer (%v..%v)", exp, want, before, after)
				}
				if st.ReceivedAt.Before(before) || st.ReceivedAt.After(after) {
					t.Fatalf("received at %v, not within the call (%v..%v)", st.ReceivedAt, before, after)
				}
				if d := st.ClockSkew + offset; d < -2*time.Second || d > 2*time.Second {
					t.Fatalf("clock skew %v, want about %v", st.ClockSkew, -offset)
				}
			}
			before := time.Now()
			st, err := c.GenerateWebRtcStream(context.Background(), devWebRTC, testOffer)
			if err != nil {
				t.Fatal(err)
			}
			check(st, 60*time.Second, before, time.Now())
			before = time.Now()
			st, err = c.ExtendWebRtcStream(context.Background(), st)
			if err != nil {
				t.Fatal(err)
			}
			check(st, 300*time.Second, before, time.Now())
			if st.AnswerSDP != testAnswer {
				t.Fatal("the extension lost the answer")
			}
		})
	}
}

func TestWebRTCMissingExpiresAt(t *testing.T) {
	answer, _ := json.Marshal(testAnswer)
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		switch r.Body["command"] {
		case CmdGenerateWebRtcStream:
			writeJSON(w, 200, `{"results":{"answerSdp":`+string(answer)+`,"mediaSessionId":"`+mediaSession+`"}}`)
		case CmdExtendWebRtcStream:
			writeJSON(w, 200, `{"results":{"mediaSessionId":"`+mediaSession+`"}}`)
		}
	})
	clk := newFakeClock()
	c := newTestClient(s, &fakeTokens{}, func(o *ClientOptions) { o.Now = clk.Now })
	st, err := c.GenerateWebRtcStream(context.Background(), devWebRTC, testOffer)
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(5 * time.Minute); !st.ExpiresAt.Equal(want) || st.Lifetime != 5*time.Minute {
		t.Fatalf("expiresAt = %v lifetime %v, want now+5min %v", st.ExpiresAt, st.Lifetime, want)
	}
	clk.Advance(4 * time.Minute)
	if st, err = c.ExtendWebRtcStream(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(5 * time.Minute); !st.ExpiresAt.Equal(want) || st.Lifetime != 5*time.Minute {
		t.Fatalf("extended expiresAt = %v, want now+5min %v", st.ExpiresAt, want)
	}
}

func TestWebRTCStreamRedaction(t *testing.T) {
	st := WebRTCStream{DeviceName: devWebRTC, AnswerSDP: testAnswer, MediaSessionID: mediaSession,
		ExpiresAt: time.Date(2026, 1, 4, 18, 30, 0, 0, time.UTC)}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("extended", "stream", st)
	var jsonLogged bytes.Buffer
	slog.New(slog.NewJSONHandler(&jsonLogged, nil)).Info("extended", "stream", st)
	outs := []string{st.String(), fmt.Sprint(st), fmt.Sprintf("%v %+v %#v %s", st, st, st, st), fmt.Sprint(&st),
		st.LogValue().String(), logged.String(), jsonLogged.String()}
	for _, out := range outs {
		for _, leak := range []string{answerPwd, answerPrint, "ice-pwd", "fingerprint", "v=0", mediaSession} {
			if strings.Contains(out, leak) {
				t.Errorf("stream printed as %q, which contains %q", out, leak)
			}
		}
	}
	want := "nest.WebRTCStream{" + devWebRTC + " session JxdTxkka… expires 2026-01-04T18:30:00Z}"
	if got := st.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if !strings.Contains(logged.String(), "stream.session=JxdTxkka…") || !strings.Contains(logged.String(), "stream.device="+devWebRTC) ||
		!strings.Contains(logged.String(), "stream.expiresAt=2026-01-04T18:30:00.000Z") {
		t.Errorf("log line %q lacks device, session prefix or expiry", logged.String())
	}
	for id, want := range map[string]string{"": "none", "short": "short", "12345678": "12345678", "123456789": "12345678…", "ééééééééé": "éééééééé…"} {
		if got := sessionPrefix(id); got != want {
			t.Errorf("sessionPrefix(%q) = %q, want %q", id, got, want)
		}
	}
	if got := (WebRTCStream{ExpiresAt: time.Unix(5, 0)}).LocalExpiry(); !got.Equal(time.Unix(5, 0)) {
		t.Errorf("LocalExpiry without ReceivedAt = %v", got)
	}
}

// The WebRTC commands share the credential's limiter with the RTSP ones,
// and are ordered the same way when the quota is short: Extend, then
// Generate, then Stop, whatever the arrival order.
func TestWebRTCLimiterPriorities(t *testing.T) {
	order := make(chan string, 8)
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		cmd, _ := r.Body["command"].(string)
		switch cmd {
		case CmdGenerateWebRtcStream:
			writeJSON(w, 200, generateResults(mediaSession, webrtcExpires0))
		case CmdExtendWebRtcStream:
			writeJSON(w, 200, `{"results":{"expiresAt":"`+webrtcExpires0+`","mediaSessionId":"`+mediaSession+`"}}`)
		default:
			writeJSON(w, 200, `{}`)
		}
		order <- cmd
	})
	clk := newFakeClock()
	lim := NewLimiterWithClock(Limits{PerCredential: 1, PerDeviceCommand: 5, Window: time.Minute}, clk.Now, clk.Sleep)
	c := newTestClient(s, &fakeTokens{}, func(o *ClientOptions) { o.Limiter = lim })
	ctx := context.Background()
	st := WebRTCStream{DeviceName: devWebRTC, AnswerSDP: testAnswer, MediaSessionID: mediaSession}
	// An RTSP command takes the only slot: the quota is one for both kinds.
	go func() { _, _ = c.GenerateRtspStream(ctx, devRTSP) }() // the answer does not parse; only the slot matters
	if got := recv(t, order); got != CmdGenerateRtspStream {
		t.Fatalf("first command %s", got)
	}
	calls := []func(){
		func() { _ = c.StopWebRtcStream(ctx, st) },
		func() { _, _ = c.GenerateWebRtcStream(ctx, devWebRTC, testOffer) },
		func() { _, _ = c.ExtendWebRtcStream(ctx, st) },
	}
	for i, call := range calls {
		go call()
		clk.waitSleepers(t, i+1) // queued in this order
	}
	for i, want := range []string{CmdExtendWebRtcStream, CmdGenerateWebRtcStream, CmdStopWebRtcStream} {
		clk.waitSleepers(t, 3-i)
		clk.Advance(time.Minute)
		if got := recv(t, order); got != want {
			t.Fatalf("granted %s, want %s", got, want)
		}
	}
	if n := len(s.requests()); n != 4 {
		t.Fatalf("%d requests, want 4", n)
	}
}

func TestWebRTCCommandPriority(t *testing.T) {
	for cmd, want := range map[string]int{
		CmdExtendWebRtcStream: commandPriority(CmdExtendRtspStream), CmdExtendRtspStream: 0,
		CmdGenerateWebRtcStream: commandPriority(CmdGenerateRtspStream), CmdGenerateRtspStream: 1,
		CmdStopWebRtcStream: commandPriority(CmdStopRtspStream), CmdStopRtspStream: 2,
	} {
		if got := commandPriority(cmd); got != want {
			t.Errorf("commandPriority(%s) = %d, want %d", shortCommand(cmd), got, want)
		}
	}
}

// A courtesy WebRTC Stop leaves the reserve to extensions and starts, as an
// RTSP one does; a final one (WithReserve) may use it.
func TestWebRTCStopLeavesReserve(t *testing.T) {
	clk := newFakeClock()
	l := NewLimiterWithClock(DefaultLimits(), clk.Now, clk.Sleep)
	ctx := context.Background()
	for i := range 8 {
		if err := l.Wait(ctx, fmt.Sprintf("enterprises/p/devices/d%d", i), CmdGenerateWebRtcStream); err != nil {
			t.Fatal(err)
		}
	}
	stopped := make(chan error, 1)
	go func() { stopped <- l.Wait(ctx, "enterprises/p/devices/d0", CmdStopWebRtcStream) }()
	clk.waitSleepers(t, 1)
	none(t, stopped, "a WebRTC Stop taking the reserve")
	if err := l.Wait(ctx, "enterprises/p/devices/d1", CmdExtendWebRtcStream); err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(WithReserve(ctx), "enterprises/p/devices/d2", CmdStopWebRtcStream); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.InWindow != 10 || st.Waiters != 1 {
		t.Fatalf("stats = %+v, want 10 in the window and the courtesy Stop waiting", st)
	}
	clk.Advance(DefaultLimits().Window)
	if err := recv(t, stopped); err != nil {
		t.Fatal(err)
	}
}

// A 429 on a WebRTC command penalises the credential's limiter: the next
// command, RTSP or WebRTC, waits the penalty out instead of reaching Google.
func TestWebRTCRateLimitPenalizes(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		writeJSON(w, 429, `{"error":{"code":429,"message":"Rate limited for the ExecuteDeviceCommand API for the user.","status":"RESOURCE_EXHAUSTED"}}`)
	})
	clk := newFakeClock()
	lim := NewLimiterWithClock(DefaultLimits(), clk.Now, clk.Sleep)
	c := newTestClient(s, &fakeTokens{}, func(o *ClientOptions) { o.Limiter = lim })
	t0 := clk.Now()
	_, err := c.GenerateWebRtcStream(context.Background(), devWebRTC, testOffer)
	if !IsRateLimited(err) || IsSessionLost(err) {
		t.Fatalf("err = %v", err)
	}
	assertNoSecrets(t, err, offerPwd)
	if until := lim.Stats().PenalizedUntil; until.Before(t0.Add(DefaultLimits().Window)) {
		t.Fatalf("penalized until %v, want ≥ t0+window", until.Sub(t0))
	}
	done := make(chan error, 2)
	st := WebRTCStream{DeviceName: devWebRTC, AnswerSDP: testAnswer, MediaSessionID: mediaSession}
	go func() { _, err := c.ExtendWebRtcStream(context.Background(), st); done <- err }()
	go func() { _, err := c.GenerateRtspStream(context.Background(), devRTSP); done <- err }()
	clk.waitSleepers(t, 2)
	none(t, done, "commands during the penalty")
	if n := len(s.requests()); n != 1 {
		t.Fatalf("%d requests during the penalty", n)
	}
	clk.Advance(DefaultLimits().Window + penaltyJitter)
	for range 2 {
		if err := recv(t, done); !IsRateLimited(err) {
			t.Fatalf("after the penalty: %v", err)
		}
	}
}

// The secrets helpers find every ICE password of an SDP.
func TestSDPSecrets(t *testing.T) {
	got := sdpSecrets(testOffer + "a=ice-pwd:second0123456789abcdef\n" + "a=ice-pwd: \r\n")
	if want := []string{offerPwd, "second0123456789abcdef"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("sdpSecrets = %q, want %q", got, want)
	}
	if got := sdpSecrets(""); got != nil {
		t.Fatalf("sdpSecrets(\"\") = %q", got)
	}
}
