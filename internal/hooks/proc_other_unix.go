//go:build unix && !linux

package hooks

import "syscall"

// deathSignal: only Linux can tie the hook's life to the daemon's;
// elsewhere the daemon's stop still kills the process group.
func deathSignal(*syscall.SysProcAttr) {}
