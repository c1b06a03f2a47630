package source

import (
	"strings"
	"testing"

	"github.com/pion/rtcp"
)

// Google's answer says sendrecv to a recvonly offer and may give its
// candidates no foundation; a standard peer refuses both.
func TestFixGoogleAnswer(t *testing.T) {
	in := "v=0\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" +
		"a=sendrecv\r\n" +
		"a=candidate: 1 udp 2113939711 2001:db8::1 19305 typ host\r\n" +
		"a=candidate: 1 udp 2113932031 74.125.247.118 19305 typ host\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 106 107\r\n" +
		"a=sendrecv\r\n" +
		"a=candidate:842163049 1 udp 1677729535 74.125.247.118 19305 typ srflx raddr 0.0.0.0 rport 0\r\n"
	out := FixGoogleAnswer(in)
	for _, want := range []string{
		"a=sendonly\r\n",
		"a=candidate:1 1 udp 2113939711 2001:db8::1 19305 typ host\r\n",
		"a=candidate:1 1 udp 2113932031 74.125.247.118 19305 typ host\r\n",
		// A candidate with a foundation stays as it was.
		"a=candidate:842163049 1 udp 1677729535 74.125.247.118 19305 typ srflx raddr 0.0.0.0 rport 0\r\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("fixed answer lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "sendrecv") {
		t.Errorf("sendrecv left in:\n%s", out)
	}
	if FixGoogleAnswer(out) != out {
		t.Error("fixing a fixed answer changed it")
	}
}

func TestWithoutTrickle(t *testing.T) {
	in := "v=0\r\na=ice-options:trickle\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-options:trickle\r\na=recvonly\r\n"
	if out := withoutTrickle(in); strings.Contains(out, "trickle") || !strings.Contains(out, "a=recvonly\r\n") {
		t.Fatalf("withoutTrickle:\n%s", out)
	}
}

// Keyframe requests alternate PLI and FIR, with FIR's sequence number
// growing as RFC 5104 asks.
func TestKeyframeRequests(t *testing.T) {
	var firSeq []uint8
	for n := 1; n <= 4; n++ {
		switch p := keyframeRequest(42, n).(type) {
		case *rtcp.PictureLossIndication:
			if n%2 == 0 || p.MediaSSRC != 42 {
				t.Fatalf("request %d: PLI %+v", n, p)
			}
		case *rtcp.FullIntraRequest:
			if n%2 == 1 || p.FIR[0].SSRC != 42 {
				t.Fatalf("request %d: FIR %+v", n, p)
			}
			firSeq = append(firSeq, p.FIR[0].SequenceNumber)
		}
	}
	if len(firSeq) != 2 || firSeq[0] == firSeq[1] {
		t.Fatalf("FIR sequence numbers %v", firSeq)
	}
}
