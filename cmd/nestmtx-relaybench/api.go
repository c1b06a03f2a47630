package main

// The daemon's API: logging in over MQTT, authorizing the simulated
// credential and serving the cameras to read.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

type apiClient struct {
	c     *testkit.Client
	rr    *testkit.RR
	token string
}

type camera struct {
	ID          uint64   `json:"id"`
	Name        string   `json:"name"`
	Path        string   `json:"mtx_path"`
	IsEnabled   bool     `json:"is_enabled"`
	Protocols   []string `json:"protocols"`
	Resolution  string   `json:"resolution"`
	CodecsVideo []string `json:"codecs_video"`
	CodecsAudio []string `json:"codecs_audio"`
	Audio       *string  `json:"audio"` // null: the global camera_audio
	Missing     bool     `json:"missing"`
}

func (c camera) audioMode() string {
	if c.Audio == nil {
		return "default"
	}
	return *c.Audio
}

// webRTCOnly says whether the daemon reads the camera over WebRTC (Google
// offers it no RTSP stream).
func (c camera) webRTCOnly() bool {
	return !slices.Contains(c.Protocols, "RTSP") && slices.Contains(c.Protocols, "WEB_RTC")
}

func dialAPI(ctx context.Context, o options) (*apiClient, error) {
	var c *testkit.Client
	var err error
	for {
		c, err = testkit.DialErr(o.broker, o.user, o.password, fmt.Sprintf("nestmtx-relaybench-%d", os.Getpid()))
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("MQTT broker %s: %w", o.broker, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	rr, err := c.NewRR(o.base + "/requests")
	if err != nil {
		c.Close()
		return nil, err
	}
	a := &apiClient{c: c, rr: rr}
	var login struct {
		Bearer string `json:"bearer"`
	}
	if err := a.call(ctx, map[string]any{"command": "create", "module": "auth",
		"payload": map[string]any{"username": o.user, "password": o.password}}, &login); err != nil {
		c.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	a.token = login.Bearer
	return a, nil
}

func (a *apiClient) close() { a.c.Close() }

// call sends one API request and decodes a successful reply into v.
func (a *apiClient) call(ctx context.Context, req map[string]any, v any) error {
	return a.rr.Request(ctx, a.token, req, v)
}

func (a *apiClient) cameras(ctx context.Context) ([]camera, error) {
	var list struct{ Items []camera }
	err := a.call(ctx, map[string]any{"command": "list", "module": "cameras",
		"payload": map[string]any{"itemsPerPage": 500}}, &list)
	slices.SortFunc(list.Items, func(x, y camera) int { return int(x.ID) - int(y.ID) })
	return list.Items, err
}

// prepareCameras authorizes a credential (unless the daemon already lists
// the cameras), serves the cameras (o.camera, else the first o.cameras RTSP
// ones) at their paths (servedPath) and sets their audio mode when o.audio
// asks for one.
func (a *apiClient) prepareCameras(ctx context.Context, o options) ([]camera, error) {
	cams, err := a.cameras(ctx)
	if err != nil {
		return nil, err
	}
	if pickCameras(cams, o.camera, o.cameras) == nil {
		if err := a.authorize(ctx, o); err != nil {
			return nil, err
		}
		for pickCameras(cams, o.camera, o.cameras) == nil {
			select {
			case <-ctx.Done():
				want := fmt.Sprintf("fewer than %d RTSP cameras", o.cameras)
				if o.camera != "" {
					want = fmt.Sprintf("no camera %q", o.camera)
				}
				names := make([]string, len(cams))
				for i, c := range cams {
					names[i] = fmt.Sprintf("%d %q (%s)", c.ID, c.Name, strings.Join(c.Protocols, "+"))
				}
				return nil, fmt.Errorf("%s listed after the authorization (listed: %s; for more RTSP cameras: nestmtx simulate --rtsp-cameras)",
					want, strings.Join(names, ", "))
			case <-time.After(250 * time.Millisecond):
			}
			if cams, err = a.cameras(ctx); err != nil {
				return nil, err
			}
		}
	}
	picked := pickCameras(cams, o.camera, o.cameras)
	for i := range picked {
		cam := &picked[i]
		path := servedPath(o.path, i, len(picked))
		payload := map[string]any{"mtx_path": path, "is_enabled": true}
		switch o.audio {
		case "":
		case "default":
			payload["audio"] = nil
		default:
			payload["audio"] = o.audio
		}
		if cam.Path == path && cam.IsEnabled && o.audio == "" {
			continue
		}
		if err := a.call(ctx, map[string]any{"command": "update", "module": "cameras", "entity": fmt.Sprint(cam.ID),
			"payload": payload}, cam); err != nil {
			return nil, fmt.Errorf("serving %q at %s: %w", cam.Name, path, err)
		}
	}
	return picked, nil
}

// servedPath is where the ith of n cameras is served: base itself for a
// single camera (as before --cameras), base-1 … base-n for several.
func servedPath(base string, i, n int) string {
	if n == 1 {
		return base
	}
	return fmt.Sprintf("%s-%d", base, i+1)
}

// pickCameras is the listed camera named (or numbered) name, or with no
// name the first n RTSP ones in the daemon's order; never one Google no
// longer lists. It is nil while fewer are listed.
func pickCameras(cams []camera, name string, n int) []camera {
	var out []camera
	for _, c := range cams {
		switch {
		case c.Missing:
		case name == "" && slices.Contains(c.Protocols, "RTSP"):
			out = append(out, c)
		case name != "" && (c.Name == name || fmt.Sprint(c.ID) == name):
			return []camera{c}
		}
		if name == "" && len(out) == n {
			return out
		}
	}
	return nil
}

// checkAudioTrack fails when the readers' SDP (tracks, the codec of each
// medium) does not carry the audio that --audio asked for, so that a
// daemon without ffmpeg, say, is not measured as if it transcoded.
func checkAudioTrack(audio string, cam camera, tracks []string) error {
	var want string // the audio codec expected; "-" none
	switch audio {
	case "none":
		want = "-"
	case "aac":
		want = "MPEG-4 Audio"
	case "opus":
		if cam.webRTCOnly() {
			want = "Opus"
		} else {
			want = "MPEG-4 Audio" // Google's RTSP streams carry AAC
		}
	default:
		return nil
	}
	got := "-"
	for _, t := range tracks[min(1, len(tracks)):] {
		got = t
	}
	if got != want {
		what := "no audio track"
		if want != "-" {
			what = "a " + want + " track"
		}
		return fmt.Errorf("--audio %s: the readers' SDP has tracks %s, want %s after the video (for aac: is ffmpeg on the daemon's PATH?)",
			audio, strings.Join(tracks, "+"), what)
	}
	return nil
}

// authorize goes through the OAuth flow as a person would: create the
// credential, ask for the consent URL, open it (the simulator consents at
// once and redirects), then load the daemon's callback.
func (a *apiClient) authorize(ctx context.Context, o options) error {
	payload := map[string]any{"description": "relay benchmark", "oauth_client_id": nestsim.DefaultClientID,
		"oauth_client_secret": nestsim.DefaultClientSecret, "dac_project_id": nestsim.DefaultProjectID}
	if o.credential != "" {
		payload = map[string]any{}
		if err := json.Unmarshal([]byte(o.credential), &payload); err != nil {
			return fmt.Errorf("--credential: %w", err)
		}
	}
	var cred struct {
		ID uint64 `json:"id"`
	}
	if err := a.call(ctx, map[string]any{"command": "create", "module": "credentials", "payload": payload}, &cred); err != nil {
		return err
	}
	redirect := "http://" + o.httpAddr + "/oauth/callback"
	var authURL string
	if err := a.call(ctx, map[string]any{"command": "update", "module": "credentials", "entity": fmt.Sprint(cred.ID),
		"payload": map[string]any{"redirect_uri": redirect}}, &authURL); err != nil {
		return err
	}
	return testkit.ConsentAsBrowser(authURL, redirect)
}
