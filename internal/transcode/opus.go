package transcode

// Opus packet arithmetic: how long a packet lasts, and the silence used to
// fill gaps. Only the TOC byte (and, for code 3, the frame count byte) is
// read; the audio itself is never looked at.

// opusSilence holds CELT fullband frames of 20, 10, 5 and 2.5 ms whose
// payload 0xFF 0xFE decodes as the CELT "silence" flag: the well-known
// 3-byte frame F8 FF FE (config 31: 20 ms, mono, one frame) and the same
// frame with the TOC of configs 30, 29 and 28. Gaps are filled with the
// longest that fits, so a gap of any whole number of 2.5 ms steps (every
// Opus duration is one) is filled exactly.
var opusSilence = [...]struct {
	samples int
	frame   []byte
}{
	{960, []byte{0xF8, 0xFF, 0xFE}},
	{480, []byte{0xF0, 0xFF, 0xFE}},
	{240, []byte{0xE8, 0xFF, 0xFE}},
	{120, []byte{0xE0, 0xFF, 0xFE}},
}

// opusStep is the shortest Opus frame, 2.5 ms: every packet lasts a
// whole number of them.
const opusStep = 120

// maxOpusSamples is the longest packet RFC 6716 allows: 120 ms at 48 kHz.
const maxOpusSamples = 5760

// opusFrameSamples is the duration, in 48 kHz samples, of each frame of a
// packet whose TOC is toc (RFC 6716 §3.1, Table 2).
func opusFrameSamples(toc byte) int {
	config := toc >> 3
	switch {
	case config < 12: // SILK-only: 10, 20, 40, 60 ms
		return [4]int{480, 960, 1920, 2880}[config&3]
	case config < 16: // hybrid: 10, 20 ms
		return [2]int{480, 960}[config&1]
	default: // CELT-only: 2.5, 5, 10, 20 ms
		return [4]int{120, 240, 480, 960}[config&3]
	}
}

// opusDuration is the duration of an Opus packet in 48 kHz samples, from
// its TOC byte and frame count (RFC 6716 §3.1-3.2). ok is false for what
// the RFC calls malformed: empty, a code 3 packet without a frame count or
// with zero frames, or longer than 120 ms. Packets are not decoded, so the
// frame lengths inside are not checked: the decoder in the child does that.
func opusDuration(p []byte) (samples int, ok bool) {
	if len(p) == 0 {
		return 0, false
	}
	frames := 1
	switch p[0] & 3 {
	case 1, 2:
		frames = 2
	case 3:
		if len(p) < 2 {
			return 0, false
		}
		frames = int(p[1] & 0x3F)
	}
	samples = frames * opusFrameSamples(p[0])
	return samples, samples > 0 && samples <= maxOpusSamples
}
