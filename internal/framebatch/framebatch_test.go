package framebatch

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// pair returns a batching conn and the peer's end, over real loopback TCP.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bl := NewListener(ln)
	peerCh := make(chan net.Conn, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Error(err)
		}
		peerCh <- c
	}()
	c, err := bl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	peer := <-peerCh
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c.(*Conn), peer
}

// frame builds an interleaved RTP packet of n payload bytes.
func frame(channel byte, marker bool, seq uint16, n int) []byte {
	rtp := make([]byte, 12+n)
	rtp[0] = 0x80
	rtp[1] = 96
	if marker {
		rtp[1] |= 0x80
	}
	rtp[2], rtp[3] = byte(seq>>8), byte(seq)
	for i := 12; i < len(rtp); i++ {
		rtp[i] = byte(seq)
	}
	return append([]byte{'$', channel, byte(len(rtp) >> 8), byte(len(rtp))}, rtp...)
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func TestWriteErrorIsSticky(t *testing.T) {
	c, peer := pair(t)
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	// The first writes may still be accepted; the peer's RST fails a
	// later one.
	var err error
	for deadline := time.Now().Add(5 * time.Second); err == nil && time.Now().Before(deadline); {
		_, err = c.Write(frame(0, true, 1, 1000))
	}
	if err == nil {
		t.Fatal("writes to a reset peer never failed")
	}
	if _, err2 := c.Write(frame(0, true, 1, 10)); err2 == nil {
		t.Fatal("a write after a failure succeeded")
	}
}

// TestCloseUnblocksStalledWrite: a reader that stops reading fills the
// socket; Close must end the blocked write at once, not after the deadline.
func TestCloseUnblocksStalledWrite(t *testing.T) {
	c, _ := pair(t)
	c.SetWriteDeadline(time.Now().Add(time.Minute))
	done := make(chan error, 1)
	var written atomic.Int64
	go func() {
		f := frame(0, true, 1, 60000)
		for {
			if _, err := c.Write(f); err != nil {
				done <- err
				return
			}
			written.Add(1)
		}
	}()
	// Wait until the writer is blocked: the peer never reads, so the
	// socket buffers fill and a write stops returning.
	deadline := time.Now().Add(10 * time.Second)
	for {
		before := written.Load()
		time.Sleep(200 * time.Millisecond)
		if written.Load() == before && before > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer never blocked")
		}
	}
	start := time.Now()
	c.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a write blocked on a stalled reader outlived Close")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Close took %v to end the write", el)
	}
}

// BenchmarkWriteAccessUnit is one 12-packet access unit to one reader, as
// the direct path writes it.
func BenchmarkWriteAccessUnit(b *testing.B) {
	c := discardConn(b)
	frames := make(net.Buffers, 12)
	for i := range frames {
		frames[i] = frame(0, i == len(frames)-1, uint16(i), 1400)
	}
	bufs := make(net.Buffers, len(frames))
	b.ReportAllocs()
	b.SetBytes(int64(12 * len(frames[0])))
	for b.Loop() {
		copy(bufs, frames)
		if err := c.WriteBuffers(bufs); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWriteBuffersWholeAndOrdered: more buffers than one writev takes, to a
// reader slow enough that the socket fills (partial writes, EAGAIN), after
// a plain write: the peer gets exactly the bytes, in order.
func TestWriteBuffersWholeAndOrdered(t *testing.T) {
	c, peer := pair(t)
	first := frame(0, false, 1, 300)
	c.Write(first)
	want := append([]byte{}, first...)
	var bufs net.Buffers
	for i := 0; i < 3*maxIovecsForTest; i++ {
		f := frame(0, i%7 == 0, uint16(i), 100+i%1300)
		bufs = append(bufs, f)
		want = append(want, f...)
	}
	got := make(chan []byte, 1)
	go func() {
		var all []byte
		buf := make([]byte, 4096)
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(all) < len(want) {
			n, err := peer.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
			if len(all) < 64<<10 {
				time.Sleep(time.Millisecond) // a slow reader at first, so the socket fills
			}
		}
		got <- all
	}()
	if err := c.WriteBuffers(bufs); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, want %d, or different ones", len(b), len(want))
	}
}

const maxIovecsForTest = 512

func TestWriteBuffersDoesNotAllocate(t *testing.T) {
	c := discardConn(t)
	bufs := net.Buffers{frame(0, false, 1, 1400), frame(0, true, 2, 800), frame(2, true, 1, 300)}
	scratch := make(net.Buffers, len(bufs))
	allocs := testing.AllocsPerRun(200, func() {
		copy(scratch, bufs)
		if err := c.WriteBuffers(scratch); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("WriteBuffers allocates %.1f times per call", allocs)
	}
}

// TestAfterResponseGate: the gate opens when the next RTSP message is on
// the wire, not on interleaved frames.
func TestAfterResponseGate(t *testing.T) {
	c, peer := pair(t)
	gate := c.AfterResponse()
	c.Write(frame(0, true, 1, 100))
	select {
	case <-gate:
		t.Fatal("the gate opened on a media frame")
	default:
	}
	resp := []byte("RTSP/1.0 200 OK\r\nCSeq: 4\r\n\r\n")
	c.Write(resp)
	select {
	case <-gate:
	default:
		t.Fatal("the gate stayed shut after the response")
	}
	readN(t, peer, 116+len(resp))
	// A failed connection opens a gate at once.
	c.Close()
	select {
	case <-c.AfterResponse():
	case <-time.After(time.Second):
		t.Fatal("a gate on a closed connection never opened")
	}
}

// discardConn is a batching conn to a peer that reads and drops everything.
func discardConn(tb testing.TB) *Conn {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		if c, err := ln.Accept(); err == nil {
			io.Copy(io.Discard, c)
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	c := Wrap(raw)
	tb.Cleanup(func() { c.Close() })
	return c
}

// TestDeadlineReachesWriteBuffers: the raw writev path honours the write
// deadline, as the relay relies on to drop a reader that stopped reading.
func TestDeadlineReachesWriteBuffers(t *testing.T) {
	c, _ := pair(t) // the peer never reads
	big := make(net.Buffers, 64)
	for i := range big {
		big[i] = frame(0, true, uint16(i), 60000)
	}
	c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	start := time.Now()
	var err error
	for err == nil && time.Since(start) < 10*time.Second {
		err = c.WriteBuffers(append(net.Buffers(nil), big...))
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("the deadline fired after %s", el)
	}
}

// TestTryWriteBuffers: a batch the socket takes is written at once; one it
// cannot take whole is kept and sent, in order, before the next write of
// any kind, so a reader never sees a frame cut by an RTSP response.
func TestTryWriteBuffers(t *testing.T) {
	skipWithoutTry(t)
	c, peer := pair(t)
	small := net.Buffers{frame(0, false, 1, 1000), frame(0, true, 2, 500)}
	want := append(append([]byte{}, small[0]...), small[1]...)
	if res, err := c.TryWriteBuffers(small); res != TryWritten || err != nil {
		t.Fatalf("TryWriteBuffers on an empty socket = %v, %v; want TryWritten", res, err)
	}
	if got := readN(t, peer, len(want)); !bytes.Equal(got, want) {
		t.Fatal("the peer got other bytes")
	}

	// The peer stops reading: batches go in until the socket is full.
	want = want[:0]
	seq := uint16(3)
	var res TryResult
	for i := 0; i < 10000 && res != TryOwed; i++ {
		b := net.Buffers{frame(0, false, seq, 1400), frame(0, true, seq+1, 1400)}
		seq += 2
		for _, f := range b {
			want = append(want, f...)
		}
		var err error
		if res, err = c.TryWriteBuffers(b); err != nil {
			t.Fatal(err)
		}
	}
	if res != TryOwed {
		t.Fatal("the socket never filled")
	}
	// A try while something is owed queues behind it, never ahead.
	more := frame(0, true, seq, 700)
	if res, err := c.TryWriteBuffers(net.Buffers{more}); res != TryOwed || err != nil {
		t.Fatalf("a try with bytes owed = %v, %v; want TryOwed", res, err)
	}
	want = append(want, more...)
	// Another writer (gortsplib's response) waits for the owed bytes.
	resp := []byte("RTSP/1.0 200 OK\r\nCSeq: 9\r\n\r\n")
	want = append(want, resp...)
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(resp)
		wrote <- err
	}()
	got := readN(t, peer, len(want))
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the owed frames and the response reached the peer out of order or changed")
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("Flush with nothing owed: %v", err)
	}
}

// TestTryWriteBuffersNeverWaits: a try while another write is blocked on
// a stalled peer, or after the write deadline passed, returns TryBusy at
// once with the connection intact.
func TestTryWriteBuffersNeverWaits(t *testing.T) {
	skipWithoutTry(t)
	c, peer := pair(t)
	// 60 MB: far more than the socket buffers take, so the write blocks
	// until the peer reads.
	f := frame(0, true, 1, 60000)
	big := make(net.Buffers, 1000)
	for i := range big {
		big[i] = f
	}
	blocked := make(chan error, 1)
	go func() { blocked <- c.WriteBuffers(big) }()
	// Wait until the blocked write holds the connection.
	testDeadline := time.Now().Add(5 * time.Second)
	for c.mu.TryLock() {
		c.mu.Unlock()
		if time.Now().After(testDeadline) {
			t.Fatal("the big write never took the connection")
		}
		runtime.Gosched()
	}
	start := time.Now()
	if res, err := c.TryWriteBuffers(net.Buffers{frame(0, true, 1, 100)}); res != TryBusy || err != nil {
		t.Fatalf("try during a blocked write = %v, %v; want TryBusy, nil", res, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the try waited %s", d)
	}
	go io.Copy(io.Discard, peer)
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}

	c.SetWriteDeadline(time.Now().Add(-time.Second))
	if res, err := c.TryWriteBuffers(net.Buffers{frame(0, true, 2, 100)}); res != TryBusy || err != nil {
		t.Fatalf("try past the deadline = %v, %v; want TryBusy, nil", res, err)
	}
	c.SetWriteDeadline(time.Time{})
	if res, err := c.TryWriteBuffers(net.Buffers{frame(0, true, 3, 100)}); res != TryWritten || err != nil {
		t.Fatalf("try after the deadline was lifted = %v, %v; want TryWritten", res, err)
	}
	c.Close()
	if _, err := c.TryWriteBuffers(net.Buffers{frame(0, true, 4, 100)}); err == nil {
		t.Fatal("a try on a closed connection reported no error")
	}
}

func TestTryWriteBuffersDoesNotAllocate(t *testing.T) {
	skipWithoutTry(t)
	c := discardConn(t)
	bufs := net.Buffers{frame(0, false, 1, 1400), frame(0, true, 2, 800), frame(2, true, 1, 300)}
	scratch := make(net.Buffers, len(bufs))
	allocs := testing.AllocsPerRun(200, func() {
		copy(scratch, bufs)
		if res, err := c.TryWriteBuffers(scratch); err != nil || res == TryBusy {
			t.Fatal(res, err)
		}
		c.Flush()
	})
	if allocs != 0 {
		t.Fatalf("TryWriteBuffers allocates %.1f times per call", allocs)
	}
}

// skipWithoutTry skips where TryWriteBuffers has no raw writev to try
// with (it answers TryBusy to everything there, by design).
func skipWithoutTry(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TryWriteBuffers tries writes on Linux only")
	}
}
