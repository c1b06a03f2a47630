package nestsim

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// goodOffer is shaped like go2rtc's and NestMTX's offers: audio, video
// (two H.264 payload types, as Chrome and pion offer), a data channel,
// max-bundle, gathered.
const goodOffer = "v=0\r\n" +
	"o=- 4215775240449105457 1 IN IP4 0.0.0.0\r\n" +
	"s=-\r\n" +
	"t=0 0\r\n" +
	"a=fingerprint:sha-256 8C:F6:5E:56:6A:2B:7F:3E:4C:5B:1C:2F:9A:6D:8D:0E:21:56:3E:54:8B:5F:74:E7:9B:45:2B:64:0C:E5:DA:0A\r\n" +
	"a=group:BUNDLE 0 1 2\r\n" +
	"a=extmap-allow-mixed\r\n" +
	"a=msid-semantic: WMS\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:0\r\n" +
	"a=ice-ufrag:abcdABCDabcdABCD\r\n" +
	"a=ice-pwd:abcdefghijklmnopqrstuvwxyzABCDEF\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n" +
	"a=fmtp:111 minptime=10;useinbandfec=1\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=recvonly\r\n" +
	"a=candidate:1 1 udp 2130706431 192.168.1.20 50000 typ host\r\n" +
	"a=candidate:2 1 udp 1694498815 203.0.113.7 50000 typ srflx raddr 192.168.1.20 rport 50000\r\n" +
	"a=end-of-candidates\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 102 106 108\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:1\r\n" +
	"a=ice-ufrag:abcdABCDabcdABCD\r\n" +
	"a=ice-pwd:abcdefghijklmnopqrstuvwxyzABCDEF\r\n" +
	"a=rtcp-mux\r\n" +
	"a=rtpmap:102 H264/90000\r\n" +
	"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n" +
	"a=rtcp-fb:102 nack pli\r\n" +
	"a=rtpmap:106 H264/90000\r\n" +
	"a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n" +
	"a=rtcp-fb:106 nack pli\r\n" +
	"a=rtpmap:108 H264/90000\r\n" +
	"a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n" +
	"a=recvonly\r\n" +
	"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" +
	"c=IN IP4 0.0.0.0\r\n" +
	"a=setup:actpass\r\n" +
	"a=mid:2\r\n" +
	"a=ice-ufrag:abcdABCDabcdABCD\r\n" +
	"a=ice-pwd:abcdefghijklmnopqrstuvwxyzABCDEF\r\n" +
	"a=sctp-port:5000\r\n"

// mSection returns the m-line section of an SDP starting with prefix, up to
// the next m-line.
func mSection(offer, prefix string) string {
	i := strings.Index(offer, prefix)
	j := strings.Index(offer[i+1:], "\r\nm=")
	if j < 0 {
		return offer[i:]
	}
	return offer[i : i+1+j+2]
}

func TestValidateOffer(t *testing.T) {
	t.Parallel()
	audio := mSection(goodOffer, "m=audio")
	video := mSection(goodOffer, "m=video")
	app := mSection(goodOffer, "m=application")
	head := goodOffer[:strings.Index(goodOffer, "m=audio")]
	replace := func(old, new string) string {
		if !strings.Contains(goodOffer, old) {
			t.Fatalf("goodOffer lacks %q", old)
		}
		return strings.ReplaceAll(goodOffer, old, new)
	}
	const (
		bad      = http.StatusBadRequest
		internal = http.StatusInternalServerError
	)
	cases := []struct {
		name   string
		offer  string
		code   int // 0: accepted
		msgHas string
	}{
		{"good", goodOffer, 0, ""},
		{"LF line endings", strings.ReplaceAll(goodOffer, "\r\n", "\n"), 0, ""},
		{"trickle option and no end-of-candidates", replace("a=end-of-candidates\r\n", "a=ice-options:trickle\r\n"), 0, ""},
		{"loopback host candidate only", replace("192.168.1.20 50000 typ host", "127.0.0.1 50000 typ host"), 0, ""},
		{"empty", "", bad, "offerSdp value must be set"},
		{"blank", " \r\n", bad, "offerSdp value must be set"},
		{"not SDP", "hello", bad, "Invalid offer SDP"},
		{"video before audio", head + video + audio + app, bad, "audio, video and application m lines in that order"},
		{"no data channel", head + audio + video, bad, "in that order"},
		{"application first", head + app + audio + video, bad, "in that order"},
		{"two video m-lines", head + audio + video + video + app, bad, "in that order"},
		{"video only", head + video, bad, "in that order"},
		{"no opus", replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 ISAC/16000"), bad, "opus"},
		{"mono opus", replace("opus/48000/2", "opus/48000"), bad, "opus"},
		{"no H264", strings.ReplaceAll(goodOffer, "H264/90000", "VP8/90000"), bad, "H264"},
		{"H264 packetization-mode 0 only", strings.ReplaceAll(goodOffer, "packetization-mode=1", "packetization-mode=0"), bad, "packetization-mode=1"},
		{"sendrecv media", strings.ReplaceAll(goodOffer, "a=recvonly", "a=sendrecv"), bad, "recvonly"},
		{"no direction (sendrecv)", strings.ReplaceAll(goodOffer, "a=recvonly\r\n", ""), bad, "recvonly"},
		{"sendonly audio", strings.Replace(goodOffer, "a=recvonly", "a=sendonly", 1), bad, "recvonly"},
		{"inactive video", head + audio + strings.Replace(video, "a=recvonly", "a=inactive", 1) + app, bad, "recvonly"},
		{"no ICE credentials", strings.ReplaceAll(goodOffer, "a=ice-pwd:abcdefghijklmnopqrstuvwxyzABCDEF\r\n", ""), bad, "ice-pwd"},
		{"no fingerprint", replace("a=fingerprint:sha-256 8C:F6:5E:56:6A:2B:7F:3E:4C:5B:1C:2F:9A:6D:8D:0E:21:56:3E:54:8B:5F:74:E7:9B:45:2B:64:0C:E5:DA:0A\r\n", ""), bad, "fingerprint"},
		{"not gathered", replace("a=candidate:1 1 udp 2130706431 192.168.1.20 50000 typ host\r\n"+
			"a=candidate:2 1 udp 1694498815 203.0.113.7 50000 typ srflx raddr 192.168.1.20 rport 50000\r\n", ""), internal, "Internal error encountered."},
		{"srflx only", replace("a=candidate:1 1 udp 2130706431 192.168.1.20 50000 typ host\r\n", ""), internal, "Internal error encountered."},
		{"mDNS host candidate", replace("192.168.1.20 50000 typ host", "3f2a1c9e-7b1d-4c55-9d0e-2b6f2e1f0a11.local 50000 typ host"), internal, "Internal error encountered."},
		{"unspecified host candidate", replace("192.168.1.20 50000 typ host", "0.0.0.0 50000 typ host"), internal, "Internal error encountered."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			info, err := validateOffer(c.offer)
			if c.code == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if info.opusPT != "111" || !slices.Equal(info.h264PTs, []string{"102", "106"}) {
					t.Fatalf("info %+v", info)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			wantStatus := "INVALID_ARGUMENT"
			if c.code == internal {
				wantStatus = "INTERNAL"
			}
			if err.Code != c.code || err.Status != wantStatus || !strings.Contains(err.Message, c.msgHas) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", err.Code, err.Status, err.Message, c.code, wantStatus, c.msgHas)
			}
		})
	}
}
