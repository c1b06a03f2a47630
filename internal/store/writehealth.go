package store

import (
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
)

// How the store tells whether it can still write (a full disk, a file
// system remounted read-only, a quota): every write transaction records
// whether its commit failed, and Writable probes the data directory now and
// then, so that a disk that fills while nobody writes is noticed too, and
// so is its recovery.
const (
	defaultWriteProbeInterval = 30 * time.Second
	// probeFileName is written and removed by each probe, next to the
	// database so that it lands on the same file system.
	probeFileName = ".nestmtx-write-probe"
	// probeSize is one block of most file systems: enough to tell a full
	// disk, and little wear on an SD card.
	probeSize = 4 << 10
)

var writeCheckKey = []byte("write_check")

// WriteFailure is Writable's answer while the database cannot be written.
type WriteFailure struct {
	// Reason says what is wrong without naming any path ("no space left
	// on device"), so it can be shown to callers who are not logged in.
	Reason string
	// Since is when writes started failing.
	Since time.Time
	// Err is the failure as it happened, paths included, for the log.
	Err error
}

func (f *WriteFailure) Error() string { return "the database cannot be written: " + f.Reason }
func (f *WriteFailure) Unwrap() error { return f.Err }

// writeMonitor holds what the store knows about its ability to write.
type writeMonitor struct {
	// order serialises update, so that results are noted in commit order
	// (bbolt allows one writer at a time anyway).
	order sync.Mutex
	// probing lets one caller probe while the others answer from the last
	// result.
	probing sync.Mutex

	mu       sync.Mutex
	log      *slog.Logger
	interval time.Duration
	writeErr error     // the last write transaction's commit error; nil once one succeeds
	probeErr error     // the last probe's error
	probedAt time.Time // when the last probe started; zero before the first
	okAt     time.Time // when a write transaction last committed
	failing  bool      // what was last logged
	since    time.Time // when failing became true
}

// SetLogger sets where the store logs a WARN line when writes start failing
// and an INFO line when they work again (Options.Log at Open).
func (s *Store) SetLogger(l *slog.Logger) {
	s.writes.mu.Lock()
	s.writes.log = l
	s.writes.mu.Unlock()
}

// SetWriteProbeInterval sets how often Writable may probe the disk
// (Options.WriteProbeInterval at Open); d <= 0 means 30s.
func (s *Store) SetWriteProbeInterval(d time.Duration) {
	if d <= 0 {
		d = defaultWriteProbeInterval
	}
	s.writes.mu.Lock()
	s.writes.interval = d
	s.writes.mu.Unlock()
}

// Writable reports whether the database can be written: nil, or a
// *WriteFailure while the last write transaction failed to commit or the
// data directory refuses new data. It may probe, by writing and syncing a
// small file in the data directory, at most once per probe interval, and
// not while write transactions keep committing (they prove the point at no
// cost); while the database's own writes are failing a successful probe is
// confirmed by a tiny write transaction, so that recovery is noticed
// without waiting for the next real write. Health checks may call it on
// every request.
func (s *Store) Writable() error {
	m := &s.writes
	now := s.nowFn()
	if m.probeDue(now) && m.probing.TryLock() {
		if m.probeDue(now) {
			s.probe(now)
		}
		m.probing.Unlock()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.currentLocked()
	if err == nil {
		return nil
	}
	return &WriteFailure{Reason: failureReason(err), Since: m.since, Err: err}
}

func (m *writeMonitor) probeDue(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	interval := m.interval
	if interval <= 0 {
		interval = defaultWriteProbeInterval
	}
	if m.writeErr == nil && m.probeErr == nil && !m.okAt.IsZero() && now.Sub(m.okAt) < interval && !now.Before(m.okAt) {
		return false
	}
	return m.probedAt.IsZero() || now.Sub(m.probedAt) >= interval || now.Before(m.probedAt)
}

func (m *writeMonitor) currentLocked() error {
	if m.writeErr != nil {
		return m.writeErr
	}
	return m.probeErr
}

func (s *Store) probe(now time.Time) {
	m := &s.writes
	m.mu.Lock()
	m.probedAt = now
	dbFailing := m.writeErr != nil
	m.mu.Unlock()

	err := probeDir(filepath.Dir(s.path))
	s.note(func(m *writeMonitor) { m.probeErr = err })
	if err == nil && dbFailing {
		// update notes the outcome.
		_ = s.update(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(writeCheckKey, itob(uint64(now.Unix())))
		})
	}
}

// probeDir writes, syncs and removes a small file in dir. The data is
// random so that a compressing file system must store all of it.
func probeDir(dir string) error {
	name := filepath.Join(dir, probeFileName)
	// A file left by a crash would let the write below overwrite blocks it
	// already holds, and succeed on a full disk.
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	buf := make([]byte, probeSize)
	_, _ = rand.Read(buf)
	_, err = f.Write(buf)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(name); err == nil && !errors.Is(rerr, os.ErrNotExist) {
		err = rerr
	}
	return err
}

// update runs fn in a write transaction, like bbolt's Update, and notes
// whether the commit worked. An error of fn's own (a conflict, a missing
// record) says nothing about the disk: nothing was written.
func (s *Store) update(fn func(tx *bbolt.Tx) error) error {
	s.writes.order.Lock()
	defer s.writes.order.Unlock()
	var fnErr error
	err := s.db.Update(func(tx *bbolt.Tx) error {
		fnErr = fn(tx)
		return fnErr
	})
	if err != nil && fnErr != nil {
		return err
	}
	s.note(func(m *writeMonitor) {
		m.writeErr = err
		if err == nil {
			m.okAt = s.nowFn()
		}
	})
	return err
}

// note applies change and logs a change of verdict.
func (s *Store) note(change func(m *writeMonitor)) {
	m := &s.writes
	m.mu.Lock()
	change(m)
	err := m.currentLocked()
	log := m.log
	var warn, recovered bool
	var failedFor time.Duration
	switch {
	case err != nil && !m.failing:
		m.failing, m.since = true, s.nowFn()
		warn = true
	case err == nil && m.failing:
		m.failing = false
		failedFor = s.nowFn().Sub(m.since)
		recovered = true
	}
	m.mu.Unlock()
	if log == nil {
		return
	}
	switch {
	case warn:
		log.Warn("the database cannot be written; changes fail until this is fixed",
			"reason", failureReason(err), "error", err, "path", s.path)
	case recovered:
		log.Info("the database can be written again", "path", s.path, "failed_for", failedFor.Round(time.Second).String())
	}
}

// failureReasons are the errors Writable names; anything else is reported
// as an I/O error, since its text may carry paths.
var failureReasons = []syscall.Errno{
	syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EIO, syscall.EFBIG,
	syscall.EACCES, syscall.EPERM, syscall.ENOENT,
}

// failureReason describes err without the paths it may carry.
func failureReason(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	for _, e := range []error{bbolt.ErrDatabaseNotOpen, bbolt.ErrDatabaseReadOnly} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	// bbolt formats some errors with %s ("file resize error: truncate
	// /data/nestmtx.db: no space left on device"), losing the errno.
	msg := err.Error()
	for _, e := range failureReasons {
		if strings.HasSuffix(msg, ": "+e.Error()) {
			return e.Error()
		}
	}
	return "input/output error (the log has the details)"
}
