package netguard

import "syscall"

// ENONET is Linux's alone; accept(2) may pass it on from a new socket.
var platformTransientErrnos = []syscall.Errno{syscall.ENONET}
