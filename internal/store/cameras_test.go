package store

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

const uidA, uidB = "enterprises/p/devices/A", "enterprises/p/devices/B"

// syncFields is what Google device sync sets on every run.
func syncFields(name string) func(c *Camera, isNew bool) error {
	return func(c *Camera, _ bool) error {
		c.Name = name
		c.Room = "Hall"
		c.Type = "Doorbell"
		c.Protocols = []string{"WEB_RTC"}
		c.Resolution = "1920x1080"
		c.CodecsVideo = []string{"H264"}
		c.CodecsAudio = []string{"OPUS"}
		c.Missing = false
		return nil
	}
}

func TestUpsertCameraKeepsUserFields(t *testing.T) {
	s, clk := openTest(t, t.TempDir())
	cred, _ := s.CreateCredential(Credential{})

	var sawNew []bool
	record := func(c *Camera, isNew bool) error {
		sawNew = append(sawNew, isNew)
		return syncFields("Front door")(c, isNew)
	}
	cam, err := s.UpsertCamera(cred.ID, uidA, record)
	if err != nil {
		t.Fatal(err)
	}
	if cam.ID == 0 || cam.UID != uidA || cam.CredentialID != cred.ID || cam.Name != "Front door" || cam.Path != "" || cam.IsEnabled {
		t.Fatalf("new camera %+v", cam)
	}

	if _, err := s.UpdateCamera(cam.ID, func(c *Camera) error {
		c.Path = "front"
		c.IsEnabled = true
		c.IsPersistent = true
		c.Audio = "aac"
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	clk.Advance(time.Hour)
	again, err := s.UpsertCamera(cred.ID, uidA, record)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sawNew, []bool{true, false}) {
		t.Fatalf("isNew sequence %v", sawNew)
	}
	if again.ID != cam.ID || again.Path != "front" || !again.IsEnabled || !again.IsPersistent || again.Audio != "aac" {
		t.Fatalf("sync overwrote user fields: %+v", again)
	}
	if !again.CreatedAt.Equal(cam.CreatedAt) || !again.UpdatedAt.Equal(clk.Now()) {
		t.Fatalf("timestamps %v %v", again.CreatedAt, again.UpdatedAt)
	}
	if cams, _ := s.ListCameras(); len(cams) != 1 {
		t.Fatalf("upsert created a duplicate: %+v", cams)
	}

	if _, err := s.UpsertCamera(99, uidB, record); !errors.Is(err, ErrNotFound) {
		t.Fatalf("upsert for missing credential = %v", err)
	}
	boom := errors.New("boom")
	if _, err := s.UpsertCamera(cred.ID, uidB, func(*Camera, bool) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("mutate error: %v", err)
	}
	if cams, _ := s.ListCameras(); len(cams) != 1 {
		t.Fatalf("failed upsert left a camera behind: %+v", cams)
	}
}

func TestCameraPathUniqueness(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	cred, _ := s.CreateCredential(Credential{})
	a, _ := s.UpsertCamera(cred.ID, uidA, syncFields("A"))
	b, _ := s.UpsertCamera(cred.ID, uidB, syncFields("B"))

	setPath := func(id uint64, p string) error {
		_, err := s.UpdateCamera(id, func(c *Camera) error { c.Path = p; return nil })
		return err
	}
	if err := setPath(a.ID, "door"); err != nil {
		t.Fatal(err)
	}
	err := setPath(b.ID, "door")
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `"door"`) {
		t.Fatalf("duplicate path = %v, want ErrConflict naming the path", err)
	}
	if got, _ := s.GetCamera(b.ID); got.Path != "" {
		t.Fatalf("conflicting update was stored: %+v", got)
	}
	// Re-saving a camera with its own path is not a conflict.
	if err := setPath(a.ID, "door"); err != nil {
		t.Fatal(err)
	}

	got, err := s.GetCameraByPath("door")
	if err != nil || got.ID != a.ID {
		t.Fatalf("GetCameraByPath = %+v, %v", got, err)
	}
	if _, err := s.GetCameraByPath("Door"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("paths should be case-sensitive like MediaMTX: %v", err)
	}
	if _, err := s.GetCameraByPath(""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty path = %v", err)
	}

	// Moving a's path frees the old one.
	if err := setPath(a.ID, "porch"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCameraByPath("door"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old path still indexed: %v", err)
	}
	if err := setPath(b.ID, "door"); err != nil {
		t.Fatalf("freed path not reusable: %v", err)
	}
	// Unconfiguring removes the index entry.
	if err := setPath(a.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCameraByPath("porch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cleared path still indexed: %v", err)
	}

	// A new camera from sync cannot take a used path either.
	_, err = s.UpsertCamera(cred.ID, "enterprises/p/devices/C", func(c *Camera, _ bool) error {
		c.Path = "door"
		return nil
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("upsert with used path = %v", err)
	}

	if err := s.DeleteCamera(b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCameraByPath("door"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted camera's path still indexed: %v", err)
	}
	if _, err := s.GetCamera(b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetCamera after delete = %v", err)
	}
	if err := s.DeleteCamera(b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v", err)
	}
	// The uid index was cleaned too: sync recreates the camera.
	if _, err := s.UpsertCamera(cred.ID, uidB, func(c *Camera, isNew bool) error {
		if !isNew {
			t.Error("deleted camera still found by uid")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestUpdateCameraImmutableFields(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	cred, _ := s.CreateCredential(Credential{})
	cam, _ := s.UpsertCamera(cred.ID, uidA, syncFields("A"))
	got, err := s.UpdateCamera(cam.ID, func(c *Camera) error {
		c.ID, c.UID, c.CredentialID, c.CreatedAt = 99, "x", 99, time.Time{}
		c.Name = "renamed"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != cam.ID || got.UID != uidA || got.CredentialID != cred.ID || !got.CreatedAt.Equal(cam.CreatedAt) || got.Name != "renamed" {
		t.Fatalf("UpdateCamera = %+v", got)
	}
	if _, err := s.UpdateCamera(cam.ID, func(c *Camera) error { c.Resolution = "big"; return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad resolution = %v", err)
	}
	if _, err := s.UpdateCamera(99, func(*Camera) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing = %v", err)
	}
	stored, _ := s.GetCamera(cam.ID)
	if !reflect.DeepEqual(stored, got) {
		t.Fatalf("stored %+v\nreturned %+v", stored, got)
	}
}

func TestSameDeviceUnderTwoCredentials(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	c1, _ := s.CreateCredential(Credential{})
	c2, _ := s.CreateCredential(Credential{})
	a, _ := s.UpsertCamera(c1.ID, uidA, syncFields("A"))
	b, _ := s.UpsertCamera(c2.ID, uidA, syncFields("A"))
	if a.ID == b.ID || b.CredentialID != c2.ID {
		t.Fatalf("one credential's sync took over another's camera: %+v %+v", a, b)
	}
}

// TestCameraAudioStored: a camera's audio mode survives a reopen, and the
// default ("") is left out of the record, so rows written before the field
// existed read as the default.
func TestCameraAudioStored(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTest(t, dir)
	cred, _ := s.CreateCredential(Credential{})
	a, _ := s.UpsertCamera(cred.ID, uidA, syncFields("A"))
	b, _ := s.UpsertCamera(cred.ID, uidB, syncFields("B"))
	if a.Audio != "" {
		t.Fatalf("new camera has audio %q, want the default", a.Audio)
	}
	if _, err := s.UpdateCamera(a.ID, func(c *Camera) error { c.Audio = "none"; return nil }); err != nil {
		t.Fatal(err)
	}
	raw := func(id uint64) string {
		var v []byte
		if err := s.db.View(func(tx *bbolt.Tx) error {
			v = bytes.Clone(tx.Bucket(bucketCameras).Get(itob(id)))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	if r := raw(a.ID); !strings.Contains(r, `"audio":"none"`) {
		t.Errorf("stored record %s lacks the audio mode", r)
	}
	if r := raw(b.ID); strings.Contains(r, `"audio"`) {
		t.Errorf("stored record %s has an audio key for the default", r)
	}
	s.Close()

	s, _ = openTest(t, dir)
	for id, want := range map[uint64]string{a.ID: "none", b.ID: ""} {
		got, err := s.GetCamera(id)
		if err != nil || got.Audio != want {
			t.Errorf("camera %d after reopen: audio %q, %v; want %q", id, got.Audio, err, want)
		}
	}
	// Back to the default.
	got, err := s.UpdateCamera(a.ID, func(c *Camera) error { c.Audio = ""; return nil })
	if err != nil || got.Audio != "" {
		t.Fatalf("reset audio: %+v, %v", got, err)
	}
	if r := raw(a.ID); strings.Contains(r, `"audio"`) {
		t.Errorf("stored record %s keeps an audio key after the reset", r)
	}
}
