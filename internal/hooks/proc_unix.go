//go:build unix

package hooks

import (
	"errors"
	"os/exec"
	"syscall"
)

// ownGroup puts the hook in a process group of its own (its id is the
// hook's pid), so that the group can be signalled with everything the
// hook started; on Linux the kernel also kills it if the daemon dies.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	deathSignal(cmd.SysProcAttr)
}

// signalGroup signals the process group pgid; a group already gone is no
// error.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 0 {
		return nil
	}
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

const (
	sigTerminate = syscall.SIGINT // what MediaMTX sends
	sigKill      = syscall.SIGKILL
)
