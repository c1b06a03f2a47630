package netguard

import (
	"errors"
	"syscall"
)

// transientErrnos are the accept errors that say nothing about the
// listener itself: the process or the system is short of a resource for
// now (EMFILE, ENFILE, ENOBUFS, ENOMEM), or one pending connection failed
// before it was accepted (ECONNABORTED, EPROTO, and the network errors
// that accept(2) on Linux passes on from the new socket; its manual says
// to retry them like EAGAIN). EPERM is a firewall rule refusing one peer.
var transientErrnos = append([]syscall.Errno{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
	syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EAGAIN, syscall.EINTR,
	syscall.ETIMEDOUT, syscall.EPROTO, syscall.EPERM,
	syscall.ENETDOWN, syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.EHOSTUNREACH,
	syscall.ENOPROTOOPT, syscall.EOPNOTSUPP,
}, platformTransientErrnos...)

// temporary reports whether an accept error should be retried rather than
// end the caller's accept loop.
func temporary(err error) bool {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		for _, e := range transientErrnos {
			if errno == e {
				return true
			}
		}
	}
	// What net/http's Serve retries, for wrapped listeners (TLS, tests)
	// whose errors are not errnos.
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
