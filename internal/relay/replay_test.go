package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/relay"
	"github.com/nestmtx/nestmtx/internal/rtspserver"
	"github.com/nestmtx/nestmtx/internal/testkit"
)

// rawReader speaks RTSP by hand, so a test can send what a library client
// would not (PLAY twice, PAUSE mid-stream) and see exactly where each
// interleaved packet falls relative to the responses.
type rawReader struct {
	t         *testing.T
	c         net.Conn
	br        *bufio.Reader
	cseq      int
	session   string
	responses int
	packets   []rawPacket
}

type rawPacket struct {
	channel byte
	seq     uint16
	after   int // responses read before it
}

func dialRaw(t *testing.T, addr string) *rawReader {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawReader{t: t, c: c, br: bufio.NewReader(c)}
}

// request sends a request and returns the response's status line, reading
// (and recording) any interleaved packets before it.
func (r *rawReader) request(method, url string, headers ...string) string {
	r.t.Helper()
	r.cseq++
	msg := fmt.Sprintf("%s %s RTSP/1.0\r\nCSeq: %d\r\n", method, url, r.cseq)
	if r.session != "" {
		msg += "Session: " + r.session + "\r\n"
	}
	for _, h := range headers {
		msg += h + "\r\n"
	}
	if _, err := r.c.Write([]byte(msg + "\r\n")); err != nil {
		r.t.Fatal(err)
	}
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		b, err := r.br.Peek(1)
		if err != nil {
			r.t.Fatalf("%s: %v", method, err)
		}
		if b[0] != '$' {
			break
		}
		if err := r.readPacket(); err != nil {
			r.t.Fatal(err)
		}
	}
	status, _ := r.br.ReadString('\n')
	length := 0
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatal(err)
		}
		line = strings.TrimSpace(line)
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ":")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "content-length":
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		case "session":
			r.session, _, _ = strings.Cut(strings.TrimSpace(v), ";")
		}
	}
	io.CopyN(io.Discard, r.br, int64(length))
	r.responses++
	return strings.TrimSpace(status)
}

func (r *rawReader) readPacket() error {
	var h [4]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return err
	}
	p := make([]byte, int(h[2])<<8|int(h[3]))
	if _, err := io.ReadFull(r.br, p); err != nil {
		return err
	}
	if h[1]&1 == 0 && len(p) >= 4 {
		r.packets = append(r.packets, rawPacket{channel: h[1], seq: uint16(p[2])<<8 | uint16(p[3]), after: r.responses})
	}
	return nil
}

// readFor records packets for d. Only the wait for a packet's start is
// bounded by d: a packet that has begun is read whole, or the stream would
// lose its framing.
func (r *rawReader) readFor(d time.Duration) {
	r.t.Helper()
	end := time.Now().Add(d)
	for {
		r.c.SetReadDeadline(end)
		if _, err := r.br.Peek(interleavedHeaderLen); err != nil {
			return // nothing more within d; Peek consumed nothing
		}
		r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := r.readPacket(); err != nil {
			r.t.Fatal(err)
		}
	}
}

const interleavedHeaderLen = 4

// checkSequence fails if a channel's sequence numbers ever go backwards or
// repeat.
func (r *rawReader) checkSequence() {
	r.t.Helper()
	last := map[byte]uint16{}
	for i, p := range r.packets {
		if prev, ok := last[p.channel]; ok && int16(p.seq-prev) <= 0 {
			r.t.Fatalf("packet %d on channel %d: sequence %d after %d", i, p.channel, p.seq, prev)
		}
		last[p.channel] = p.seq
	}
}

// feed writes the clip into a relay at about 500 frames a second until
// the test ends.
func feed(t *testing.T, r *relay.Relay) {
	aus, _, _ := clipAUs(t)
	seg := r.BeginSegment()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if err := seg.WriteVideo(uint32(i)*3600, aus[i%len(aus)]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// TestPlayTwiceAndPause: a reader over TCP that sends PLAY while playing
// gets no second replay of the GOP, a PAUSE stops the media before its
// response, and a PLAY after it resumes with live media: the sequence
// numbers never go backwards.
func TestPlayTwiceAndPause(t *testing.T) {
	_, sps, pps := clipAUs(t)
	r, url := startRelay(t, relay.Params{SPS: sps, PPS: pps})
	feed(t, r)
	rr := dialRaw(t, strings.TrimSuffix(strings.TrimPrefix(url, "rtsp://"), "/cam"))
	rr.request("DESCRIBE", url)
	if st := rr.request("SETUP", url+"/trackID=0", "Transport: RTP/AVP/TCP;unicast;interleaved=4-5"); !strings.Contains(st, "200") {
		t.Fatal(st)
	}
	for round := 0; round < 10; round++ {
		if st := rr.request("PLAY", url); !strings.Contains(st, "200") {
			t.Fatal(st)
		}
		rr.readFor(30 * time.Millisecond)
		if st := rr.request("PLAY", url); !strings.Contains(st, "200") {
			t.Fatal(st)
		}
		rr.readFor(30 * time.Millisecond)
		if st := rr.request("PAUSE", url); !strings.Contains(st, "200") {
			t.Fatal(st)
		}
		paused := rr.responses
		rr.readFor(30 * time.Millisecond)
		for _, p := range rr.packets {
			if p.after == paused {
				t.Fatalf("round %d: media after the PAUSE response", round)
			}
		}
	}
	if len(rr.packets) == 0 {
		t.Fatal("no media at all")
	}
	for _, p := range rr.packets {
		if p.channel != 4 {
			t.Fatalf("media on channel %d, the reader asked for 4", p.channel)
		}
	}
	rr.checkSequence()
}

// TestServedPlayTwice: a second PLAY from a UDP reader (fed by gortsplib)
// is answered at once and does not hold up the feed.
func TestServedPlayTwice(t *testing.T) {
	aus, sps, pps := clipAUs(t)
	r, _, srv := startRelayWith(t, relay.Params{SPS: sps, PPS: pps}, &rtspserver.FixedPath{},
		func(o *rtspserver.Options) { o.UDPRTPAddress = testkit.FreeUDPPair(t) })
	seg := r.BeginSegment()
	for i, au := range aus[:30] {
		seg.WriteVideo(uint32(i)*3600, au)
	}
	url := "rtsp://" + srv.Addr() + "/cam"
	rr := dialRaw(t, srv.Addr())
	rr.request("DESCRIBE", url)
	if st := rr.request("SETUP", url+"/trackID=0", "Transport: RTP/AVP;unicast;client_port=40000-40001"); !strings.Contains(st, "200") {
		t.Fatal(st)
	}
	rr.request("PLAY", url)
	start := time.Now()
	if st := rr.request("PLAY", url); !strings.Contains(st, "200") {
		t.Fatal(st)
	}
	if err := seg.WriteVideo(30*3600, aus[30]); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the second PLAY and the next frame took %s: the feed was held", took)
	}
}
