package nestsim

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Plain structs in Google's device shape, as a client would decode them.
type wireDevice struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Traits struct {
		Info *struct {
			CustomName string `json:"customName"`
		} `json:"sdm.devices.traits.Info"`
		LiveStream *struct {
			MaxVideoResolution struct {
				Width  int `json:"width"`
				Height int `json:"height"`
			} `json:"maxVideoResolution"`
			VideoCodecs        []string `json:"videoCodecs"`
			AudioCodecs        []string `json:"audioCodecs"`
			SupportedProtocols []string `json:"supportedProtocols"`
		} `json:"sdm.devices.traits.CameraLiveStream"`
	} `json:"traits"`
	ParentRelations []struct {
		Parent      string `json:"parent"`
		DisplayName string `json:"displayName"`
	} `json:"parentRelations"`
}

func TestDeviceList(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	a := newAPI(t, s)
	prefix := "enterprises/" + s.ProjectID() + "/devices/"

	code, b := a.do(http.MethodGet, "/enterprises/"+s.ProjectID()+"/devices", nil)
	if code != http.StatusOK {
		t.Fatalf("list: %d %s", code, b)
	}
	var list struct {
		Devices []wireDevice `json:"devices"`
	}
	mustJSON(t, b, &list)
	if len(list.Devices) != 4 {
		t.Fatalf("listed %d devices, want 4: %s", len(list.Devices), b)
	}
	byID := map[string]wireDevice{}
	for _, d := range list.Devices {
		id, ok := strings.CutPrefix(d.Name, prefix)
		if !ok || id == "" || d.Traits.Info == nil || len(d.ParentRelations) != 1 ||
			!strings.HasPrefix(d.ParentRelations[0].Parent, "enterprises/"+s.ProjectID()+"/structures/") {
			t.Fatalf("device %s does not have Google's shape", d.Name)
		}
		byID[id] = d
	}

	for id, want := range map[string][2]string{FrontDoorID: {"Front Door", "Entrance"}, BackyardID: {"Backyard", "Garden"}} {
		d := byID[id]
		ls := d.Traits.LiveStream
		if d.Traits.Info.CustomName != want[0] || d.ParentRelations[0].DisplayName != want[1] || ls == nil {
			t.Fatalf("%s: %+v", id, d)
		}
		if ls.MaxVideoResolution.Width != 640 || ls.MaxVideoResolution.Height != 360 ||
			strings.Join(ls.VideoCodecs, ",") != "H264" || strings.Join(ls.AudioCodecs, ",") != "AAC" ||
			strings.Join(ls.SupportedProtocols, ",") != "RTSP" {
			t.Fatalf("%s: CameraLiveStream %+v", id, *ls)
		}
	}
	if byID[FrontDoorID].Type != TypeDoorbell || byID[BackyardID].Type != TypeCamera {
		t.Fatalf("types %s, %s", byID[FrontDoorID].Type, byID[BackyardID].Type)
	}
	if d := byID[ThermostatID]; d.Type != TypeThermostat || d.Traits.LiveStream != nil {
		t.Fatalf("thermostat %+v", d)
	}
	if d := byID[LivingRoomID]; d.Traits.LiveStream == nil || strings.Join(d.Traits.LiveStream.SupportedProtocols, ",") != "WEB_RTC" ||
		d.Traits.Info.CustomName != "" || d.ParentRelations[0].DisplayName != "Living Room" {
		t.Fatalf("WebRTC camera %+v", d)
	}

	code, b = a.do(http.MethodGet, a.devPath(BackyardID), nil)
	var one wireDevice
	mustJSON(t, b, &one)
	if code != http.StatusOK || one.Name != prefix+BackyardID {
		t.Fatalf("get: %d %s", code, b)
	}

	code, b = a.do(http.MethodGet, a.devPath("nope"), nil)
	wantGoogleError(t, code, b, http.StatusNotFound, "NOT_FOUND")
	code, b = a.do(http.MethodGet, "/enterprises/other-project/devices", nil)
	wantGoogleError(t, code, b, http.StatusNotFound, "NOT_FOUND")

	if err := s.Faults().RemoveDevice(BackyardID); err != nil {
		t.Fatal(err)
	}
	_, b = a.do(http.MethodGet, "/enterprises/"+s.ProjectID()+"/devices", nil)
	if strings.Contains(string(b), BackyardID) {
		t.Fatal("removed device is still listed")
	}
	code, b = a.exec(BackyardID, "GenerateRtspStream", nil)
	wantGoogleError(t, code, b, http.StatusNotFound, "NOT_FOUND")
	if err := s.Faults().RestoreDevice(BackyardID); err != nil {
		t.Fatal(err)
	}
	if code, _ := a.do(http.MethodGet, a.devPath(BackyardID), nil); code != http.StatusOK {
		t.Fatalf("restored device: %d", code)
	}
	if n := s.CountCalls("devices.list"); n != 3 {
		t.Fatalf("call log has %d devices.list, want 3", n)
	}
}

func TestDeviceListEmpty(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{Cameras: []Device{}})
	code, b := newAPI(t, s).do(http.MethodGet, "/enterprises/"+s.ProjectID()+"/devices", nil)
	if code != http.StatusOK || strings.TrimSpace(string(b)) != "{}" {
		t.Fatalf("empty list: %d %s, want 200 {}", code, b)
	}
}

func TestStreamCommandChain(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{StreamTTL: time.Minute})
	a := newAPI(t, s)

	before := time.Now()
	g := a.generate(FrontDoorID).Results
	u, err := url.Parse(g.StreamURLs.RTSPURL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "rtsps" || u.Host != s.RTSPSAddress() || !strings.HasPrefix(u.Path, "/sdm_live_stream/") ||
		u.Query().Get("auth") != g.StreamToken || g.StreamExtensionToken == "" {
		t.Fatalf("generate results %+v", g)
	}
	exp, err := time.Parse("2006-01-02T15:04:05.000Z", g.ExpiresAt)
	if err != nil {
		t.Fatalf("expiresAt %q is not RFC 3339 UTC with milliseconds: %v", g.ExpiresAt, err)
	}
	if exp.Before(before.Add(time.Minute-time.Second)) || exp.After(time.Now().Add(time.Minute)) {
		t.Fatalf("expiresAt %s is not now+StreamTTL", exp)
	}
	if s.LiveSessions() != 1 {
		t.Fatalf("LiveSessions %d", s.LiveSessions())
	}

	code, e1, b := a.extend(FrontDoorID, g.StreamExtensionToken)
	if code != http.StatusOK {
		t.Fatalf("extend: %d %s", code, b)
	}
	r1 := e1.Results
	if r1.StreamExtensionToken == g.StreamExtensionToken || r1.StreamToken == g.StreamToken ||
		r1.StreamToken == "" || r1.ExpiresAt == "" || r1.StreamURLs.RTSPURL != "" {
		t.Fatalf("extend results %+v: want new tokens, a new expiry and no URL", r1)
	}

	// The chain moves on: the old extension token is refused.
	code, _, b = a.extend(FrontDoorID, g.StreamExtensionToken)
	wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT")
	// A token of another device's session is refused too.
	code, _, b = a.extend(BackyardID, r1.StreamExtensionToken)
	wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT")

	code, e2, b := a.extend(FrontDoorID, r1.StreamExtensionToken)
	if code != http.StatusOK || e2.Results.StreamToken == r1.StreamToken {
		t.Fatalf("second extend: %d %s", code, b)
	}
	code, b = a.exec(FrontDoorID, "StopRtspStream", map[string]any{"streamExtensionToken": r1.StreamExtensionToken})
	wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT")
	code, b = a.exec(FrontDoorID, "StopRtspStream", map[string]any{"streamExtensionToken": e2.Results.StreamExtensionToken})
	if code != http.StatusOK || strings.TrimSpace(string(b)) != "{}" {
		t.Fatalf("stop: %d %s, want 200 {}", code, b)
	}
	if s.LiveSessions() != 0 {
		t.Fatalf("LiveSessions %d after stop", s.LiveSessions())
	}
	code, _, b = a.extend(FrontDoorID, e2.Results.StreamExtensionToken)
	wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")

	counts := map[string]int{"GenerateRtspStream": 1, "ExtendRtspStream": 5, "StopRtspStream": 2}
	for m, want := range counts {
		if got := s.CountCalls(m); got != want {
			t.Errorf("CountCalls(%s) = %d, want %d", m, got, want)
		}
	}
	calls := s.Calls()
	if last := calls[len(calls)-1]; last.Method != "ExtendRtspStream" || last.Device != FrontDoorID || last.Status != 400 {
		t.Errorf("last call %+v", last)
	}
}

func TestCommandErrors(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	a := newAPI(t, s)

	code, b := a.exec(LivingRoomID, "GenerateRtspStream", nil)
	wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")
	code, b = a.exec(ThermostatID, "GenerateRtspStream", nil)
	wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT")
	code, b = a.exec(FrontDoorID, "Teleport", nil)
	wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT")
	code, b = a.exec("AVPHwEuNoSuchDevice", "GenerateRtspStream", nil)
	wantGoogleError(t, code, b, http.StatusNotFound, "NOT_FOUND")
	code, b = a.exec(FrontDoorID, "ExtendRtspStream", nil)
	wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT")
	code, b = a.exec(FrontDoorID, "ExtendRtspStream", map[string]any{"streamExtensionToken": "never-issued"})
	wantGoogleError(t, code, b, http.StatusBadRequest, "INVALID_ARGUMENT")
	a.token = "ya29.bogus"
	code, b = a.exec(FrontDoorID, "GenerateRtspStream", nil)
	wantGoogleError(t, code, b, http.StatusUnauthorized, "UNAUTHENTICATED")
	if s.LiveSessions() != 0 {
		t.Fatal("a refused command created a session")
	}
}

func TestEnforceQuota(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := startSim(t, Options{EnforceQuota: true, Now: clock.Now})
	a := newAPI(t, s)
	for i := range 10 {
		if code, b := a.exec(LivingRoomID, "GenerateRtspStream", nil); code != http.StatusBadRequest {
			t.Fatalf("call %d: %d %s, want the device's own 400", i+1, code, b)
		}
	}
	code, b := a.exec(FrontDoorID, "GenerateRtspStream", nil)
	e := wantGoogleError(t, code, b, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED")
	if e.Error.Message != "Rate limited for the ExecuteDeviceCommand API for the user." {
		t.Fatalf("message %q", e.Error.Message)
	}
	// Reads have their own quota and are not limited by the sim.
	if code, _ := a.do(http.MethodGet, a.devPath(FrontDoorID), nil); code != http.StatusOK {
		t.Fatalf("devices.get under executeCommand quota: %d", code)
	}
	clock.Advance(61 * time.Second)
	if code, b := a.exec(FrontDoorID, "GenerateRtspStream", nil); code != http.StatusOK {
		t.Fatalf("after the window: %d %s", code, b)
	}
}

func TestFaultsSDM(t *testing.T) {
	t.Parallel()
	s := startSim(t, Options{})
	a := newAPI(t, s)
	f := s.Faults()

	f.RateLimitEveryOther(true)
	var got []int
	for range 4 {
		code, _ := a.exec(LivingRoomID, "GenerateRtspStream", nil)
		got = append(got, code)
	}
	if got[0] != 400 || got[1] != 429 || got[2] != 400 || got[3] != 429 {
		t.Fatalf("RateLimitEveryOther statuses %v, want [400 429 400 429]", got)
	}
	f.RateLimitEveryOther(false)

	f.ServerErrors(2)
	for i := range 2 {
		code, b := a.do(http.MethodGet, a.devPath(FrontDoorID), nil)
		e := wantGoogleError(t, code, b, http.StatusInternalServerError, "INTERNAL")
		if e.Error.Message != "Internal error encountered." {
			t.Fatalf("call %d: message %q", i, e.Error.Message)
		}
	}
	if code, _ := a.do(http.MethodGet, a.devPath(FrontDoorID), nil); code != http.StatusOK {
		t.Fatalf("third call after ServerErrors(2): %d", code)
	}

	g := a.generate(BackyardID).Results
	f.FailExtensions(true)
	code, _, b := a.extend(BackyardID, g.StreamExtensionToken)
	wantGoogleError(t, code, b, http.StatusBadRequest, "FAILED_PRECONDITION")
	f.FailExtensions(false)
	// The failed attempt did not consume the token.
	if code, _, b := a.extend(BackyardID, g.StreamExtensionToken); code != http.StatusOK {
		t.Fatalf("extend after FailExtensions(false): %d %s", code, b)
	}

	const delay = 300 * time.Millisecond
	f.SlowResponses(delay)
	start := time.Now()
	if code, _ := a.do(http.MethodGet, a.devPath(FrontDoorID), nil); code != http.StatusOK {
		t.Fatalf("slow call: %d", code)
	}
	if el := time.Since(start); el < delay {
		t.Fatalf("slow call answered in %s, want >= %s", el, delay)
	}
	f.SlowResponses(0)
}

func TestParseFaults(t *testing.T) {
	fs, err := ParseFaults(" extend_fail, drop=90s ,rate_limit,,server_errors=3,slow=250ms")
	if err != nil {
		t.Fatal(err)
	}
	want := FaultSpec{ExtendFail: true, DropEvery: 90 * time.Second, RateLimit: true, ServerErrors: 3, Slow: 250 * time.Millisecond}
	if fs != want {
		t.Fatalf("got %+v, want %+v", fs, want)
	}
	if back, err := ParseFaults(fs.String()); err != nil || back != fs {
		t.Fatalf("String round trip: %q -> %+v, %v", fs.String(), back, err)
	}
	if fs, err := ParseFaults(""); err != nil || fs != (FaultSpec{}) {
		t.Fatalf("empty spec: %+v, %v", fs, err)
	}
	for _, bad := range []string{"drop", "drop=abc", "drop=-1s", "extend_fail=1", "explode", "server_errors=0"} {
		if _, err := ParseFaults(bad); err == nil {
			t.Errorf("ParseFaults(%q) accepted", bad)
		}
	}

	s := startSim(t, Options{})
	s.Faults().Apply(FaultSpec{ExtendFail: true, RateLimit: true})
	if !s.Faults().extensionsFail() || s.Faults().takeRateLimit() || !s.Faults().takeRateLimit() {
		t.Fatal("Apply did not turn on extend_fail and rate_limit")
	}
}
