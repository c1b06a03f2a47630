package transcode

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// childSysProcAttr makes the kernel SIGKILL the child when the daemon dies,
// even by a crash or SIGKILL that runs no cleanup. Strictly the signal
// comes when the OS thread that started the child ends; Go keeps its
// threads until the process exits unless a goroutine locked to one exits,
// which nothing here does.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat: fixed at 100
// for user space on Linux, whatever the kernel's own tick.
const userHZ = 100

// liveCPU is the user+system time of the running process pid, or 0.
func liveCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count fields after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	// After ')': state is field 3, so utime (14) and stime (15) are 11 and 12.
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+s) * time.Second / userHZ
}
