package store

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

const (
	plainClientSecret = "GOCSPX-client-secret-0123456789"
	plainAccessToken  = "ya29.access-token-abcdefghijklmnop"
	plainRefreshToken = "1//refresh-token-qrstuvwxyz012345"
	plainDescription  = "Living room project description"
)

func TestCredentialSecretsRoundTripAndEncryptedAtRest(t *testing.T) {
	dir := t.TempDir()
	s, clk := openTest(t, dir)
	authAt := time.Date(2025, 2, 1, 8, 0, 0, 0, time.FixedZone("X", -5*3600))
	c, err := s.CreateCredential(Credential{
		ID:                42, // ignored
		Description:       plainDescription,
		OAuthClientID:     "client-id.apps.googleusercontent.com",
		OAuthClientSecret: plainClientSecret,
		DACProjectID:      "dac-project",
		AccessToken:       plainAccessToken,
		RefreshToken:      plainRefreshToken,
		TokenExpiry:       clk.Now().Add(time.Hour),
		AuthenticatedAt:   &authAt,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != 1 {
		t.Fatalf("ID = %d, want 1 from the sequence", c.ID)
	}
	got, err := s.GetCredential(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.OAuthClientSecret != plainClientSecret || got.AccessToken != plainAccessToken || got.RefreshToken != plainRefreshToken {
		t.Fatalf("secrets did not round-trip: %+v", got)
	}
	if got.Description != plainDescription || got.DACProjectID != "dac-project" || got.OAuthClientID != c.OAuthClientID {
		t.Fatalf("fields did not round-trip: %+v", got)
	}
	if got.AuthenticatedAt == nil || !got.AuthenticatedAt.Equal(authAt) || got.AuthenticatedAt.Location() != time.UTC {
		t.Fatalf("AuthenticatedAt = %v", got.AuthenticatedAt)
	}
	if !got.TokenExpiry.Equal(c.TokenExpiry) {
		t.Fatalf("TokenExpiry = %v, want %v", got.TokenExpiry, c.TokenExpiry)
	}

	js, _ := json.Marshal(got)
	for _, secret := range []string{plainClientSecret, plainAccessToken, plainRefreshToken} {
		if strings.Contains(string(js), secret) {
			t.Fatalf("API JSON contains a secret: %s", js)
		}
	}
	if !strings.Contains(string(js), `"token_expiry"`) {
		t.Fatalf("token_expiry missing: %s", js)
	}
	js, _ = json.Marshal(Credential{})
	if strings.Contains(string(js), "token_expiry") || !strings.Contains(string(js), `"authenticated_at":null`) {
		t.Fatalf("zero credential JSON: %s", js)
	}

	// Rewrite the secrets once so old page versions are in the file too.
	if _, err := s.UpdateCredential(c.ID, func(c *Credential) error {
		c.Description += " (updated)"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(plainDescription)) {
		t.Fatal("description not found in the db file; the scan is not looking at the data")
	}
	for _, secret := range []string{plainClientSecret, plainAccessToken, plainRefreshToken} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("db file contains %q in plain text", secret)
		}
		// encoding/json writes []byte as base64, so an unsealed []byte field
		// would show up like this (the first 27 bytes encode without padding).
		if enc := base64.StdEncoding.EncodeToString([]byte(secret[:27])); bytes.Contains(raw, []byte(enc)) {
			t.Errorf("db file contains %q base64-encoded but not encrypted", secret)
		}
	}
}

func TestCredentialUpdateListDelete(t *testing.T) {
	s, clk := openTest(t, t.TempDir())
	c1, _ := s.CreateCredential(Credential{Description: "one", RefreshToken: "r1"})
	c2, _ := s.CreateCredential(Credential{Description: "two"})

	clk.Advance(time.Minute)
	upd, err := s.UpdateCredential(c1.ID, func(c *Credential) error {
		c.ID = 77
		c.CreatedAt = time.Time{}
		c.AccessToken = "fresh"
		c.RefreshToken = ""
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if upd.ID != c1.ID || !upd.CreatedAt.Equal(c1.CreatedAt) || !upd.UpdatedAt.Equal(clk.Now()) {
		t.Fatalf("identity or timestamps wrong after update: %+v", upd)
	}
	got, _ := s.GetCredential(c1.ID)
	if got.AccessToken != "fresh" || got.RefreshToken != "" {
		t.Fatalf("update not stored: %+v", got)
	}

	boom := errors.New("boom")
	if _, err := s.UpdateCredential(c1.ID, func(c *Credential) error {
		c.AccessToken = "should not stick"
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("mutate error not returned: %v", err)
	}
	if got, _ := s.GetCredential(c1.ID); got.AccessToken != "fresh" {
		t.Fatalf("aborted update was stored: %+v", got)
	}
	if _, err := s.UpdateCredential(99, func(*Credential) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}

	list, err := s.ListCredentials()
	if err != nil || len(list) != 2 || list[0].ID != c1.ID || list[1].ID != c2.ID || list[0].AccessToken != "fresh" {
		t.Fatalf("ListCredentials = %+v, %v", list, err)
	}

	if err := s.DeleteCredential(c2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCredential(c2.ID); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "credential 2") {
		t.Fatalf("GetCredential after delete = %v", err)
	}
	if err := s.DeleteCredential(c2.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v", err)
	}
}

func TestDeleteCredentialCascadesCameras(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	c1, _ := s.CreateCredential(Credential{Description: "one"})
	c2, _ := s.CreateCredential(Credential{Description: "two"})
	for i, uid := range []string{"enterprises/p/devices/a", "enterprises/p/devices/b"} {
		if _, err := s.UpsertCamera(c1.ID, uid, func(c *Camera, _ bool) error {
			c.Path = "cam" + string(rune('a'+i))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	keep, err := s.UpsertCamera(c2.ID, "enterprises/p/devices/a", func(c *Camera, _ bool) error {
		c.Path = "other"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := s.DeleteCredential(c1.ID); err != nil {
		t.Fatal(err)
	}
	cams, _ := s.ListCameras()
	if len(cams) != 1 || cams[0].ID != keep.ID {
		t.Fatalf("cameras after delete: %+v", cams)
	}
	if _, err := s.GetCameraByPath("cama"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("path index not cleaned: %v", err)
	}
	// Both the path and the UID are reusable once the credential is gone.
	c3, _ := s.CreateCredential(Credential{})
	cam, err := s.UpsertCamera(c3.ID, "enterprises/p/devices/a", func(c *Camera, isNew bool) error {
		if !isNew {
			t.Error("camera of deleted credential was found by uid")
		}
		c.Path = "cama"
		return nil
	})
	if err != nil || cam.Path != "cama" {
		t.Fatalf("reuse after cascade: %+v, %v", cam, err)
	}
}
