//go:build !linux

package netguard

import "syscall"

var platformTransientErrnos []syscall.Errno
