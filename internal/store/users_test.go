package store

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUserCRUD(t *testing.T) {
	s, clk := openTest(t, t.TempDir())

	if n, _ := s.CountUsers(); n != 0 {
		t.Fatalf("CountUsers = %d on empty store", n)
	}
	alice, err := s.CreateUser("Alice", "pw1", true, RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if alice.ID != 1 || alice.Username != "Alice" || !alice.CanLogin {
		t.Fatalf("created %+v", alice)
	}
	if alice.CreatedAt.Location() != time.UTC || !alice.CreatedAt.Equal(clk.Now()) {
		t.Fatalf("CreatedAt = %v, want %v in UTC", alice.CreatedAt, clk.Now())
	}
	bob, err := s.CreateUser("bob", "pw2", false, RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}

	for _, dup := range []string{"Alice", "alice", "ALICE"} {
		if _, err := s.CreateUser(dup, "x", true, RoleAdmin); !errors.Is(err, ErrConflict) {
			t.Errorf("CreateUser(%q) = %v, want ErrConflict", dup, err)
		} else if !strings.Contains(err.Error(), dup) {
			t.Errorf("conflict message does not name %q: %v", dup, err)
		}
	}
	for _, bad := range []string{"", " alice", "a\nb", strings.Repeat("x", 65)} {
		if _, err := s.CreateUser(bad, "x", true, RoleAdmin); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateUser(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := s.CreateUser("carol", "", true, RoleAdmin); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty password: %v", err)
	}

	got, err := s.GetUser(bob.ID)
	if err != nil || got.Username != "bob" || got.CanLogin || got.PasswordHash == "" {
		t.Fatalf("GetUser = %+v, %v", got, err)
	}
	if _, err := s.GetUser(99); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "user 99") {
		t.Fatalf("GetUser(99) = %v", err)
	}
	list, err := s.ListUsers()
	if err != nil || len(list) != 2 || list[0].ID != alice.ID || list[1].ID != bob.ID {
		t.Fatalf("ListUsers = %+v, %v", list, err)
	}
	if n, _ := s.CountUsers(); n != 2 {
		t.Fatalf("CountUsers = %d", n)
	}

	// The hash must be stored but hidden from API JSON.
	js, _ := json.Marshal(got)
	if strings.Contains(string(js), "argon2") || strings.Contains(string(js), "password") {
		t.Fatalf("user JSON leaks the hash: %s", js)
	}

	clk.Advance(time.Minute)
	if _, err := s.UpdateUser(bob.ID, UserUpdate{Username: ptr("ALICE")}); !errors.Is(err, ErrConflict) {
		t.Fatalf("rename to taken name = %v", err)
	}
	u, err := s.UpdateUser(bob.ID, UserUpdate{Username: ptr("Robert"), CanLogin: ptr(true)})
	if err != nil || u.Username != "Robert" || !u.CanLogin || !u.UpdatedAt.Equal(clk.Now()) || u.CreatedAt.Equal(u.UpdatedAt) {
		t.Fatalf("UpdateUser = %+v, %v", u, err)
	}
	// The old name is free again; the new one is taken case-insensitively.
	if _, err := s.CreateUser("BOB", "x", true, RoleAdmin); err != nil {
		t.Fatalf("old name not released: %v", err)
	}
	if _, err := s.CreateUser("robert", "x", true, RoleAdmin); !errors.Is(err, ErrConflict) {
		t.Fatalf("new name not indexed: %v", err)
	}
	// Changing only the case of one's own name is allowed.
	if u, err := s.UpdateUser(alice.ID, UserUpdate{Username: ptr("alice")}); err != nil || u.Username != "alice" {
		t.Fatalf("case-only rename = %+v, %v", u, err)
	}
	if _, err := s.Authenticate("ALICE", "pw1"); err != nil {
		t.Fatalf("login after case-only rename: %v", err)
	}
	if _, err := s.UpdateUser(99, UserUpdate{CanLogin: ptr(false)}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateUser(99) = %v", err)
	}

	if err := s.DeleteUser(bob.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUser(bob.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted user still there: %v", err)
	}
	if _, err := s.CreateUser("robert", "x", true, RoleAdmin); err != nil {
		t.Fatalf("deleted user's name not released: %v", err)
	}
	if err := s.DeleteUser(bob.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v", err)
	}
}

func TestAuthenticate(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	u, err := s.CreateUser("Admin", "hunter2", true, RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser("disabled", "hunter2", false, RoleAdmin); err != nil {
		t.Fatal(err)
	}

	got, err := s.Authenticate("admin", "hunter2")
	if err != nil || got.ID != u.ID {
		t.Fatalf("Authenticate ok case = %+v, %v", got, err)
	}
	for _, tc := range []struct{ user, pw string }{
		{"admin", "hunter3"},
		{"admin", ""},
		{"nobody", "hunter2"},
		{"", ""},
		{"disabled", "hunter2"},
	} {
		got, err := s.Authenticate(tc.user, tc.pw)
		if !errors.Is(err, ErrBadCredentials) || got.ID != 0 {
			t.Errorf("Authenticate(%q, %q) = %+v, %v; want ErrBadCredentials", tc.user, tc.pw, got, err)
		}
	}

	if _, err := s.UpdateUser(u.ID, UserUpdate{Password: ptr("new")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate("admin", "hunter2"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("old password still works: %v", err)
	}
	if _, err := s.Authenticate("admin", "new"); err != nil {
		t.Fatalf("new password rejected: %v", err)
	}
}

// Unknown users must cost an argon2 verification like known ones, or the
// response time would reveal which usernames exist.
func TestAuthenticateUnknownUserTiming(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	if _, err := s.CreateUser("admin", "pw", true, RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := dummyHash(); err != nil { // exclude the one-time setup
		t.Fatal(err)
	}
	measure := func(user string) time.Duration {
		best := time.Hour
		for range 3 {
			start := time.Now()
			s.Authenticate(user, "wrong")
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := measure("admin"), measure("nobody")
	if unknown < known/3 {
		t.Fatalf("unknown user took %v, known %v: no dummy verification", unknown, known)
	}
}
