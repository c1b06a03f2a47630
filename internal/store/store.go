// Package store keeps all nestmtx state (users, API tokens, Google
// credentials, cameras) in a single bbolt file inside the data directory.
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"

	"github.com/nestmtx/nestmtx/internal/secret"
)

const (
	dbFileName         = "nestmtx.db"
	keyFileName        = "secret.key"
	defaultLockTimeout = 3 * time.Second
)

// Options tunes Open. The zero value is ready to use.
type Options struct {
	// LockTimeout bounds the wait for another process to release the
	// database; 0 means 3s. bbolt would otherwise wait forever.
	LockTimeout time.Duration
	// Now replaces time.Now, so tests can move the clock for token expiry
	// and the write probe's schedule.
	Now func() time.Time
	// Log receives one WARN line when the database's writes start failing
	// (a full disk) and one INFO line when they work again; nil means
	// slog.Default(). SetLogger changes it later.
	Log *slog.Logger
	// WriteProbeInterval bounds how often Writable probes the disk; 0
	// means 30s. SetWriteProbeInterval changes it later.
	WriteProbeInterval time.Duration
}

// Store is safe for concurrent use. bbolt allows one writer at a time and any
// number of readers; mutate callbacks run inside the write transaction and
// must not call back into the Store.
type Store struct {
	db      *bbolt.DB
	box     *secret.Box
	nowFn   func() time.Time
	path    string
	keyPath string
	writes  writeMonitor
}

// Open opens (creating if needed) the database in dataDir and brings its
// schema up to date. A new database is built in a temporary file and moved
// into place complete, so a first start that fails (a full disk) leaves no
// database behind rather than an empty or half-written one.
func Open(dataDir string, opt Options) (*Store, error) {
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = defaultLockTimeout
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dataDir, dbFileName)
	if err := ensureDatabase(dataDir, path, opt); err != nil {
		return nil, err
	}

	// Lock the database before touching secret.key: only the process holding
	// the lock may create the key, so two daemons started at once cannot each
	// generate one and leave the winner encrypting with a key that was
	// overwritten on disk.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opt.LockTimeout})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, &lockedError{dir: dataDir, db: path, timeout: opt.LockTimeout}
	}
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	keyPath := filepath.Join(dataDir, keyFileName)
	box, err := secret.LoadOrCreateKey(keyPath)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, box: box, nowFn: opt.Now, path: path, keyPath: keyPath}
	s.SetLogger(opt.Log)
	s.SetWriteProbeInterval(opt.WriteProbeInterval)
	// Holding the lock, this process is the database's only user: any
	// temporary file next to it is left over from a crashed creation.
	removeStaleTemps(dataDir)
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.checkKey(); err != nil {
		db.Close()
		return nil, err
	}
	// Compute the dummy hash now so the first login attempt for an unknown
	// user is not slower than the rest.
	go func() { _, _ = dummyHash() }()
	return s, nil
}

// DatabasePath is the database file of the data directory dataDir, for
// tools that must not create one where there is none (Open would).
func DatabasePath(dataDir string) string { return filepath.Join(dataDir, dbFileName) }

// Close releases the database file and its lock.
func (s *Store) Close() error { return s.db.Close() }

// Path is the database file's path.
func (s *Store) Path() string { return s.path }

func (s *Store) now() time.Time { return s.nowFn().UTC() }

var (
	keyCheckKey   = []byte("secret_check")
	keyCheckPlain = []byte("nestmtx secret.key check")
)

// checkKey catches a secret.key that was deleted or swapped (a restore of the
// database without its key): LoadOrCreateKey would silently make a new one,
// and every stored Google secret would fail to decrypt later, far from the
// cause. With no credentials stored nothing is lost, so the new key is
// simply adopted.
func (s *Store) checkKey() error {
	var ok bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyCheckKey)
		if v == nil {
			return nil
		}
		if pt, err := s.box.Open(v); err == nil && string(pt) == string(keyCheckPlain) {
			ok = true
			return nil
		}
		if k, _ := tx.Bucket(bucketCredentials).Cursor().First(); k != nil {
			return fmt.Errorf("%s cannot decrypt the Google credentials stored in %s (was the key file replaced or deleted?): %w", s.keyPath, s.path, ErrKeyMismatch)
		}
		return nil
	})
	if err != nil || ok {
		return err
	}
	return s.update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyCheckKey, s.box.Seal(keyCheckPlain))
	})
}
