package transcode

import (
	"encoding/binary"
	"io"
)

// oggWriter writes an Ogg Opus stream (RFC 7845) with one Opus packet per
// page, so that every packet reaches the child as soon as it is written.
//
// It is used instead of pion's oggwriter for three reasons:
//   - pion writes a pre-skip of 3840 samples, which the decoder in the child
//     drops: the first 80 ms of every child's audio would vanish and the
//     output count would no longer be base + n*1024 of the input clock.
//     Here pre-skip is 0: every sample fed comes out.
//   - the gap filler feeds bare silence frames, with no RTP packet around
//     them, and the granule position must count them.
//   - it reuses one page buffer, so a packet costs no allocation.
type oggWriter struct {
	w       io.Writer
	serial  uint32
	seq     uint32
	granule uint64 // samples written so far: the end of the last page
	page    []byte
}

const (
	oggHeaderSize = 27
	// oggMaxPacket is the largest packet one page holds: 254 lacing values
	// of 255 and a last one of 254.
	oggMaxPacket = 255*255 - 1
)

func newOggWriter(w io.Writer, serial uint32) *oggWriter {
	return &oggWriter{w: w, serial: serial, page: make([]byte, 0, 4096)}
}

// writeHeaders writes the identification and comment headers, each on a
// page of its own as RFC 7845 §3 requires.
func (o *oggWriter) writeHeaders() error {
	head := []byte("OpusHead" +
		"\x01" + // version
		"\x02" + // channels: WebRTC Opus is negotiated as stereo; mono packets decode fine
		"\x00\x00" + // pre-skip 0: see the type comment
		"\x80\xbb\x00\x00" + // input sample rate 48000, informational
		"\x00\x00" + // output gain
		"\x00") // channel mapping family 0
	if err := o.writePage(head, 0x02, 0); err != nil { // 0x02: beginning of stream
		return err
	}
	vendor := "nestmtx"
	tags := binary.LittleEndian.AppendUint32([]byte("OpusTags"), uint32(len(vendor)))
	tags = append(tags, vendor...)
	tags = binary.LittleEndian.AppendUint32(tags, 0) // no user comments
	return o.writePage(tags, 0, 0)
}

// writePacket writes one Opus packet lasting samples on a page of its own.
func (o *oggWriter) writePacket(p []byte, samples int) error {
	o.granule += uint64(samples)
	return o.writePage(p, 0, o.granule)
}

func (o *oggWriter) writePage(p []byte, flags byte, granule uint64) error {
	if len(p) > oggMaxPacket {
		return errPacketTooLarge
	}
	b := o.page[:0]
	b = append(b, "OggS\x00"...)
	b = append(b, flags)
	b = binary.LittleEndian.AppendUint64(b, granule)
	b = binary.LittleEndian.AppendUint32(b, o.serial)
	b = binary.LittleEndian.AppendUint32(b, o.seq)
	b = append(b, 0, 0, 0, 0) // CRC, filled in below
	lacing := len(p)/255 + 1  // a multiple of 255 ends with a 0 lacing value
	b = append(b, byte(lacing))
	for range lacing - 1 {
		b = append(b, 255)
	}
	b = append(b, byte(len(p)%255))
	b = append(b, p...)
	binary.LittleEndian.PutUint32(b[22:], oggCRC(b))
	o.page = b
	o.seq++
	_, err := o.w.Write(b)
	return err
}

// oggCRCTable is for the Ogg CRC-32: polynomial 0x04c11db7, not
// reflected, initial value 0, no final xor.
var oggCRCTable = func() (t [256]uint32) {
	for i := range t {
		r := uint32(i) << 24
		for range 8 {
			if r&0x80000000 != 0 {
				r = r<<1 ^ 0x04c11db7
			} else {
				r <<= 1
			}
		}
		t[i] = r
	}
	return t
}()

func oggCRC(b []byte) uint32 {
	var c uint32
	for _, x := range b {
		c = c<<8 ^ oggCRCTable[byte(c>>24)^x]
	}
	return c
}
