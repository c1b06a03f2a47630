package relay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

// A reader that hangs up mid-write is an ordinary disconnect (DEBUG); a
// reader the relay gives up on is worth an INFO line.
func TestHungUpTellsDisconnectsFromDrops(t *testing.T) {
	for _, err := range []error{
		&net.OpError{Op: "write", Net: "tcp", Err: net.ErrClosed},
		&net.OpError{Op: "writev", Net: "tcp", Err: os.NewSyscallError("writev", syscall.EPIPE)},
		&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ECONNRESET)},
		fmt.Errorf("writing: %w", net.ErrClosed),
	} {
		if !hungUp(err) {
			t.Errorf("hungUp(%v) = false, want true", err)
		}
	}
	for _, err := range []error{
		errors.New("reader too slow: its queue exceeded the limit"),
		errors.New("the PLAY response was never written"),
		&net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.ENOBUFS)},
	} {
		if hungUp(err) {
			t.Errorf("hungUp(%v) = true, want false", err)
		}
	}
}
