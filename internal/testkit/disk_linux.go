package testkit

import (
	"fmt"
	"os"
	"syscall"
	"testing"
)

// SmallDisk mounts a tmpfs of size bytes (a real file system that answers
// ENOSPC when full) and returns its root. It needs root (CAP_SYS_ADMIN);
// without it the test skips, except under CI, where it must run. The mount
// goes when the test ends, before t.TempDir's removal and after whatever
// cleanup the test registers later (a daemon's shutdown, say).
func SmallDisk(t testing.TB, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): %v; under CI this test fails instead", err)
		}
		t.Fatalf("mount a small tmpfs to fill: %v (CI runs the tests as root)", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
