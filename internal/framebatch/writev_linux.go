package framebatch

import (
	"net"
	"syscall"
	"unsafe"
)

// vectorWriter issues writev(2) itself, through the socket's RawConn, so
// that the Go poller still handles EAGAIN and deadlines. net.Buffers does
// the same but allocates on every call (poll.FD.Writev caches its iovec
// slice through a pointer that escapes); at 50 readers and 30 frames a
// second that was the only allocation left on the forward path.
type vectorWriter struct {
	raw   syscall.RawConn
	noRaw bool
	iov   []syscall.Iovec
	// The result of the last writev, set by do; do is built once so that
	// passing it to RawConn.Write does not allocate a closure per call.
	n      int
	errno  syscall.Errno
	do     func(fd uintptr) bool
	doOnce func(fd uintptr) bool
}

// maxIovecs stays under IOV_MAX (1024 on Linux).
const maxIovecs = 512

// init finds the socket's RawConn once; it reports whether there is one.
func (v *vectorWriter) init(c net.Conn) bool {
	if v.raw == nil && !v.noRaw {
		if sc, ok := c.(syscall.Conn); ok {
			v.raw, _ = sc.SyscallConn()
		}
		v.noRaw = v.raw == nil
		v.do = v.writev
		v.doOnce = v.writevOnce
	}
	return !v.noRaw
}

// fill points the iovecs at the first maxIovecs non-empty buffers.
func (v *vectorWriter) fill(bufs net.Buffers) {
	v.iov = v.iov[:0]
	for _, b := range bufs {
		if len(v.iov) == maxIovecs {
			break
		}
		if len(b) > 0 {
			iov := syscall.Iovec{Base: &b[0]}
			iov.SetLen(len(b))
			v.iov = append(v.iov, iov)
		}
	}
}

// try issues one writev that never waits: it returns how many bytes the
// socket took, 0 when its buffer is full. ok is false when the connection
// has no raw socket to try on.
func (v *vectorWriter) try(c net.Conn, bufs net.Buffers) (n int, ok bool, err error) {
	if !v.init(c) {
		return 0, false, nil
	}
	v.fill(bufs)
	defer func() {
		clear(v.iov)
		v.iov = v.iov[:0]
	}()
	if len(v.iov) == 0 {
		return 0, true, nil
	}
	if err := v.raw.Write(v.doOnce); err != nil {
		return 0, true, err
	}
	switch v.errno {
	case 0:
		return v.n, true, nil
	case syscall.EAGAIN:
		return 0, true, nil
	}
	return 0, true, &net.OpError{Op: "writev", Net: "tcp", Err: v.errno}
}

// writevOnce is writev for try: a full socket is an answer (EAGAIN), not
// a reason to wait.
func (v *vectorWriter) writevOnce(fd uintptr) bool {
	r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v.iov[0])), uintptr(len(v.iov)))
	if e == syscall.EINTR {
		return v.writevOnce(fd)
	}
	v.n, v.errno = int(r), e
	if e != 0 {
		v.n = 0
	}
	return true
}

func (v *vectorWriter) write(c net.Conn, bufs net.Buffers) error {
	if !v.init(c) {
		b := bufs // escapes, so it is only declared on this path
		_, err := b.WriteTo(c)
		return err
	}
	defer func() {
		clear(v.iov) // do not keep the caller's buffers reachable
		v.iov = v.iov[:0]
	}()
	for len(bufs) > 0 {
		v.fill(bufs)
		if len(v.iov) == 0 {
			return nil
		}
		if err := v.raw.Write(v.do); err != nil {
			return err
		}
		if v.errno != 0 {
			return &net.OpError{Op: "writev", Net: "tcp", Err: v.errno}
		}
		bufs = consume(bufs, v.n)
	}
	return nil
}

// writev runs on the poller's terms: false asks it to wait until the
// socket is writable (or the deadline passes) and call again.
func (v *vectorWriter) writev(fd uintptr) bool {
	r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v.iov[0])), uintptr(len(v.iov)))
	if e == syscall.EAGAIN {
		return false
	}
	if e == syscall.EINTR {
		return v.writev(fd)
	}
	v.n, v.errno = int(r), e
	return true
}
