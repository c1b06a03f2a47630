package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/api"
	"github.com/nestmtx/nestmtx/internal/store"
)

// BenchmarkServeHTTP is the handler's own cost, without a network: an
// authenticated cameras list (two cameras) and the public version.
func BenchmarkServeHTTP(b *testing.B) {
	s, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	u, _ := s.CreateUser("admin", password, true, store.RoleAdmin)
	token, _, err := s.IssueToken(u.ID, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	cred, _ := s.CreateCredential(store.Credential{Description: "d"})
	for _, uid := range []string{"enterprises/p/devices/a", "enterprises/p/devices/b"} {
		if _, err := s.UpsertCamera(cred.ID, uid, func(c *store.Camera, _ bool) error { c.Name = uid; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := New(api.New(api.Deps{Store: s, Log: log}), Options{Log: log})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct{ name, path, token string }{
		{"cameras", "/api/cameras", token},
		{"version", "/api/version", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, tc.path, nil)
				if tc.token != "" {
					req.Header.Set("Authorization", "Bearer "+tc.token)
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}
