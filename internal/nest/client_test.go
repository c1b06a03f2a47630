package nest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	devRTSP   = "enterprises/" + testProject + "/devices/AVPHwEuA1b2C3d"
	devWebRTC = "enterprises/" + testProject + "/devices/AVPHwEuX9y8Z7w"
	devThermo = "enterprises/" + testProject + "/devices/AVPHwEuT0h3rm"
)

// Shapes copied from the SDM reference (docs/google-sdm.md §3).
const devicesJSON = `{"devices":[
{"name":"` + devRTSP + `",
 "type":"sdm.devices.types.CAMERA",
 "traits":{
  "sdm.devices.traits.Info":{"customName":"Driveway"},
  "sdm.devices.traits.CameraLiveStream":{"maxVideoResolution":{"width":640,"height":480},
     "videoCodecs":["H264"],"audioCodecs":["AAC"],"supportedProtocols":["RTSP"]},
  "sdm.devices.traits.CameraImage":{"maxImageResolution":{"width":1920,"height":1200}},
  "sdm.devices.traits.CameraEventImage":{},"sdm.devices.traits.CameraMotion":{},
  "sdm.devices.traits.CameraPerson":{},"sdm.devices.traits.CameraSound":{}},
 "parentRelations":[{"parent":"enterprises/` + testProject + `/structures/AVPHwEt/rooms/AVPHwEs","displayName":"Front Yard"}]},
{"name":"` + devWebRTC + `",
 "type":"sdm.devices.types.CAMERA",
 "traits":{
  "sdm.devices.traits.Info":{"customName":""},
  "sdm.devices.traits.CameraLiveStream":{"maxVideoResolution":{"width":640,"height":480},
     "videoCodecs":["H264"],"audioCodecs":["OPUS"],"supportedProtocols":["WEB_RTC"]},
  "sdm.devices.traits.CameraMotion":{},"sdm.devices.traits.CameraPerson":{}},
 "parentRelations":[{"parent":"enterprises/` + testProject + `/structures/AVPHwEt/rooms/AVPHwEr","displayName":"Living Room"}]},
{"name":"` + devThermo + `",
 "type":"sdm.devices.types.THERMOSTAT",
 "traits":{"sdm.devices.traits.Info":{"customName":""},"sdm.devices.traits.Temperature":{"ambientTemperatureCelsius":21.5}},
 "parentRelations":[]}
]}`

type sdmRequest struct {
	Method, Path, Auth string
	Body               map[string]any
}

// sdmServer is a scripted SDM API: answer decides each response, and every
// request is recorded for assertions.
type sdmServer struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []sdmRequest
	answer func(w http.ResponseWriter, r sdmRequest)
}

func newSDMServer(t *testing.T, answer func(w http.ResponseWriter, r sdmRequest)) *sdmServer {
	s := &sdmServer{answer: answer}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := sdmRequest{Method: r.Method, Path: strings.TrimPrefix(r.URL.Path, "/v1/"), Auth: r.Header.Get("Authorization")}
		if data, _ := io.ReadAll(r.Body); len(data) > 0 {
			if r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("content type %q", r.Header.Get("Content-Type"))
			}
			if err := json.Unmarshal(data, &rec.Body); err != nil {
				t.Errorf("request body %q: %v", data, err)
			}
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, rec)
		s.mu.Unlock()
		s.answer(w, rec)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *sdmServer) requests() []sdmRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sdmRequest(nil), s.reqs...)
}

// fakeTokens hands out "ya29.gen<N>", bumping N on Invalidate.
type fakeTokens struct {
	mu          sync.Mutex
	gen         int
	invalidated int
	err         error
}

func (f *fakeTokens) AccessToken(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	return fmt.Sprintf("ya29.gen%d", f.gen), nil
}

func (f *fakeTokens) Invalidate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	f.invalidated++
}

func (f *fakeTokens) invalidations() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.invalidated
}

func newTestClient(s *sdmServer, tokens TokenSource, mod ...func(*ClientOptions)) *Client {
	o := ClientOptions{ProjectID: testProject, SDMURL: s.URL + "/v1", HTTP: s.Client(), Tokens: tokens}
	for _, m := range mod {
		m(&o)
	}
	return NewClient(o)
}

func TestListDevices(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) { writeJSON(w, 200, devicesJSON) })
	c := newTestClient(s, &fakeTokens{})
	devs, err := c.ListDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	reqs := s.requests()
	if len(reqs) != 1 || reqs[0].Method != "GET" || reqs[0].Path != "enterprises/"+testProject+"/devices" || reqs[0].Auth != "Bearer ya29.gen0" {
		t.Fatalf("requests = %+v", reqs)
	}
	if len(devs) != 3 {
		t.Fatalf("%d devices", len(devs))
	}
	type view struct {
		ID, Display, Room, Custom string
		Camera, RTSP, WebRTC      bool
	}
	want := []view{
		{"AVPHwEuA1b2C3d", "Driveway", "Front Yard", "Driveway", true, true, false},
		{"AVPHwEuX9y8Z7w", "Living Room", "Living Room", "", true, false, true},
		{"AVPHwEuT0h3rm", "AVPHwEuT0h3rm", "", "", false, false, false},
	}
	for i, d := range devs {
		got := view{d.ID(), d.DisplayName(), d.Room, d.CustomName, d.IsCamera(), d.SupportsRTSP(), d.SupportsWebRTC()}
		if got != want[i] {
			t.Errorf("device %d = %+v, want %+v", i, got, want[i])
		}
	}
	ls := devs[0].LiveStream
	if ls == nil || ls.MaxWidth != 640 || ls.MaxHeight != 480 ||
		!reflect.DeepEqual(ls.VideoCodecs, []string{"H264"}) || !reflect.DeepEqual(ls.AudioCodecs, []string{"AAC"}) ||
		!reflect.DeepEqual(ls.Protocols, []string{"RTSP"}) {
		t.Fatalf("live stream = %+v", ls)
	}
	if devs[2].LiveStream != nil {
		t.Fatal("thermostat has a live stream")
	}
	if _, ok := devs[0].Traits["sdm.devices.traits.CameraImage"]; !ok || devs[0].Name != devRTSP || devs[0].Type != "sdm.devices.types.CAMERA" {
		t.Fatalf("raw fields lost: %+v", devs[0])
	}
}

func TestListDevicesMissingKey(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) { writeJSON(w, 200, `{}`) })
	devs, err := newTestClient(s, &fakeTokens{}).ListDevices(context.Background())
	if err != nil || devs == nil || len(devs) != 0 {
		t.Fatalf("devs = %#v, err = %v; want an empty, non-nil list", devs, err)
	}
}

func TestListDevicesWaitsOnListLimiter(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) { writeJSON(w, 200, `{}`) })
	clk := newFakeClock()
	c := newTestClient(s, &fakeTokens{}, func(o *ClientOptions) {
		o.ListLimiter = NewLimiterWithClock(Limits{PerCredential: 5, Window: time.Minute}, clk.Now, clk.Sleep)
	})
	for range 5 {
		if _, err := c.ListDevices(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { _, err := c.ListDevices(context.Background()); done <- err }()
	clk.waitSleepers(t, 1)
	none(t, done, "6th list in a minute")
	if n := len(s.requests()); n != 5 {
		t.Fatalf("%d requests reached the server, want 5", n)
	}
	clk.Advance(time.Minute)
	if err := recv(t, done); err != nil {
		t.Fatal(err)
	}
	// Listing never touches the executeCommand budget.
	if st := c.Limiter().Stats(); st.InWindow != 0 {
		t.Fatalf("executeCommand limiter counted %d list calls", st.InWindow)
	}
}

func TestGetDevice(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		var all struct{ Devices []json.RawMessage }
		json.Unmarshal([]byte(devicesJSON), &all)
		w.Header().Set("Content-Type", "application/json")
		w.Write(all.Devices[1])
	})
	c := newTestClient(s, &fakeTokens{})
	d, err := c.GetDevice(context.Background(), devWebRTC)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != devWebRTC || d.DisplayName() != "Living Room" || d.SupportsRTSP() {
		t.Fatalf("device = %+v", d)
	}
	// A bare id is expanded with the client's project.
	if _, err := c.GetDevice(context.Background(), "AVPHwEuX9y8Z7w"); err != nil {
		t.Fatal(err)
	}
	reqs := s.requests()
	if reqs[0].Path != devWebRTC || reqs[1].Path != devWebRTC || reqs[0].Method != "GET" {
		t.Fatalf("requests = %+v", reqs)
	}
	for _, bad := range []string{"", "enterprises/p/devices/x/../y", "enterprises/p/structures/x", "enterprises/p/devices/x?auth=1", "enterprises/p/devices/x:executeCommand"} {
		if _, err := c.GetDevice(context.Background(), bad); !errors.Is(err, ErrInvalidDeviceName) {
			t.Errorf("GetDevice(%q) = %v, want ErrInvalidDeviceName", bad, err)
		}
	}
	if n := len(s.requests()); n != 2 {
		t.Fatalf("invalid names reached the server: %d requests", n)
	}
}

const rtspBase = "rtsps://stream-ue1-alfa.dropcam.com:443/sdm_live_stream/CiUA2vuxr_opaque"

func TestRTSPStreamLifecycle(t *testing.T) {
	var mu sync.Mutex
	ext := 0
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		if r.Method != "POST" || r.Path != devRTSP+":executeCommand" {
			t.Errorf("request %s %s", r.Method, r.Path)
		}
		mu.Lock()
		defer mu.Unlock()
		switch r.Body["command"] {
		case CmdGenerateRtspStream:
			writeJSON(w, 200, `{"results":{"streamUrls":{"rtspUrl":"`+rtspBase+`?auth=g.0.tokenzero"},
				"streamExtensionToken":"CjY5ext0","streamToken":"g.0.tokenzero","expiresAt":"2026-01-04T18:30:00.000Z"}}`)
		case CmdExtendRtspStream:
			ext++
			writeJSON(w, 200, fmt.Sprintf(`{"results":{"streamExtensionToken":"CjY5ext%d","streamToken":"g.%d.token","expiresAt":"2026-01-04T18:3%d:00.000Z"}}`, ext, ext, 4+ext))
		case CmdStopRtspStream:
			writeJSON(w, 200, `{}`)
		default:
			t.Errorf("command %v", r.Body["command"])
		}
	})
	c := newTestClient(s, &fakeTokens{})
	ctx := context.Background()

	st, err := c.GenerateRtspStream(ctx, devRTSP)
	if err != nil {
		t.Fatal(err)
	}
	want := RTSPStream{DeviceName: devRTSP, URL: rtspBase + "?auth=g.0.tokenzero", StreamToken: "g.0.tokenzero",
		ExtensionToken: "CjY5ext0", ExpiresAt: time.Date(2026, 1, 4, 18, 30, 0, 0, time.UTC)}
	if st.DeviceName != want.DeviceName || st.URL != want.URL || st.StreamToken != want.StreamToken ||
		st.ExtensionToken != want.ExtensionToken || !st.ExpiresAt.Equal(want.ExpiresAt) {
		t.Fatalf("generated %#v", st)
	}
	if got := st.RedactedURL(); got != rtspBase+"?auth=REDACTED" {
		t.Fatalf("redacted = %q", got)
	}

	for i := 1; i <= 2; i++ {
		st, err = c.ExtendRtspStream(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if st.URL != fmt.Sprintf("%s?auth=g.%d.token", rtspBase, i) || st.StreamToken != fmt.Sprintf("g.%d.token", i) ||
			st.ExtensionToken != fmt.Sprintf("CjY5ext%d", i) || !st.ExpiresAt.Equal(time.Date(2026, 1, 4, 18, 34+i, 0, 0, time.UTC)) {
			t.Fatalf("after extension %d: %#v", i, st)
		}
	}
	if err := c.StopRtspStream(ctx, st); err != nil {
		t.Fatal(err)
	}

	// Each Extend and the Stop send the newest extension token.
	var bodies []map[string]any
	for _, r := range s.requests() {
		bodies = append(bodies, r.Body)
	}
	wantBodies := []map[string]any{
		{"command": CmdGenerateRtspStream, "params": map[string]any{}},
		{"command": CmdExtendRtspStream, "params": map[string]any{"streamExtensionToken": "CjY5ext0"}},
		{"command": CmdExtendRtspStream, "params": map[string]any{"streamExtensionToken": "CjY5ext1"}},
		{"command": CmdStopRtspStream, "params": map[string]any{"streamExtensionToken": "CjY5ext2"}},
	}
	if !reflect.DeepEqual(bodies, wantBodies) {
		t.Fatalf("bodies:\n%v\nwant\n%v", bodies, wantBodies)
	}
	if st := c.Limiter().Stats(); st.InWindow != 4 {
		t.Fatalf("limiter counted %d commands, want 4", st.InWindow)
	}
}

func TestGenerateMissingExpiresAt(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		writeJSON(w, 200, `{"results":{"streamUrls":{"rtspUrl":"`+rtspBase+`?auth=g.0.t"},"streamExtensionToken":"e","streamToken":"g.0.t"}}`)
	})
	clk := newFakeClock()
	c := newTestClient(s, &fakeTokens{}, func(o *ClientOptions) { o.Now = clk.Now })
	st, err := c.GenerateRtspStream(context.Background(), devRTSP)
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(5 * time.Minute); !st.ExpiresAt.Equal(want) {
		t.Fatalf("expiresAt = %v, want now+5min %v", st.ExpiresAt, want)
	}
}

func TestStreamRedaction(t *testing.T) {
	cases := map[string]string{
		rtspBase + "?auth=g.0.secret":         rtspBase + "?auth=REDACTED",
		rtspBase + "?x=1&auth=g.0.secret&y=2": rtspBase + "?x=1&auth=REDACTED&y=2",
		rtspBase:                              rtspBase,
		"":                                    "",
		"not a url %%% ?AUTH=g.0.secret":      "not a url %%% ?AUTH=REDACTED",
		rtspBase + "?auth=g.0.secret#frag":    rtspBase + "?auth=REDACTED#frag",
		rtspBase + "?authority=ok&auth=g.0.s%2F3": rtspBase + "?authority=ok&auth=REDACTED",
	}
	for in, want := range cases {
		if got := (RTSPStream{URL: in}).RedactedURL(); got != want {
			t.Errorf("RedactedURL(%q) = %q, want %q", in, got, want)
		}
	}
	st := RTSPStream{DeviceName: devRTSP, URL: rtspBase + "?auth=g.0.secret", StreamToken: "g.0.secret", ExtensionToken: "CjY5secret"}
	for _, s := range []string{fmt.Sprint(st), fmt.Sprintf("%+v", st), st.LogValue().String()} {
		if strings.Contains(s, "secret") {
			t.Fatalf("stream printed as %q", s)
		}
	}
	// Rebuilding keeps the path and replaces the whole query.
	if got := withStreamToken(rtspBase+"?auth=old&x=1", "g.1.new/+"); got != rtspBase+"?auth=g.1.new%2F%2B" {
		t.Fatalf("rebuilt %q", got)
	}
}

func TestUnauthorizedRetriesOnceWithNewToken(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		if r.Auth != "Bearer ya29.gen1" {
			writeJSON(w, 401, `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`)
			return
		}
		writeJSON(w, 200, `{"results":{"streamUrls":{"rtspUrl":"`+rtspBase+`?auth=g.0.t"},"streamExtensionToken":"e","streamToken":"g.0.t","expiresAt":"2026-01-04T18:30:00Z"}}`)
	})
	tokens := &fakeTokens{}
	c := newTestClient(s, tokens)
	if _, err := c.GenerateRtspStream(context.Background(), devRTSP); err != nil {
		t.Fatal(err)
	}
	reqs := s.requests()
	if len(reqs) != 2 || reqs[0].Auth != "Bearer ya29.gen0" || reqs[1].Auth != "Bearer ya29.gen1" || tokens.invalidations() != 1 {
		t.Fatalf("requests = %+v, invalidations = %d", reqs, tokens.invalidations())
	}
	if reqs[1].Body["command"] != CmdGenerateRtspStream {
		t.Fatalf("retry body = %v", reqs[1].Body)
	}
	// The retry is part of the same logical command.
	if st := c.Limiter().Stats(); st.InWindow != 1 {
		t.Fatalf("limiter counted %d", st.InWindow)
	}
}

func TestUnauthorizedTwiceGivesUp(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		writeJSON(w, 401, `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`)
	})
	tokens := &fakeTokens{}
	_, err := newTestClient(s, tokens).ListDevices(context.Background())
	if !IsUnauthenticated(err) || IsSessionLost(err) || IsTransient(err) {
		t.Fatalf("err = %v", err)
	}
	if n := len(s.requests()); n != 2 || tokens.invalidations() != 1 {
		t.Fatalf("%d requests, %d invalidations; want exactly one retry", n, tokens.invalidations())
	}
	assertNoSecrets(t, err, "ya29.gen")
}

func TestTokenSourceErrorPassesThrough(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) { t.Error("request sent without a token") })
	tokens := &fakeTokens{err: &InvalidGrantError{Description: "Token has been expired or revoked."}}
	_, err := newTestClient(s, tokens).GenerateRtspStream(context.Background(), devRTSP)
	if !errors.Is(err, ErrInvalidGrant) {
		t.Fatalf("err = %v", err)
	}
}

func TestAPIErrorMapping(t *testing.T) {
	type helpers struct{ rate, notFound, unauth, denied, transient, lost, refused bool }
	cases := []struct {
		name    string
		status  int
		ctype   string
		body    string
		status2 string
		msg     string
		want    helpers
	}{
		{"not found", 404, "application/json",
			`{"error":{"code":404,"message":"Device enterprises/project-id/devices/device-id not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"x"}]}}`,
			"NOT_FOUND", "Device enterprises/project-id/devices/device-id not found.", helpers{notFound: true, lost: true}},
		{"permission denied", 403, "application/json",
			`{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}`,
			"PERMISSION_DENIED", "The caller does not have permission", helpers{denied: true, lost: true, refused: true}},
		{"rate limited", 429, "application/json",
			`{"error":{"code":429,"message":"Rate limited for the ExecuteDeviceCommand API for the user.","status":"RESOURCE_EXHAUSTED"}}`,
			"RESOURCE_EXHAUSTED", "Rate limited for the ExecuteDeviceCommand API for the user.", helpers{rate: true}},
		{"failed precondition", 400, "application/json",
			`{"error":{"code":400,"message":"Stream extension token CjY5ext0 is expired.","status":"FAILED_PRECONDITION"}}`,
			"FAILED_PRECONDITION", "Stream extension token REDACTED is expired.", helpers{lost: true, refused: true}},
		{"conflict", 409, "text/plain", ``, "", "Conflict", helpers{lost: true}},
		{"internal", 500, "application/json",
			`{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}`,
			"INTERNAL", "Internal error encountered.", helpers{transient: true}},
		{"html gateway", 502, "text/html",
			"<html>\n<body>Bad Gateway for rtsps://x/y?auth=g.0.leak Authorization: Bearer ya29.gen0 " + strings.Repeat("pad ", 200) + "</body></html>",
			"", "", helpers{transient: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			c := newTestClient(s, &fakeTokens{})
			_, err := c.ExtendRtspStream(context.Background(), RTSPStream{DeviceName: devRTSP, URL: rtspBase + "?auth=g.0.t", ExtensionToken: "CjY5ext0", StreamToken: "g.0.t"})
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %#v, want *APIError", err)
			}
			if ae.HTTPStatus != tc.status || ae.Status != tc.status2 || ae.Op != "ExtendRtspStream" {
				t.Fatalf("APIError = %+v", ae)
			}
			if tc.msg != "" && ae.Message != tc.msg {
				t.Fatalf("message = %q, want %q", ae.Message, tc.msg)
			}
			if len(ae.Message) > maxMessageLen+len("…") || strings.ContainsAny(ae.Message, "\n\r") {
				t.Fatalf("message not truncated/flattened: %q", ae.Message)
			}
			got := helpers{IsRateLimited(err), IsNotFound(err), IsUnauthenticated(err), IsPermissionDenied(err), IsTransient(err), IsSessionLost(err), IsRefused(err)}
			if got != tc.want {
				t.Fatalf("helpers = %+v, want %+v", got, tc.want)
			}
			assertNoSecrets(t, err, "g.0.leak", "ya29.gen0", "CjY5ext0", "g.0.t")
			if tc.name == "not found" && len(ae.Details) != 1 {
				t.Fatalf("details = %s", ae.Details)
			}
		})
	}
}

func TestRateLimitPenalizesLimiter(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		writeJSON(w, 429, `{"error":{"code":429,"message":"Rate limited for the ExecuteDeviceCommand API for the user.","status":"RESOURCE_EXHAUSTED"}}`)
	})
	clk := newFakeClock()
	lim := NewLimiterWithClock(DefaultLimits(), clk.Now, clk.Sleep)
	c := newTestClient(s, &fakeTokens{}, func(o *ClientOptions) { o.Limiter = lim })
	t0 := clk.Now()
	_, err := c.GenerateRtspStream(context.Background(), devRTSP)
	if !IsRateLimited(err) {
		t.Fatalf("err = %v", err)
	}
	if until := lim.Stats().PenalizedUntil; until.Before(t0.Add(DefaultLimits().Window)) {
		t.Fatalf("penalized until %v, want ≥ t0+60s", until.Sub(t0))
	}
	// The next command waits out the penalty instead of hitting Google.
	done := make(chan error, 1)
	go func() { _, err := c.GenerateRtspStream(context.Background(), devRTSP); done <- err }()
	clk.waitSleepers(t, 1)
	none(t, done, "command during penalty")
	if n := len(s.requests()); n != 1 {
		t.Fatalf("%d requests during penalty", n)
	}
	clk.Advance(DefaultLimits().Window + penaltyJitter)
	if err := recv(t, done); !IsRateLimited(err) {
		t.Fatalf("second attempt = %v", err)
	}
}

func TestExecuteCommandWaitsOnLimiter(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {
		writeJSON(w, 200, `{"results":{"streamUrls":{"rtspUrl":"`+rtspBase+`?auth=g.0.t"},"streamExtensionToken":"e","streamToken":"g.0.t","expiresAt":"2026-01-04T18:30:00Z"}}`)
	})
	clk := newFakeClock()
	lim := NewLimiterWithClock(Limits{PerCredential: 10, PerDeviceCommand: 1, Window: time.Minute}, clk.Now, clk.Sleep)
	c := newTestClient(s, &fakeTokens{}, func(o *ClientOptions) { o.Limiter = lim })
	if _, err := c.GenerateRtspStream(context.Background(), devRTSP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := c.GenerateRtspStream(ctx, devRTSP); done <- err }()
	clk.waitSleepers(t, 1)
	none(t, done, "second generate for the same camera")
	cancel()
	if err := recv(t, done); !errors.Is(err, context.Canceled) || IsTransient(err) {
		t.Fatalf("cancelled = %v", err)
	}
	if n := len(s.requests()); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestTransportErrorIsTransient(t *testing.T) {
	s := newSDMServer(t, func(w http.ResponseWriter, r sdmRequest) {})
	c := newTestClient(s, &fakeTokens{})
	s.Close()
	_, err := c.ListDevices(context.Background())
	if err == nil || !IsTransient(err) || IsSessionLost(err) {
		t.Fatalf("err = %v", err)
	}
	assertNoSecrets(t, err, "ya29.gen0")
}

func TestScrub(t *testing.T) {
	in := `token {"access_token":"ya29.a0AfB","refresh_token":"1//0gabc"} url rtsps://h/p?auth=g.0.x&b=1 Bearer ya29.zzz mine-SECRET-value`
	got := scrub(in, "mine-SECRET-value")
	for _, leak := range []string{"ya29.a0AfB", "1//0gabc", "g.0.x", "ya29.zzz", "SECRET"} {
		if strings.Contains(got, leak) {
			t.Errorf("scrub left %q in %q", leak, got)
		}
	}
	if !strings.Contains(got, "&b=1") {
		t.Errorf("scrub ate unrelated text: %q", got)
	}
}
