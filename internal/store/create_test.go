package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// An older nestmtx left an empty nestmtx.db after a first start on a full
// disk; it holds nothing and is replaced by a complete database.
func TestOpenReplacesEmptyDatabase(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, dbFileName)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := openTest(t, dir)
	if v, err := s.SchemaVersion(); err != nil || v != len(migrations) {
		t.Fatalf("SchemaVersion = %d, %v", v, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Size() == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("database %v, %v", st, err)
	}
}

// A new database appears complete under its name, and the temporary file
// it was built in is gone, as are those a crash left behind.
func TestOpenCreatesDatabaseAtomically(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, tempPrefix+"123"+tempSuffix)
	if err := os.WriteFile(stale, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := openTest(t, dir)
	if _, err := s.CreateUser("a", "pw", true, RoleAdmin); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[nestmtx.db secret.key]" {
		t.Fatalf("data directory holds %v", names)
	}
	st, err := os.Stat(filepath.Join(dir, dbFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("database mode %v, %v", st.Mode().Perm(), err)
	}
}

// Another process's database that appears while this one builds its own
// wins: link never replaces it.
func TestCreateDatabaseKeepsExisting(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, dbFileName)
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("theirs"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := createDatabase(dir, path, Options{LockTimeout: time.Second, Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket([]byte("theirs")) == nil {
			return errors.New("the existing database was replaced")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*")); len(m) != 0 {
		t.Fatalf("left %v", m)
	}
}

func TestFailureReasonNamesNoPath(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&fs.PathError{Op: "write", Path: "/secret/place/nestmtx.db", Err: syscall.ENOSPC}, "no space left on device"},
		{fmt.Errorf("file resize error: %s", &fs.PathError{Op: "truncate", Path: "/secret/place/nestmtx.db", Err: syscall.EDQUOT}), syscall.EDQUOT.Error()},
		{fmt.Errorf("file sync error: %s", &fs.PathError{Op: "sync", Path: "/secret/place/nestmtx.db", Err: syscall.EIO}), "input/output error"},
		{errors.New("something at /secret/place"), "input/output error (the log has the details)"},
		{bbolt.ErrDatabaseNotOpen, bbolt.ErrDatabaseNotOpen.Error()},
	} {
		if got := failureReason(c.err); got != c.want {
			t.Errorf("failureReason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// A refused change (a conflict) says nothing about the disk.
func TestRefusedWriteIsNotAWriteFailure(t *testing.T) {
	s, _ := openTest(t, t.TempDir())
	if _, err := s.CreateUser("a", "pw", true, RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser("a", "pw", true, RoleAdmin); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate user: %v", err)
	}
	s.writes.mu.Lock()
	werr := s.writes.writeErr
	s.writes.mu.Unlock()
	if werr != nil {
		t.Fatalf("a conflict was noted as a write failure: %v", werr)
	}
}
