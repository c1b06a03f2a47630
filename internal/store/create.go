package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/bbolt"
)

// A new database is built under a name like ".nestmtx.db-123456.tmp".
const (
	tempPrefix = "." + dbFileName + "-"
	tempSuffix = ".tmp"
)

// ensureDatabase creates the database file at path unless there is one.
// bbolt would create it in place, and a first start that failed half-way
// (a full disk) left an empty or partial file that later starts trip over.
// A zero-byte file is such a leftover (of an older nestmtx) and holds
// nothing, so it is replaced.
func ensureDatabase(dataDir, path string, opt Options) error {
	st, err := os.Stat(path)
	switch {
	case err == nil && (st.Size() > 0 || !st.Mode().IsRegular()):
		return nil
	case err == nil:
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove empty database %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("open database %s: %w", path, err)
	}
	if err := createDatabase(dataDir, path, opt); err != nil {
		return fmt.Errorf("create database %s: %w", path, err)
	}
	return nil
}

// createDatabase builds a database at the current schema in a temporary
// file of dataDir, syncs it and links it into place. os.Link, unlike
// rename, never replaces a file: if another process created the database
// meanwhile, its file wins and this one is dropped (that process holds the
// lock, so Open then reports the data directory in use).
func createDatabase(dataDir, path string, opt Options) error {
	f, err := os.CreateTemp(dataDir, tempPrefix+"*"+tempSuffix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the link, the database keeps its own name
	if err := f.Close(); err != nil {
		return err
	}

	db, err := bbolt.Open(tmp, 0o600, &bbolt.Options{Timeout: opt.LockTimeout})
	if err != nil {
		return err
	}
	s := &Store{db: db, nowFn: opt.Now, path: tmp}
	err = s.migrate()
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// bbolt syncs each commit's data; this also makes sure of the file's
	// size and metadata before its name is.
	if err := syncFile(tmp); err != nil {
		return err
	}

	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		// A file system without hard links (some network and FAT
		// mounts): rename, which cannot refuse to replace, after a last look.
		if _, serr := os.Lstat(path); serr == nil {
			return nil
		}
		if rerr := os.Rename(tmp, path); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	// Persist the new name (and the temporary one's removal).
	os.Remove(tmp)
	syncDir(dataDir)
	return nil
}

func syncFile(name string) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir persists dir's entries. Errors are ignored: some file systems
// cannot sync a directory, and the file is complete whichever name survives
// a crash.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// removeStaleTemps removes databases whose creation a crash interrupted.
// Only a caller holding the database's lock may call it: a creation still
// under way in another process would fail anyway, since the database it
// would link into place exists and is locked.
func removeStaleTemps(dataDir string) {
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, tempPrefix) && strings.HasSuffix(n, tempSuffix) && e.Type().IsRegular() {
			_ = os.Remove(filepath.Join(dataDir, n))
		}
	}
}
