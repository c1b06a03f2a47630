package store

import (
	"encoding/base64"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestTokenIssueLookupExpire(t *testing.T) {
	s, clk := openTest(t, t.TempDir())
	u, err := s.CreateUser("admin", "pw", true, RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	tok, exp, err := s.IssueToken(u.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) != 32 || strings.ContainsAny(tok, "=+/") {
		t.Fatalf("token %q is not 32 bytes of unpadded base64url", tok)
	}
	if !exp.Equal(clk.Now().Add(time.Hour)) || exp.Location() != time.UTC {
		t.Fatalf("expiry %v", exp)
	}
	tok2, _, _ := s.IssueToken(u.ID, time.Hour)
	if tok2 == tok {
		t.Fatal("two tokens are equal")
	}

	got, gotExp, err := s.LookupToken(tok)
	if err != nil || got.ID != u.ID || !gotExp.Equal(exp) {
		t.Fatalf("LookupToken = %+v, %v, %v", got, gotExp, err)
	}
	// Change the last character to another one: a token ending in "A" is
	// common (its last character carries only four bits), so a fixed
	// replacement would sometimes give the token back unchanged.
	other := "A"
	if strings.HasSuffix(tok, "A") {
		other = "E"
	}
	if _, _, err := s.LookupToken(tok[:42] + other); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("unknown token: %v", err)
	}
	for _, bad := range []string{"", "x", strings.Repeat("A", 10000)} {
		if _, _, err := s.LookupToken(bad); !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("LookupToken(%.10q) = %v", bad, err)
		}
	}

	// Only the hash is stored.
	err = s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			if strings.Contains(string(k)+string(v), tok) {
				t.Error("token stored in plain text")
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	clk.Advance(time.Hour - time.Nanosecond)
	if _, _, err := s.LookupToken(tok); err != nil {
		t.Fatalf("token rejected before expiry: %v", err)
	}
	clk.Advance(time.Nanosecond)
	if _, _, err := s.LookupToken(tok); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("expired token accepted: %v", err)
	}
	if n := countTokens(t, s); n != 1 {
		t.Fatalf("expired token not deleted on lookup: %d tokens left, want 1", n)
	}
	// tok2 is expired too but was never looked up; pruning finds it.
	if n, err := s.PruneExpiredTokens(); err != nil || n != 1 {
		t.Fatalf("PruneExpiredTokens = %d, %v; want 1", n, err)
	}
	if n := countTokens(t, s); n != 0 {
		t.Fatalf("%d tokens after prune", n)
	}

	if _, _, err := s.IssueToken(u.ID, 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero ttl: %v", err)
	}
	if _, _, err := s.IssueToken(99, time.Hour); !errors.Is(err, ErrNotFound) {
		t.Fatalf("token for unknown user: %v", err)
	}
}

func TestPruneKeepsLiveTokens(t *testing.T) {
	s, clk := openTest(t, t.TempDir())
	u, _ := s.CreateUser("admin", "pw", true, RoleAdmin)
	short, _, _ := s.IssueToken(u.ID, time.Minute)
	long, _, _ := s.IssueToken(u.ID, time.Hour)
	clk.Advance(2 * time.Minute)
	if n, err := s.PruneExpiredTokens(); err != nil || n != 1 {
		t.Fatalf("PruneExpiredTokens = %d, %v", n, err)
	}
	if _, _, err := s.LookupToken(long); err != nil {
		t.Fatalf("live token pruned: %v", err)
	}
	if _, _, err := s.LookupToken(short); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("expired token survived: %v", err)
	}
}

func TestRevokeToken(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	u, _ := s.CreateUser("admin", "pw", true, RoleAdmin)
	tok, _, _ := s.IssueToken(u.ID, time.Hour)
	other, _, _ := s.IssueToken(u.ID, time.Hour)
	if err := s.RevokeToken(tok); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LookupToken(tok); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("revoked token works: %v", err)
	}
	if _, _, err := s.LookupToken(other); err != nil {
		t.Fatalf("revoking one token broke another: %v", err)
	}
	if err := s.RevokeToken(tok); err != nil {
		t.Fatalf("second revoke = %v, want nil", err)
	}
}

func TestTokensRevokedByAccountChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(s *Store, id uint64) error
	}{
		{"password change", func(s *Store, id uint64) error {
			_, err := s.UpdateUser(id, UserUpdate{Password: ptr("new")})
			return err
		}},
		{"disable", func(s *Store, id uint64) error {
			_, err := s.UpdateUser(id, UserUpdate{CanLogin: ptr(false)})
			return err
		}},
		{"delete", func(s *Store, id uint64) error { return s.DeleteUser(id) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTest(t, t.TempDir())
			u, _ := s.CreateUser("a", "pw", true, RoleAdmin)
			other, _ := s.CreateUser("b", "pw", true, RoleAdmin)
			tok, _, _ := s.IssueToken(u.ID, time.Hour)
			otherTok, _, _ := s.IssueToken(other.ID, time.Hour)
			if err := tc.change(s, u.ID); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.LookupToken(tok); !errors.Is(err, ErrTokenInvalid) {
				t.Fatalf("token survived %s: %v", tc.name, err)
			}
			if n := countTokens(t, s); n != 1 {
				t.Fatalf("%d tokens stored, want only the other user's", n)
			}
			if _, _, err := s.LookupToken(otherTok); err != nil {
				t.Fatalf("other user's token revoked: %v", err)
			}
		})
	}
}

func TestRenameKeepsTokens(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	u, _ := s.CreateUser("a", "pw", true, RoleAdmin)
	tok, _, _ := s.IssueToken(u.ID, time.Hour)
	if _, err := s.UpdateUser(u.ID, UserUpdate{Username: ptr("b"), CanLogin: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if got, _, err := s.LookupToken(tok); err != nil || got.Username != "b" {
		t.Fatalf("LookupToken after rename = %+v, %v", got, err)
	}
}

func TestIssueTokenForDisabledUser(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	u, _ := s.CreateUser("a", "pw", false, RoleAdmin)
	if _, _, err := s.IssueToken(u.ID, time.Hour); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("IssueToken for disabled user = %v", err)
	}
}

func countTokens(t testing.TB, s *Store) int {
	t.Helper()
	n := 0
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func BenchmarkLookupToken(b *testing.B) {
	dir, err := os.MkdirTemp("", "nestmtx-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	s, _ := openTest(b, dir)
	u, err := s.CreateUser("admin", "pw", true, RoleAdmin)
	if err != nil {
		b.Fatal(err)
	}
	// A realistic number of other live sessions.
	for range 200 {
		if _, _, err := s.IssueToken(u.ID, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	tok, _, _ := s.IssueToken(u.ID, time.Hour)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := s.LookupToken(tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// Exercises the hot path against concurrent writers under -race.
func TestConcurrentLookupAndUpdates(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	u, _ := s.CreateUser("a", "pw", true, RoleAdmin)
	tok, _, _ := s.IssueToken(u.ID, time.Hour)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 50 {
			name := []string{"a", "b"}[i%2]
			if _, err := s.UpdateUser(u.ID, UserUpdate{Username: &name}); err != nil {
				t.Error(err)
				return
			}
			if _, _, err := s.IssueToken(u.ID, time.Hour); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 4 {
		wg.Go(func() {
			for range 200 {
				if _, _, err := s.LookupToken(tok); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
