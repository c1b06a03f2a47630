package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// TestDemoServeStreamLifecycle runs `nestmtx serve --demo` and reads the demo
// camera at front-door once: the stream is the simulator's clip, and the
// camera's whole life is told on MQTT, in order.
func TestDemoServeStreamLifecycle(t *testing.T) {
	ffprobe := testkit.RequireTool(t, "ffprobe", "ffmpeg")
	start := time.Now()
	d := startServe(t, t.TempDir(), []string{"--demo"}, "NESTMTX_ADMIN_PASSWORD=demo-pass",
		"NESTMTX_DEMO_STREAM_TTL=4s", "NESTMTX_ON_DEMAND_CLOSE_AFTER=1s")
	rr := d.waitReady()
	tok := rr.Login(t, "admin", "demo-pass")
	var list struct {
		Items []struct {
			ID        uint64 `json:"id"`
			Name      string `json:"name"`
			Path      string `json:"mtx_path"`
			IsEnabled bool   `json:"is_enabled"`
		}
	}
	rr.Call(t, map[string]any{"command": "list", "module": "cameras", "token": tok}).MustOK(t, &list)
	var id uint64
	for _, c := range list.Items {
		if c.Path == "front-door" {
			if !c.IsEnabled {
				t.Fatalf("the demo camera at front-door is not enabled: %+v", c)
			}
			id = c.ID
		}
	}
	if id == 0 {
		t.Fatalf("no demo camera at front-door: %+v", list.Items)
	}

	c := testkit.Dial(t, d.mqtt, "admin", d.pass)
	all := c.Subscribe("nestmtx/#")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	probeCmd := exec.CommandContext(ctx, ffprobe, "-v", "error", "-rtsp_transport", "tcp",
		"-show_entries", "stream=codec_name,width,height", "-of", "json", d.rtspURL("front-door"))
	var probeErr strings.Builder
	probeCmd.Stderr = &probeErr
	out, err := probeCmd.Output()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s%s", err, out, probeErr.String())
	}
	var probe struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
		}
	}
	if err := json.Unmarshal(out, &probe); err != nil {
		t.Fatalf("ffprobe output %s: %v", out, err)
	}
	var video, audio bool
	for _, s := range probe.Streams {
		video = video || (s.CodecName == "h264" && s.Width == 640 && s.Height == 360)
		audio = audio || s.CodecName == "aac"
	}
	if !video || !audio || len(probe.Streams) != 2 {
		t.Fatalf("want h264 640x360 and aac, ffprobe found %s", out)
	}

	// The reader has gone: the events run on to notReady once the stream
	// closes (NESTMTX_ON_DEMAND_CLOSE_AFTER after the last reader).
	eventPrefix := fmt.Sprintf("nestmtx/events/camera/%d/", id)
	stateTopic := fmt.Sprintf("nestmtx/state/camera/%d", id)
	var seen []string
	sawReady := false
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(seen, "notReady") {
		p := testkit.Next(t, all, time.Until(deadline))
		switch {
		case strings.HasPrefix(p.Topic, eventPrefix):
			name := strings.TrimPrefix(p.Topic, eventPrefix)
			var ev struct {
				Domain string  `json:"domain"`
				Entity *uint64 `json:"entity"`
				Event  string  `json:"event"`
			}
			if err := json.Unmarshal(p.Payload, &ev); err != nil || ev.Domain != "camera" || ev.Entity == nil || *ev.Entity != id || ev.Event != name {
				t.Fatalf("event on %s: %s (%v)", p.Topic, p.Payload, err)
			}
			if name != "extended" {
				seen = append(seen, name)
			}
		case p.Topic == stateTopic && len(p.Payload) > 0:
			var st struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(p.Payload, &st); err != nil {
				t.Fatalf("state %s: %v", p.Payload, err)
			}
			sawReady = sawReady || st.Status == "ready"
		}
	}
	want := []string{"demand", "ready", "read", "unread", "unDemand", "notReady"}
	if !slices.Equal(seen, want) {
		t.Fatalf("events for camera %d: %v, want %v (extended may come between)", id, seen, want)
	}
	if !sawReady {
		t.Fatalf("%s never showed \"status\":\"ready\"", stateTopic)
	}
	t.Logf("demo stream life in %s", time.Since(start).Round(time.Millisecond))
}

// TestDemoBadFaults: a bad fault list stops serve --demo with a message
// naming NESTMTX_DEMO_FAULTS.
func TestDemoBadFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "serve", "--demo", "--rtsp-udp-address=")
	cmd.Env = append(os.Environ(),
		"NESTMTX_DATA_DIR="+t.TempDir(),
		"NESTMTX_MQTT_LISTEN="+testkit.FreeAddr(t),
		"NESTMTX_HTTP_ADDRESS="+testkit.FreeAddr(t),
		"NESTMTX_RTSP_ADDRESS="+testkit.FreeAddr(t),
		"NESTMTX_ADMIN_PASSWORD=faults-pass",
		"NESTMTX_DEMO_FAULTS=bogus",
	)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("serve --demo with bad faults did not exit within 30 s:\n%s", out)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("want a non-zero exit, got %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "NESTMTX_DEMO_FAULTS") || !strings.Contains(string(out), "bogus") {
		t.Fatalf("the message does not name NESTMTX_DEMO_FAULTS and the bad fault:\n%s", out)
	}
}

// TestDemoWebRTCCameras: the demo serves its WebRTC-only camera at
// living-room and its battery doorbell at porch; ffprobe finds h264 and
// opus on each, and h264 and aac once living-room's audio is set to aac
// (with ffmpeg on PATH, which this test has).
func TestDemoWebRTCCameras(t *testing.T) {
	ffprobe := testkit.RequireTool(t, "ffprobe", "ffmpeg")
	d := startServe(t, t.TempDir(), []string{"--demo"}, "NESTMTX_ADMIN_PASSWORD=demo-pass",
		"NESTMTX_ON_DEMAND_CLOSE_AFTER=1s")
	rr := d.waitReady()
	tok := rr.Login(t, "admin", "demo-pass")
	probe := func(path string) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, ffprobe, "-v", "error", "-rtsp_transport", "tcp",
			"-show_entries", "stream=codec_name", "-of", "csv=p=0", d.rtspURL(path))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ffprobe %s: %v\n%s%s", path, err, out, stderr.String())
		}
		codecs := strings.Fields(string(out))
		slices.Sort(codecs)
		return codecs
	}
	for _, path := range []string{"living-room", "porch"} {
		if got := probe(path); !slices.Equal(got, []string{"h264", "opus"}) {
			t.Fatalf("%s: ffprobe found %v, want h264 and opus", path, got)
		}
	}
	var list struct {
		Items []struct {
			ID   uint64 `json:"id"`
			Path string `json:"mtx_path"`
		}
	}
	rr.Call(t, map[string]any{"command": "list", "module": "cameras", "token": tok}).MustOK(t, &list)
	var id uint64
	for _, c := range list.Items {
		if c.Path == "living-room" {
			id = c.ID
		}
	}
	rr.Call(t, map[string]any{"command": "update", "module": "cameras", "token": tok, "entity": fmt.Sprint(id),
		"payload": map[string]any{"audio": "aac"}}).MustOK(t, nil)
	if got := probe("living-room"); !slices.Equal(got, []string{"aac", "h264"}) {
		t.Fatalf("living-room with audio aac: ffprobe found %v, want h264 and aac", got)
	}
}
