package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/nestmtx/nestmtx/internal/testkit"
)

// filler takes up all free space of a file system until freed.
type filler struct {
	t    *testing.T
	f    *os.File
	size int64
}

// fill writes into dir/filler until the file system answers ENOSPC.
func fill(t *testing.T, dir string) *filler {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	fl := &filler{t: t, f: f}
	buf := bytes.Repeat([]byte{0xa5}, 64<<10)
	for {
		n, err := f.Write(buf)
		fl.size += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { f.Close() })
	return fl
}

// release frees n bytes of the filled space.
func (fl *filler) release(n int64) {
	fl.t.Helper()
	fl.size = max(0, fl.size-n)
	if err := fl.f.Truncate(fl.size); err != nil {
		fl.t.Fatal(err)
	}
}

func (fl *filler) releaseAll() { fl.release(fl.size) }

// bigWrite stores a value far larger than any page the database could
// reuse, so the commit must grow the file.
func bigWrite(s *Store, key string) error {
	return s.update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("test_big"))
		if err != nil {
			return err
		}
		return b.Put([]byte(key), bytes.Repeat([]byte(key), 256<<10/len(key)))
	})
}

// logLines collects what the store logs.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func (l *logLines) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func assertNoDatabase(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == dbFileName || strings.HasPrefix(e.Name(), tempPrefix) {
			info, _ := e.Info()
			t.Errorf("a failed first start left %s (%d bytes)", e.Name(), info.Size())
		}
	}
}

func TestDiskFullFirstStartLeavesNoDatabase(t *testing.T) {
	root := testkit.SmallDisk(t, 1<<20)
	dir := filepath.Join(root, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	fl := fill(t, root)

	s, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("Open on a full disk succeeded")
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "create database "+filepath.Join(dir, dbFileName)) ||
		!strings.HasSuffix(err.Error(), "no space left on device") {
		t.Errorf("Open on a full disk = %q; want it to name the database and the cause", err)
	}
	assertNoDatabase(t, dir)

	// Space again: the next start works.
	fl.releaseAll()
	s, _ = openTest(t, dir)
	if v, err := s.SchemaVersion(); err != nil || v != len(migrations) {
		t.Fatalf("SchemaVersion = %d, %v", v, err)
	}
	if _, err := s.CreateUser("admin", "pw", true, RoleAdmin); err != nil {
		t.Fatal(err)
	}
}

// With a little space, a first start fails at some point (creating the
// database, the key, writing the key check) or works; either way it leaves
// no database or a complete one, and the next start with space works.
func TestDiskNearlyFullFirstStart(t *testing.T) {
	root := testkit.SmallDisk(t, 1<<20)
	var frees []int64
	for free := int64(0); free <= 64<<10; free += 4 << 10 {
		frees = append(frees, free)
	}
	for _, free := range append(frees, 128<<10) {
		t.Run(fmt.Sprintf("free=%dKiB", free>>10), func(t *testing.T) {
			dir := filepath.Join(root, "data")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			fl := fill(t, root)
			fl.release(free)
			s, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
			t.Logf("Open: %v", err)
			if err == nil {
				s.Close()
			} else if _, serr := os.Stat(filepath.Join(dir, dbFileName)); errors.Is(serr, fs.ErrNotExist) {
				assertNoDatabase(t, dir)
			}
			fl.releaseAll()
			// Whatever is left must be a complete database.
			db, err := bbolt.Open(filepath.Join(dir, dbFileName), 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
			if err == nil {
				err = db.View(func(tx *bbolt.Tx) error {
					if v, err := readSchemaVersion(tx); err != nil || v != uint64(len(migrations)) {
						return fmt.Errorf("schema version %d, %v", v, err)
					}
					return nil
				})
				db.Close()
				if err != nil {
					t.Fatalf("left an incomplete database: %v", err)
				}
			} else if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("left a database bbolt cannot open: %v", err)
			}
			s, err = Open(dir, Options{LockTimeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatalf("the start after space was freed: %v", err)
			}
			defer s.Close()
			if _, err := s.CreateUser("admin", "pw", true, RoleAdmin); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDiskFullWriteFailsThenRecovers(t *testing.T) {
	root := testkit.SmallDisk(t, 2<<20)
	dir := filepath.Join(root, "data")
	var logs logLines
	clk := &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	s, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond, Now: clk.Now, Log: logs.logger(), WriteProbeInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Writable(); err != nil {
		t.Fatalf("Writable on an empty disk = %v", err)
	}
	if err := bigWrite(s, "before"); err != nil {
		t.Fatal(err)
	}

	fl := fill(t, root)
	err = bigWrite(s, "during")
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write on a full disk = %v, want ENOSPC", err)
	}
	// The failed commit counts at once, without waiting for a probe.
	werr := s.Writable()
	var f *WriteFailure
	if !errors.As(werr, &f) || werr.Error() != "the database cannot be written: no space left on device" ||
		!errors.Is(werr, syscall.ENOSPC) || !f.Since.Equal(clk.Now()) {
		t.Fatalf("Writable after a failed write = %v (%+v)", werr, f)
	}
	if strings.Contains(werr.Error(), root) {
		t.Errorf("the reason names a path: %v", werr)
	}
	if err := bigWrite(s, "again"); err == nil {
		t.Fatal("second write on a full disk succeeded")
	}
	// Reads still work.
	if v, err := s.SchemaVersion(); err != nil || v != len(migrations) {
		t.Fatalf("SchemaVersion on a full disk = %d, %v", v, err)
	}

	// Freed space is noticed by the next probe, with nobody writing.
	fl.releaseAll()
	if s.Writable() == nil {
		t.Fatal("Writable probed before its interval was up")
	}
	clk.Advance(time.Minute)
	if err := s.Writable(); err != nil {
		t.Fatalf("Writable after space was freed = %v", err)
	}
	if err := bigWrite(s, "after"); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	if w, i := logs.count("level=WARN"), logs.count("level=INFO"); w != 1 || i != 1 {
		t.Errorf("logged %d WARN and %d INFO lines, want 1 and 1:\n%s", w, i, logs.buf.String())
	}
	if logs.count(`reason="no space left on device"`) != 1 || logs.count("the database can be written again") != 1 {
		t.Errorf("log:\n%s", logs.buf.String())
	}
	if _, err := os.Stat(filepath.Join(dir, probeFileName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the probe left its file: %v", err)
	}
	// Everything written before and after the full disk is there.
	err = s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("test_big"))
		for _, k := range []string{"before", "after"} {
			if len(b.Get([]byte(k))) == 0 {
				return fmt.Errorf("%s missing", k)
			}
		}
		if b.Get([]byte("during")) != nil {
			return errors.New("the failed write is there")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A disk that fills while nobody writes is noticed by the probe, at most
// once per interval, and so is its recovery.
func TestDiskFullNoticedWithoutWrites(t *testing.T) {
	root := testkit.SmallDisk(t, 2<<20)
	dir := filepath.Join(root, "data")
	var logs logLines
	s, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond, Log: logs.logger(), WriteProbeInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Writable(); err != nil {
		t.Fatal(err)
	}
	fl := fill(t, root)
	testkit.Eventually(t, 5*time.Second, "Writable to notice the full disk", func() bool {
		return s.Writable() != nil
	})
	if err := s.Writable(); err == nil || err.Error() != "the database cannot be written: no space left on device" {
		t.Fatalf("Writable = %v", err)
	}
	fl.releaseAll()
	testkit.Eventually(t, 5*time.Second, "Writable to notice the freed space", func() bool {
		return s.Writable() == nil
	})
	if w, i := logs.count("level=WARN"), logs.count("level=INFO"); w != 1 || i != 1 {
		t.Errorf("logged %d WARN and %d INFO lines, want 1 and 1:\n%s", w, i, logs.buf.String())
	}
}

// A read-only file system: Open cannot create the database, says why and
// leaves nothing. (Linux refuses to remount a file system read-only while a
// file on it is open for writing, so an open store is not tested here.)
func TestReadOnlyDiskFirstStart(t *testing.T) {
	root := testkit.SmallDisk(t, 1<<20)
	dir := filepath.Join(root, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("", root, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Open on a read-only file system = %v", err)
	}
	assertNoDatabase(t, dir)
	if err := syscall.Mount("", root, "", syscall.MS_REMOUNT, ""); err != nil {
		t.Fatalf("remount read-write: %v", err)
	}
	s, _ := openTest(t, dir)
	if err := s.Writable(); err != nil {
		t.Fatal(err)
	}
}
