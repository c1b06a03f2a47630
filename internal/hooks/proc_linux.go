package hooks

import "syscall"

// deathSignal makes the kernel SIGKILL the hook when the daemon dies, even
// by a crash or SIGKILL that runs no cleanup. It reaches the hook itself,
// not what the hook started (sh -c 'a | b' loses sh, not a and b); those
// are killed through the process group when the daemon stops in order.
// Strictly the signal comes when the OS thread that started the hook ends;
// Go keeps its threads until the process exits unless a goroutine locked
// to one exits, which nothing here does.
func deathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
