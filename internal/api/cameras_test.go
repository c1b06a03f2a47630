package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nestmtx/nestmtx/internal/store"
)

// cameraListener records the cameras an update reports.
type cameraListener struct {
	mu      sync.Mutex
	changed []store.Camera
}

func (l *cameraListener) CameraChanged(c store.Camera) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changed = append(l.changed, c)
}

func (l *cameraListener) CameraDeleted(uint64) {}

// cameraFixture is the cameras module over a store holding one synced
// camera, called as an admin, with its log in a buffer.
type cameraFixture struct {
	store    *store.Store
	cam      store.Camera
	module   Module
	listener *cameraListener
	log      *bytes.Buffer
}

func newCameraFixture(t *testing.T) *cameraFixture {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cred, err := s.CreateCredential(store.Credential{Description: "home"})
	if err != nil {
		t.Fatal(err)
	}
	cam, err := s.UpsertCamera(cred.ID, "enterprises/p/devices/a", func(c *store.Camera, _ bool) error {
		c.Name, c.Protocols, c.CodecsAudio = "Door", []string{"WEB_RTC"}, []string{"OPUS"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &cameraFixture{store: s, cam: cam, listener: &cameraListener{}, log: &bytes.Buffer{}}
	f.module = camerasModule(Deps{Store: s, Cameras: f.listener, Log: slog.New(slog.NewTextHandler(f.log, nil))})
	return f
}

// update sends cameras update with payload for the fixture's camera and
// returns the view as generic JSON, or the API error.
func (f *cameraFixture) update(t *testing.T, payload string) (map[string]any, *Error) {
	t.Helper()
	call := &Call{
		Request: Request{Command: Update, Module: "cameras", Entity: strconv.FormatUint(f.cam.ID, 10), Payload: json.RawMessage(payload)},
		User:    &store.User{ID: 1, Username: "admin", Role: store.RoleAdmin},
	}
	res, err := f.module[Update].fn(context.Background(), call)
	if err != nil {
		var apiErr *Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("update %s: %v is not an API error", payload, err)
		}
		return nil, apiErr
	}
	js, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var view map[string]any
	if err := json.Unmarshal(js, &view); err != nil {
		t.Fatal(err)
	}
	return view, nil
}

func (f *cameraFixture) stored(t *testing.T) store.Camera {
	t.Helper()
	c, err := f.store.GetCamera(f.cam.ID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCameraUpdateAudio: a camera's audio mode is set, left alone by other
// updates, and put back to the global default with null.
func TestCameraUpdateAudio(t *testing.T) {
	f := newCameraFixture(t)

	steps := []struct {
		payload   string
		wantView  any // the view's audio: nil for null
		wantStore string
	}{
		{`{"audio":"aac"}`, "aac", "aac"},
		{`{"is_enabled":false}`, "aac", "aac"}, // other fields keep the mode
		{`{"audio":"none"}`, "none", "none"},
		{`{"audio":"opus","mtx_path":"door","is_enabled":true}`, "opus", "opus"},
		{`{"audio":null}`, nil, ""},
		{`{"audio":null}`, nil, ""}, // already the default
	}
	for _, st := range steps {
		view, apiErr := f.update(t, st.payload)
		if apiErr != nil {
			t.Fatalf("%s: %v", st.payload, apiErr)
		}
		if got, ok := view["audio"]; !ok || got != st.wantView {
			t.Errorf("%s: view audio = %v (present %v), want %v", st.payload, got, ok, st.wantView)
		}
		if got := f.stored(t).Audio; got != st.wantStore {
			t.Errorf("%s: stored audio = %q, want %q", st.payload, got, st.wantStore)
		}
		f.listener.mu.Lock()
		last := f.listener.changed[len(f.listener.changed)-1]
		f.listener.mu.Unlock()
		if last.Audio != st.wantStore {
			t.Errorf("%s: listener saw audio %q, want %q", st.payload, last.Audio, st.wantStore)
		}
	}

	logs := f.log.String()
	for _, want := range []string{"msg=\"camera updated\"", "audio=aac", "audio=none", "audio=opus", "audio=default"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

func TestCameraUpdateAudioInvalid(t *testing.T) {
	f := newCameraFixture(t)
	if _, apiErr := f.update(t, `{"audio":"aac"}`); apiErr != nil {
		t.Fatal(apiErr)
	}
	for _, payload := range []string{
		`{"audio":"mp3"}`,
		`{"audio":"AAC"}`, // the API takes the modes exactly as listed
		`{"audio":""}`,    // null, not "", means the default
		`{"audio":" opus"}`,
		`{"audio":1}`,
		`{"audio":true}`,
		`{"audio":["aac"]}`,
		`{"audio":{"mode":"aac"}}`,
	} {
		_, apiErr := f.update(t, payload)
		if apiErr == nil {
			t.Errorf("%s accepted", payload)
			continue
		}
		if apiErr.Code != CodeBadRequest || len(apiErr.Details) != 1 || apiErr.Details[0].Path != "payload.audio" {
			t.Errorf("%s: %+v, want BAD_REQUEST on payload.audio alone", payload, apiErr)
			continue
		}
		if msg := apiErr.Details[0].Message; !strings.Contains(msg, "opus, aac, none") || !strings.Contains(msg, "null") {
			t.Errorf("%s: message %q does not list the modes and null", payload, msg)
		}
	}
	if got := f.stored(t).Audio; got != "aac" {
		t.Errorf("a refused update changed the stored audio to %q", got)
	}

	// Every failing field is reported at once.
	_, apiErr := f.update(t, `{"audio":"mp3","mtx_path":"front door!"}`)
	if apiErr == nil || !hasField(apiErr.Details, "payload.audio") || !hasField(apiErr.Details, "payload.mtx_path") {
		t.Errorf("audio and mtx_path errors: %+v", apiErr)
	}

	// An empty update names audio among the fields it may set.
	_, apiErr = f.update(t, `{}`)
	if apiErr == nil || apiErr.Code != CodeBadRequest || !strings.Contains(apiErr.Message, "is_persistent, audio") {
		t.Errorf("empty update: %+v", apiErr)
	}
}

// TestCameraPersistentEnables: is_persistent true alone enables the camera
// ("always on" means streaming); with is_enabled false given, it does not.
func TestCameraPersistentEnables(t *testing.T) {
	f := newCameraFixture(t)
	if _, err := f.update(t, `{"mtx_path":"door"}`); err != nil {
		t.Fatal(err)
	}
	v, err := f.update(t, `{"is_persistent":true}`)
	if err != nil || v["is_enabled"] != true || v["is_persistent"] != true {
		t.Fatalf("persistent alone: %v %v", v, err)
	}
	v, err = f.update(t, `{"is_persistent":true,"is_enabled":false}`)
	if err != nil || v["is_enabled"] != false || v["is_persistent"] != true {
		t.Fatalf("persistent with is_enabled false: %v %v", v, err)
	}
}
