package transcode

import (
	"bytes"
	"io"
)

// adtsFrame looks at the start of b for an ADTS frame (ISO 14496-3
// Table 1.A.5) holding one AAC access unit. It returns:
//   - au != nil, n > 0: a frame of n bytes whose access unit is au;
//   - au == nil, n > 0: n bytes that are no frame, to skip (resync);
//   - au == nil, n == 0: b is the beginning of a frame: read more.
//
// A frame whose header is not understood (another layer, several raw data
// blocks, a length shorter than its header) is skipped a byte at a time
// until the next sync word, so the reader never gets stuck on garbage.
func adtsFrame(b []byte) (au []byte, n int) {
	if len(b) == 0 {
		return nil, 0
	}
	if b[0] != 0xFF {
		if i := bytes.IndexByte(b, 0xFF); i > 0 {
			return nil, i
		}
		return nil, len(b)
	}
	if len(b) < 2 {
		return nil, 0
	}
	// Sync word 0xFFF, then MPEG version (either), layer 00.
	if b[1]&0xF6 != 0xF0 {
		return nil, 1
	}
	if len(b) < 7 {
		return nil, 0
	}
	header := 7
	if b[1]&1 == 0 { // protection_absent 0: a CRC follows the header
		header = 9
	}
	frameLen := int(b[3]&3)<<11 | int(b[4])<<3 | int(b[5]>>5)
	rawBlocks := b[6] & 3 // number_of_raw_data_blocks_in_frame - 1
	if frameLen <= header || rawBlocks != 0 {
		return nil, 1
	}
	if len(b) < frameLen {
		return nil, 0
	}
	return b[header:frameLen], frameLen
}

// adtsMaxFrame is the largest ADTS frame: its length field has 13 bits.
const adtsMaxFrame = 1<<13 - 1

// adtsReader splits a byte stream into AAC access units. A read may end
// anywhere in a frame; the rest stays in buf until the next read.
type adtsReader struct {
	r          io.Reader
	buf        []byte
	start, end int // unparsed bytes: buf[start:end]
	skipped    int // bytes that were no frame
}

func newADTSReader(r io.Reader) *adtsReader {
	return &adtsReader{r: r, buf: make([]byte, 2*adtsMaxFrame)}
}

// next returns the next access unit, valid until the following call, or
// the reader's error (io.EOF at the end of the stream).
func (a *adtsReader) next() ([]byte, error) {
	for {
		au, n := adtsFrame(a.buf[a.start:a.end])
		if n > 0 {
			a.start += n
			if au != nil {
				return au, nil
			}
			a.skipped += n
			continue
		}
		// Need more: move what is left to the front (it is shorter than
		// a frame, so a read always has room), then read.
		if a.start > 0 {
			a.end = copy(a.buf, a.buf[a.start:a.end])
			a.start = 0
		}
		m, err := a.r.Read(a.buf[a.end:])
		a.end += m
		if m == 0 && err != nil {
			return nil, err
		}
	}
}
