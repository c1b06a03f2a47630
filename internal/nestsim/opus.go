package nestsim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// opusClockRate is Opus's RTP clock (RFC 7587), whatever the coded rate.
const opusClockRate = 48000

// OpusClip is the audio a WebRTC camera sends: Opus packets played in a loop,
// each stamped with its own duration. It is immutable and may be shared.
type OpusClip struct {
	packets [][]byte
	samples []uint32 // duration of each packet at 48 kHz
	total   uint64
}

// opusSilence is a 20 ms CELT-only fullband frame that decodes to silence
// (TOC 0xf8: config 31, mono, one frame), the frame WebRTC stacks send while
// muted. Stereo-capable decoders (opus/48000/2) accept mono frames.
var opusSilence = []byte{0xf8, 0xff, 0xfe}

// SilenceOpus returns a clip of one 20 ms silent Opus frame: what the sim
// sends when Options.Opus is nil.
func SilenceOpus() *OpusClip {
	c, err := NewOpusClip([][]byte{opusSilence})
	if err != nil {
		panic(err) // a constant frame
	}
	return c
}

// Packets is the number of Opus packets in one loop of the clip.
func (c *OpusClip) Packets() int { return len(c.packets) }

// NewOpusClip makes a clip from raw Opus packets (RFC 6716), as an Ogg
// demuxer yields them.
func NewOpusClip(packets [][]byte) (*OpusClip, error) {
	if len(packets) == 0 {
		return nil, errors.New("no Opus packets")
	}
	c := &OpusClip{}
	for i, p := range packets {
		n, err := opusPacketSamples(p)
		if err != nil {
			return nil, fmt.Errorf("opus packet %d: %w", i, err)
		}
		c.packets = append(c.packets, bytes.Clone(p))
		c.samples = append(c.samples, n)
		c.total += uint64(n)
	}
	return c, nil
}

// LoadOggOpusFile reads an Ogg Opus file (as `ffmpeg -c:a libopus -f ogg`
// writes it) into a clip.
func LoadOggOpusFile(path string) (*OpusClip, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return LoadOggOpus(b)
}

// LoadOggOpus demuxes an Ogg Opus stream (RFC 7845) into a clip, dropping
// the OpusHead and OpusTags header packets. Only the first logical stream
// is read.
func LoadOggOpus(data []byte) (*OpusClip, error) {
	var packets [][]byte
	var cur []byte
	var serial uint32
	first := true
	for len(data) > 0 {
		if len(data) < 27 || string(data[:4]) != "OggS" {
			return nil, errors.New("ogg: bad page header")
		}
		pageSerial := binary.LittleEndian.Uint32(data[14:18])
		nseg := int(data[26])
		if len(data) < 27+nseg {
			return nil, errors.New("ogg: truncated segment table")
		}
		lacing := data[27 : 27+nseg]
		body := data[27+nseg:]
		if first {
			serial, first = pageSerial, false
		}
		for _, l := range lacing {
			if len(body) < int(l) {
				return nil, errors.New("ogg: truncated page")
			}
			if pageSerial == serial {
				cur = append(cur, body[:l]...)
				if l < 255 {
					packets = append(packets, cur)
					cur = nil
				}
			}
			body = body[l:]
		}
		data = body
	}
	if len(packets) < 2 || !bytes.HasPrefix(packets[0], []byte("OpusHead")) || !bytes.HasPrefix(packets[1], []byte("OpusTags")) {
		return nil, errors.New("ogg: not an Opus stream")
	}
	var audio [][]byte
	for _, p := range packets[2:] {
		if len(p) > 0 {
			audio = append(audio, p)
		}
	}
	return NewOpusClip(audio)
}

// opusPacketSamples is a packet's duration at 48 kHz from its TOC byte and
// frame count (RFC 6716 §3.1).
func opusPacketSamples(p []byte) (uint32, error) {
	if len(p) == 0 {
		return 0, errors.New("empty packet")
	}
	config := p[0] >> 3
	var frame uint32 // samples per frame at 48 kHz
	switch {
	case config < 12: // SILK: 10, 20, 40, 60 ms
		frame = []uint32{480, 960, 1920, 2880}[config%4]
	case config < 16: // hybrid: 10, 20 ms
		frame = []uint32{480, 960}[config%2]
	default: // CELT: 2.5, 5, 10, 20 ms
		frame = []uint32{120, 240, 480, 960}[config%4]
	}
	var frames uint32
	switch p[0] & 3 {
	case 0:
		frames = 1
	case 1, 2:
		frames = 2
	default:
		if len(p) < 2 {
			return 0, errors.New("code 3 packet without a frame count")
		}
		frames = uint32(p[1] & 0x3f)
	}
	n := frame * frames
	if n == 0 || n > 5760 { // 120 ms at most
		return 0, fmt.Errorf("bad duration of %d samples", n)
	}
	return n, nil
}
