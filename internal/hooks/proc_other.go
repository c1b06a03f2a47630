//go:build !unix

package hooks

import (
	"errors"
	"os/exec"
	"syscall"
)

// Without process groups a hook is killed alone; what it started may
// outlive it.
func ownGroup(*exec.Cmd) {}

var errNoGroups = errors.New("process groups are not supported on this system")

func signalGroup(pgid int, sig syscall.Signal) error { return errNoGroups }

const (
	sigTerminate = syscall.SIGINT
	sigKill      = syscall.SIGKILL
)
