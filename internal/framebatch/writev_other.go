//go:build !linux

package framebatch

import "net"

// vectorWriter uses net.Buffers where the raw writev path is not built.
type vectorWriter struct{}

func (vectorWriter) write(c net.Conn, bufs net.Buffers) error {
	_, err := bufs.WriteTo(c)
	return err
}

// try is not available here: the relay queues the batch for its writer.
func (vectorWriter) try(net.Conn, net.Buffers) (int, bool, error) { return 0, false, nil }
