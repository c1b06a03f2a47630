package app

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nestmtx/nestmtx/internal/nestsim"
)

// TestWebRTCPortsShrugOffALANAttacker: the UDP ports WebRTC opens for ICE
// are reachable by anyone on the LAN. An attacker who floods them with
// garbage, STUN binding requests with made-up credentials, DTLS
// ClientHellos and forged RTP gets nowhere: the stream keeps flowing to
// its reader, the camera never says notReady, and no new Google session is
// needed.
func TestWebRTCPortsShrugOffALANAttacker(t *testing.T) {
	// Not parallel: it finds the WebRTC sockets among this process's UDP
	// sockets, and others' would be hit too.
	e := startE2E(t, nestsim.Options{}, nil)
	e.authorize()
	e.sync(map[string]string{"Living Room": "living-room"})
	cam := e.cams["Living Room"]
	r := readPath(t, e.rtspURL("living-room"))
	n := r.flowing(t, 0)
	e.waitEvent("camera", cam, "ready")
	generates := e.sim.CountCalls("GenerateWebRtcStream")

	ports := ownUDPPorts(t)
	if len(ports) == 0 {
		t.Fatal("no UDP socket of this process found: the WebRTC session should have some")
	}
	t.Logf("attacking %d UDP ports: %v", len(ports), ports)
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sent := 0
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		for _, p := range ports {
			if _, err := conn.WriteToUDP(attackPacket(i), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p}); err == nil {
				sent++
			}
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // a flood, but one the loopback can carry
		}
	}
	t.Logf("%d packets sent", sent)
	r.flowing(t, n)
	if got := e.sim.CountCalls("GenerateWebRtcStream"); got != generates {
		t.Fatalf("%d Generates after the attack, %d before: the session was disturbed", got, generates)
	}
	// The camera's events from its ready on: the reader's, then its end,
	// and no notReady before the reader has gone.
	r.c.Close()
	var got []string
	for len(got) == 0 || got[len(got)-1] != "notReady" {
		ev := e.nextEvent(15 * time.Second)
		if ev.Domain == "camera" && ev.Entity != nil && *ev.Entity == cam {
			got = append(got, ev.Event)
		}
	}
	if seq := strings.Join(got, " "); seq != "read unread unDemand notReady" && seq != "unread unDemand notReady" {
		t.Fatalf("events after ready: %s", seq)
	}
}

// attackPacket is the i-th packet of the flood, cycling through the kinds.
func attackPacket(i int) []byte {
	junk := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b) //nolint:errcheck // never fails
		return b
	}
	switch i % 5 {
	case 0: // garbage of any size
		return junk(1 + i%1400)
	case 1: // STUN binding request (RFC 5389) with a made-up USERNAME
		user := []byte(fmt.Sprintf("evil%d:victim", i))
		attr := binary.BigEndian.AppendUint16(nil, 0x0006) // USERNAME
		attr = binary.BigEndian.AppendUint16(attr, uint16(len(user)))
		attr = append(attr, user...)
		for len(attr)%4 != 0 {
			attr = append(attr, 0)
		}
		msg := binary.BigEndian.AppendUint16(nil, 0x0001)
		msg = binary.BigEndian.AppendUint16(msg, uint16(len(attr)))
		msg = binary.BigEndian.AppendUint32(msg, 0x2112A442)
		msg = append(msg, junk(12)...)
		return append(msg, attr...)
	case 2: // a DTLS 1.2 handshake record (ClientHello) out of nowhere
		rec := []byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60, 1, 0, 0, 48}
		return append(rec, junk(59)...)
	case 3: // forged RTP (would need SRTP keys to be accepted)
		return append([]byte{0x80, 102, byte(i >> 8), byte(i), 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef}, junk(200)...)
	default: // forged RTCP BYE
		return append([]byte{0x81, 203, 0, 1}, junk(4)...)
	}
}

// ownUDPPorts lists the local ports of this process's UDP sockets on
// 127.0.0.1 or any address: its sockets' inodes (from /proc/self/fd)
// looked up in /proc/net/udp.
func ownUDPPorts(t *testing.T) []int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ports []int
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || !inodes[fields[9]] {
			continue
		}
		addr, port, ok := strings.Cut(fields[1], ":")
		if !ok || (addr != "0100007F" && addr != "00000000") {
			continue
		}
		p, err := strconv.ParseInt(port, 16, 32)
		if err == nil {
			ports = append(ports, int(p))
		}
	}
	return ports
}
