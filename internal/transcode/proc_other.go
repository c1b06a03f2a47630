//go:build !linux

package transcode

import (
	"syscall"
	"time"
)

// childSysProcAttr: only Linux can tie the child's life to the daemon's;
// elsewhere Close and context cancellation still kill it.
func childSysProcAttr() *syscall.SysProcAttr { return nil }

// liveCPU is not measured outside Linux; exited children still count.
func liveCPU(int) time.Duration { return 0 }
