package relay

import (
	"encoding/binary"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// The relay packetises each access unit once, straight into its arena, as
// RTSP interleaved frames ('$', channel, length, RTP packet) addressed to
// the default channels (2×track for RTP, 2×track+1 for RTCP), which is what
// ffmpeg, Frigate's go2rtc and gortsplib's client ask for. Readers on those
// channels get the very same bytes; see direct.go for the others.

const (
	interleavedHeader = 4
	rtpHeader         = 12
	// maxPayload keeps a packet, with its RTP header and RTSP interleaving,
	// under gortsplib's 1472-byte limit, which also bounds UDP readers.
	maxPayload = 1400
	fuHeader   = 2 // FU indicator and FU header (RFC 6184 5.8)
	// aacHeader is the AU-headers-length field plus one AU-header with a
	// 13-bit size and 3-bit index (RFC 3640 AAC-hbr).
	aacHeader = 4
	// srSize is an RTCP sender report without report blocks.
	srSize = 28
	// senderReportPeriod spaces the direct readers' RTCP sender reports.
	senderReportPeriod = 5 * time.Second
)

// track is one output track's RTP state. Its fields are guarded by the
// relay's mu.
type track struct {
	media   *description.Media
	index   int // position in the SDP; the default channel is 2*index
	pt      byte
	ssrc    uint32 // the direct stream's SSRC, announced in SETUP
	seq     uint16
	packets uint32 // RTP packets sent, for sender reports
	octets  uint32 // payload octets sent
	tl      timeline
	lastSR  time.Time
	opus    bool // the audio track carries Opus, else AAC
}

// opusFrameTicks is a 20 ms Opus frame at RTP's 48 kHz, the default
// packet duration (WebRTC's).
const opusFrameTicks = 960

// appendOpus packetises one Opus packet (RFC 7587: one per RTP packet,
// as it is).
func (t *track) appendOpus(dst []byte, ts uint32, pkt []byte) []byte {
	dst = t.appendPacketHeader(dst, false, ts, len(pkt))
	return append(dst, pkt...)
}

// appendPacketHeader appends the interleaved and RTP headers of a packet
// that will carry payloadLen bytes.
func (t *track) appendPacketHeader(dst []byte, marker bool, ts uint32, payloadLen int) []byte {
	n := rtpHeader + payloadLen
	b1 := t.pt
	if marker {
		b1 |= 0x80
	}
	dst = append(dst, '$', byte(2*t.index), byte(n>>8), byte(n),
		0x80, b1, byte(t.seq>>8), byte(t.seq))
	dst = binary.BigEndian.AppendUint32(dst, ts)
	dst = binary.BigEndian.AppendUint32(dst, t.ssrc)
	t.seq++
	t.packets++
	t.octets += uint32(payloadLen)
	return dst
}

// splitFrame returns the first interleaved frame of b (header included),
// its payload (the RTP or RTCP packet) and what follows. Units hold whole
// frames only.
func splitFrame(b []byte) (frame, payload, rest []byte) {
	n := interleavedHeader + (int(b[2])<<8 | int(b[3]))
	return b[:n], b[interleavedHeader:n], b[n:]
}

// h264Bound is an upper bound of the bytes appendH264 appends for au.
func h264Bound(au [][]byte, extra ...[]byte) int {
	n := 0
	for _, parts := range [][][]byte{au, extra} {
		for _, nalu := range parts {
			pkts := len(nalu)/(maxPayload-fuHeader) + 1
			n += len(nalu) + pkts*(interleavedHeader+rtpHeader+fuHeader)
		}
	}
	return n
}

// appendH264 packetises an access unit (RFC 6184, packetization mode 1):
// a NALU that fits is sent whole, a larger one in FU-A fragments, and the
// last packet carries the marker. prefix NALUs (SPS, PPS) go first.
func (t *track) appendH264(dst []byte, ts uint32, prefix, au [][]byte) []byte {
	last := lastNonEmpty(au)
	lastPrefix := -1
	if last < 0 {
		lastPrefix = lastNonEmpty(prefix)
	}
	for i, nalu := range prefix {
		if len(nalu) > 0 {
			dst = t.appendNALU(dst, ts, nalu, i == lastPrefix)
		}
	}
	for i, nalu := range au {
		if len(nalu) > 0 {
			dst = t.appendNALU(dst, ts, nalu, i == last)
		}
	}
	return dst
}

func lastNonEmpty(nalus [][]byte) int {
	for i := len(nalus) - 1; i >= 0; i-- {
		if len(nalus[i]) > 0 {
			return i
		}
	}
	return -1
}

func (t *track) appendNALU(dst []byte, ts uint32, nalu []byte, endsAU bool) []byte {
	if len(nalu) <= maxPayload {
		dst = t.appendPacketHeader(dst, endsAU, ts, len(nalu))
		return append(dst, nalu...)
	}
	indicator := nalu[0]&0xe0 | 28 // F and NRI kept, type FU-A
	typ := nalu[0] & 0x1f
	data := nalu[1:]
	for first := true; len(data) > 0; first = false {
		n := min(len(data), maxPayload-fuHeader)
		end := n == len(data)
		h := typ
		if first {
			h |= 0x80
		}
		if end {
			h |= 0x40
		}
		dst = t.appendPacketHeader(dst, endsAU && end, ts, fuHeader+n)
		dst = append(dst, indicator, h)
		dst = append(dst, data[:n]...)
		data = data[n:]
	}
	return dst
}

// aacBound is an upper bound of the bytes appendAAC appends for au.
func aacBound(au []byte) int {
	pkts := len(au)/(maxPayload-aacHeader) + 1
	return len(au) + pkts*(interleavedHeader+rtpHeader+aacHeader)
}

// appendAAC packetises one AAC access unit (RFC 3640, AAC-hbr: sizeLength
// 13, indexLength 3). An access unit too large for one packet is
// fragmented; every fragment repeats the AU-header with the whole size and
// only the last carries the marker.
func (t *track) appendAAC(dst []byte, ts uint32, au []byte) []byte {
	size := len(au)
	for first := true; first || len(au) > 0; first = false {
		n := min(len(au), maxPayload-aacHeader)
		end := n == len(au)
		dst = t.appendPacketHeader(dst, end, ts, aacHeader+n)
		dst = append(dst, 0, 16, byte(size>>5), byte(size<<3))
		dst = append(dst, au[:n]...)
		au = au[n:]
	}
	return dst
}

// appendSenderReport appends an RTCP sender report pairing the track's
// last output timestamp with its NTP time (see timeline).
func (t *track) appendSenderReport(dst []byte) []byte {
	dst = append(dst, '$', byte(2*t.index+1), 0, srSize,
		0x80, 200, 0, srSize/4-1)
	dst = binary.BigEndian.AppendUint32(dst, t.ssrc)
	dst = binary.BigEndian.AppendUint64(dst, ntpTime(t.tl.ntp()))
	dst = binary.BigEndian.AppendUint32(dst, t.tl.lastOut)
	dst = binary.BigEndian.AppendUint32(dst, t.packets)
	return binary.BigEndian.AppendUint32(dst, t.octets)
}

// ntpTime encodes tm as a 64-bit NTP timestamp (seconds since 1900 and a
// binary fraction).
func ntpTime(tm time.Time) uint64 {
	const ntpEpochOffset = 2208988800
	ns := uint64(tm.UnixNano()) + ntpEpochOffset*uint64(time.Second)
	sec := ns / uint64(time.Second)
	frac := (ns % uint64(time.Second)) << 32 / uint64(time.Second)
	return sec<<32 | frac
}

// parameterSetsMissing tells which of SPS and PPS an IDR access unit lacks.
func parameterSetsMissing(au [][]byte) (sps, pps bool) {
	s, p := ParameterSets(au)
	return s == nil, p == nil
}

// ParameterSets returns the SPS and PPS an access unit carries (nil for
// each it lacks): a source without an SDP to give them (WebRTC) learns them
// from the first IDR.
func ParameterSets(au [][]byte) (sps, pps []byte) {
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		}
	}
	return sps, pps
}
