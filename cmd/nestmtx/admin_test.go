package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/store"
)

// adminStore makes a data directory with the users admin (whose token is
// returned) and alice, and closes it, as a stopped daemon leaves it.
func adminStore(t *testing.T) (dir, token string) {
	t.Helper()
	dir = t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.CreateUser("admin", "old-password", true, store.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateUser("alice", "alice-password", true, store.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if token, _, err = st.IssueToken(u.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	return dir, token
}

func withStore(t *testing.T, dir string, f func(*store.Store)) {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f(st)
}

func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

type adminRun struct {
	code           int
	stdout, stderr string
}

// runAdmin runs nestmtx admin with stdin a string (a pipe, as far as the
// command can tell) or an *os.File.
func runAdmin(t *testing.T, env map[string]string, stdin any, args ...string) adminRun {
	t.Helper()
	var in io.Reader
	switch s := stdin.(type) {
	case string:
		in = strings.NewReader(s)
	case *os.File:
		in = s
	default:
		t.Fatalf("stdin %T", stdin)
	}
	var out, errb bytes.Buffer
	code := admin(args, mapEnv(env), in, &out, &errb)
	return adminRun{code, out.String(), errb.String()}
}

// checkReset asserts which password logs admin in, and that the token
// issued before the reset is dead.
func checkReset(t *testing.T, dir, token, newPW string) {
	t.Helper()
	withStore(t, dir, func(st *store.Store) {
		if _, err := st.Authenticate("admin", newPW); err != nil {
			t.Errorf("the new password does not log in: %v", err)
		}
		if _, err := st.Authenticate("admin", "old-password"); !errors.Is(err, store.ErrBadCredentials) {
			t.Errorf("the old password: %v, want ErrBadCredentials", err)
		}
		if _, _, err := st.LookupToken(token); !errors.Is(err, store.ErrTokenInvalid) {
			t.Errorf("a token from before the reset: %v, want ErrTokenInvalid", err)
		}
		if _, err := st.Authenticate("alice", "alice-password"); err != nil {
			t.Errorf("another user was touched: %v", err)
		}
	})
}

func TestResetPasswordFromStdin(t *testing.T) {
	dir, token := adminStore(t)
	// Any case finds the user, as at login.
	r := runAdmin(t, nil, "new password\n", "reset-password", "--data-dir", dir, "ADMIN")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if r.stdout != "password of admin reset; its sessions were ended\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if strings.Contains(r.stdout+r.stderr, "new password\n") {
		t.Error("the password read from stdin was printed")
	}
	checkReset(t, dir, token, "new password")
}

func TestResetPasswordFromFile(t *testing.T) {
	dir, token := adminStore(t)
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("from the file\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The file wins over stdin, and flags may follow the user.
	r := runAdmin(t, map[string]string{"NESTMTX_DATA_DIR": dir}, "from stdin\n", "reset-password", "admin", "--password-file", file)
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	checkReset(t, dir, token, "from the file")

	missing := filepath.Join(t.TempDir(), "missing")
	r = runAdmin(t, map[string]string{"NESTMTX_DATA_DIR": dir}, "", "reset-password", "--password-file="+missing, "admin")
	if r.code != 1 || !strings.Contains(r.stderr, missing) {
		t.Errorf("missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestResetPasswordGenerated(t *testing.T) {
	dir, token := adminStore(t)
	initial := filepath.Join(dir, "initial-admin-password")
	if err := os.WriteFile(initial, []byte("old-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Locked out: admin disabled (by another admin, as the last one may not
	// be) and that admin's password lost.
	withStore(t, dir, func(st *store.Store) {
		if _, err := st.CreateUser("other-admin", "forgotten", true, store.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		disabled := false
		if _, err := st.UpdateUser(1, store.UserUpdate{CanLogin: &disabled}); err != nil {
			t.Fatal(err)
		}
	})
	// /dev/null is not a pipe or a file: nothing to read, as at a terminal.
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	yaml := filepath.Join(t.TempDir(), "nestmtx.yml")
	if err := os.WriteFile(yaml, []byte("data_dir: "+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runAdmin(t, map[string]string{"NESTMTX_CONFIG": yaml}, null, "reset-password", "admin")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 2 || lines[0] != "password of admin reset and its login enabled; its sessions were ended" ||
		!strings.HasPrefix(lines[1], "new password: ") {
		t.Fatalf("stdout %q", r.stdout)
	}
	pw := strings.TrimPrefix(lines[1], "new password: ")
	if len(pw) != 24 {
		t.Errorf("generated password %q, want 24 characters (18 random bytes)", pw)
	}
	checkReset(t, dir, token, pw)
	if _, err := os.Stat(initial); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists (%v); it holds the old password", initial, err)
	}
}

func TestResetPasswordOtherUserKeepsInitialFile(t *testing.T) {
	dir, _ := adminStore(t)
	initial := filepath.Join(dir, "initial-admin-password")
	if err := os.WriteFile(initial, []byte("old-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runAdmin(t, nil, "alice-new\n", "reset-password", "--data-dir="+dir, "alice")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(initial); err != nil {
		t.Errorf("resetting alice removed the admin's file: %v", err)
	}
}

func TestResetPasswordFailures(t *testing.T) {
	dir, _ := adminStore(t)
	for _, tt := range []struct {
		name    string
		stdin   string
		args    []string
		code    int
		wantErr string
	}{
		{"unknown user", "new-password\n", []string{"bob"}, 1, `nestmtx: no user "bob" in ` + dir},
		{"too short", "abc\n", []string{"admin"}, 1, "the password on standard input must be 6 to 1024 characters long, not 3"},
		{"too long", strings.Repeat("x", 1025) + "\n", []string{"admin"}, 1, "must be 6 to 1024 characters long, not 1025"},
		{"far too long", strings.Repeat("x", 10000), []string{"admin"}, 1, "longer than 1024 characters"},
		{"empty stdin", "", []string{"admin"}, 1, "no password on standard input"},
		{"not UTF-8", "pass\xffword\n", []string{"admin"}, 1, "not valid UTF-8"},
		{"no user", "new-password\n", nil, 2, "name exactly one user"},
		{"two users", "new-password\n", []string{"admin", "alice"}, 2, "name exactly one user"},
		{"unknown flag", "new-password\n", []string{"--force", "admin"}, 2, "flag provided but not defined: -force"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runAdmin(t, nil, tt.stdin, append([]string{"reset-password", "--data-dir", dir}, tt.args...)...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, tt.code, tt.wantErr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
			if strings.Contains(r.stderr, "new-password") || strings.Contains(r.stderr, "abc") {
				t.Errorf("stderr shows the password: %q", r.stderr)
			}
		})
	}
	// Nothing changed.
	withStore(t, dir, func(st *store.Store) {
		if _, err := st.Authenticate("admin", "old-password"); err != nil {
			t.Errorf("a failed reset changed the password: %v", err)
		}
	})
}

func TestResetPasswordNoDatabase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	r := runAdmin(t, nil, "new-password\n", "reset-password", "--data-dir", dir, "admin")
	if r.code != 1 || !strings.Contains(r.stderr, "no nestmtx database in "+dir) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a mistyped data directory was created: %v", err)
	}
}

// TestResetPasswordWhileServing holds the store open as a running daemon
// does: bbolt's flock is per open file, so a second Open in this process is
// refused like one from another process (internal/store's TestOpenLocked).
func TestResetPasswordWhileServing(t *testing.T) {
	dir, token := adminStore(t)
	held, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	start := time.Now()
	r := runAdmin(t, nil, "new-password\n", "reset-password", "--data-dir", dir, "admin")
	elapsed := time.Since(start)
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	if want := "nestmtx: the data directory " + dir + " is in use by a running nestmtx; stop it first\n"; r.stderr != want {
		t.Errorf("stderr %q\nwant   %q", r.stderr, want)
	}
	if elapsed > 8*time.Second {
		t.Errorf("gave up after %v, want a few seconds", elapsed)
	}
	if _, _, err := held.LookupToken(token); err != nil {
		t.Errorf("the refused reset touched the store: %v", err)
	}
}

func TestAdminUsage(t *testing.T) {
	for _, args := range [][]string{{"admin", "--help"}, {"admin", "help"}, {"help"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			t.Errorf("%q: exit %d", args, code)
		}
		if !strings.Contains(out.String(), "reset-password") {
			t.Errorf("%q does not list reset-password:\n%s", args, out.String())
		}
	}
	for _, args := range [][]string{{"admin"}, {"admin", "reset"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "reset-password") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"admin", "reset-password", "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-password-file") {
		t.Errorf("reset-password --help: exit %d, stderr %q", code, errb.String())
	}
}
