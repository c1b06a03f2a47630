package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestOpenSchemaVersion(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s, _ := openTest(t, dir)
	if v, err := s.SchemaVersion(); err != nil || v != 2 {
		t.Fatalf("SchemaVersion = %d, %v; want 2", v, err)
	}
	if s.Path() != filepath.Join(dir, "nestmtx.db") {
		t.Fatalf("Path = %q", s.Path())
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode = %v, %v; want 0700", st.Mode().Perm(), err)
	}
	err = s.db.View(func(tx *bbolt.Tx) error {
		for _, b := range []string{"meta", "users", "users_by_name", "tokens", "credentials", "cameras", "cameras_by_path", "cameras_by_uid"} {
			if tx.Bucket([]byte(b)) == nil {
				t.Errorf("bucket %s missing", b)
			}
		}
		if v := tx.Bucket(bucketMeta).Get(schemaVersionKey); !bytes.Equal(v, []byte{0, 0, 0, 0, 0, 0, 0, 2}) {
			t.Errorf("schema_version bytes = %x, want big-endian 2", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, _ := openTest(t, dir)
	if v, err := s2.SchemaVersion(); err != nil || v != 2 {
		t.Fatalf("after reopen SchemaVersion = %d, %v; want 2", v, err)
	}
}

func TestOpenNewerSchema(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTest(t, dir)
	err := s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(schemaVersionKey, itob(uint64(len(migrations)+1)))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	_, err = Open(dir, Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("schema version %d", len(migrations)+1)) {
		t.Errorf("message does not name the version: %v", err)
	}
	// The failed Open must have released the lock.
	s3, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
	if s3 != nil || !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("second Open = %v", err)
	}
}

func TestMigrationsResumeFromStoredVersion(t *testing.T) {
	dir := t.TempDir()
	// An empty bbolt file, as left by a crash before the first migration.
	db, err := bbolt.Open(filepath.Join(dir, "nestmtx.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, _ := openTest(t, dir)
	if v, _ := s.SchemaVersion(); v != len(migrations) {
		t.Fatalf("version %d, want %d", v, len(migrations))
	}
	if _, err := s.CreateUser("a", "pw", true, RoleAdmin); err != nil {
		t.Fatalf("buckets not created: %v", err)
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir)

	start := time.Now()
	s2, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
	elapsed := time.Since(start)
	if s2 != nil {
		s2.Close()
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	want := "data directory " + dir + " is in use by another nestmtx process (could not lock " + filepath.Join(dir, "nestmtx.db") + " within 200ms)"
	if err.Error() != want {
		t.Errorf("message = %q\nwant      %q", err.Error(), want)
	}
	if elapsed < 100*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("gave up after %v, want about 200ms", elapsed)
	}
}

func TestSecretKeyCreatedAndReused(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTest(t, dir)
	keyPath := filepath.Join(dir, "secret.key")
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != 32 {
		t.Fatalf("secret.key mode %v size %d, want 0600 and 32", st.Mode().Perm(), st.Size())
	}
	key1, _ := os.ReadFile(keyPath)
	c, err := s.CreateCredential(Credential{Description: "d", RefreshToken: "rt"})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2, _ := openTest(t, dir)
	key2, _ := os.ReadFile(keyPath)
	if !bytes.Equal(key1, key2) {
		t.Fatal("secret.key changed on reopen")
	}
	got, err := s2.GetCredential(c.ID)
	if err != nil || got.RefreshToken != "rt" {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
}

func TestSecretKeyWrongSizeIsError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret.key"), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("Open accepted a 5-byte key")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "secret.key")); string(b) != "short" {
		t.Fatal("key file was replaced")
	}
}

func TestReplacedKeyDetected(t *testing.T) {
	dir := t.TempDir()
	s, _ := openTest(t, dir)
	if _, err := s.CreateCredential(Credential{OAuthClientSecret: "x"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Remove(filepath.Join(dir, "secret.key")); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("Open with a new key = %v, want ErrKeyMismatch", err)
	}

	// Without credentials nothing is lost, so a new key is adopted.
	dir2 := t.TempDir()
	s2, _ := openTest(t, dir2)
	s2.Close()
	os.Remove(filepath.Join(dir2, "secret.key"))
	s3, _ := openTest(t, dir2)
	s3.Close()
	s4, _ := openTest(t, dir2)
	if _, err := s4.CreateCredential(Credential{OAuthClientSecret: "x"}); err != nil {
		t.Fatal(err)
	}
}
