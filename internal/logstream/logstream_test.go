package logstream

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLevels(t *testing.T) {
	for _, c := range []struct {
		in   slog.Level
		want int
	}{{slog.LevelDebug - 4, LevelTrace}, {slog.LevelDebug, LevelDebug}, {slog.LevelInfo, LevelInfo},
		{slog.LevelWarn, LevelWarn}, {slog.LevelError, LevelError}, {slog.LevelError + 4, LevelFatal}} {
		if got := FromSlog(c.in); got != c.want {
			t.Errorf("FromSlog(%v) = %d, want %d", c.in, got, c.want)
		}
		if got := FromSlog(toSlog(c.want)); got != c.want {
			t.Errorf("FromSlog(toSlog(%d)) = %d", c.want, got)
		}
	}
	if l, ok := ParseLevel("WARN"); !ok || l != LevelWarn || LevelName(l) != "warn" {
		t.Fatalf("ParseLevel(WARN) = %d, %v", l, ok)
	}
	if _, ok := ParseLevel("off"); ok {
		t.Fatal("off is a level")
	}
}

// The file log keeps its level; a subscriber gets what it asked for, in
// NestMTX's shape, with bound attributes, groups, the component as the
// service and URL tokens redacted; lines below its level are not built.
func TestHandler(t *testing.T) {
	var file bytes.Buffer
	hub := NewHub("nestmtx")
	log := slog.New(hub.Handler(slog.NewTextHandler(&file, &slog.HandlerOptions{Level: slog.LevelInfo})))
	log.Debug("before anyone listens")
	sub := hub.Subscribe(LevelDebug, 16)
	defer sub.Close()
	cam := log.With("camera_id", 7).WithGroup("source")
	cam.Debug("dialing", "url", "rtsps://host/x?auth=SECRET123&x=1", "component", "rtsp")
	log.Log(nil, slog.LevelDebug-4, "trace line, below the subscriber's level")
	log.Warn("stall", "after", "5s")

	r := <-sub.C()
	if r.Level != LevelDebug || r.Msg != "dialing" || r.Attrs["camera_id"] != int64(7) || r.PID == 0 || r.Time == 0 ||
		!strings.HasSuffix(r.Timestamp, "Z") {
		t.Fatalf("record %+v", r)
	}
	if u, _ := r.Attrs["source.url"].(string); strings.Contains(u, "SECRET123") || u == "" {
		t.Fatalf("url attr %q", u)
	}
	if r.Service != "nestmtx" || r.Attrs["source.component"] != "rtsp" { // inside a group it is an attribute
		t.Fatalf("service %q, attrs %v", r.Service, r.Attrs)
	}
	r = <-sub.C()
	if r.Level != LevelWarn || r.Msg != "stall" {
		t.Fatalf("second record %+v (the trace line must not come)", r)
	}
	if strings.Contains(file.String(), "dialing") || !strings.Contains(file.String(), "stall") {
		t.Fatalf("the file log changed level:\n%s", file.String())
	}
	log.Info("named", "component", "nestsim")
	if r = <-sub.C(); r.Service != "nestmtx/nestsim" || r.Attrs["component"] != nil {
		t.Fatalf("component record %+v", r)
	}
}

// A subscriber that reads nothing loses lines, counted; logging goes on.
func TestSlowSubscriber(t *testing.T) {
	hub := NewHub("nestmtx")
	log := slog.New(hub.Handler(slog.DiscardHandler))
	sub := hub.Subscribe(LevelInfo, 4)
	for i := range 100 {
		log.Info("line", "i", i)
	}
	if sub.Dropped() != 96 || len(sub.C()) != 4 {
		t.Fatalf("dropped %d, queued %d", sub.Dropped(), len(sub.C()))
	}
	sub.Close()
	if hub.wants(slog.LevelError) {
		t.Fatal("the hub still wants records with no subscriber")
	}
}

func BenchmarkLogWithSubscriber(b *testing.B) {
	hub := NewHub("nestmtx")
	log := slog.New(hub.Handler(slog.DiscardHandler))
	sub := hub.Subscribe(LevelInfo, 1<<16)
	go func() {
		for range sub.C() {
		}
	}()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		log.Info("camera input", "camera_id", 1, "input", "request")
	}
}
