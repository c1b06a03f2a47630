package nestsim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// Payload sizes keep every RTP packet (12-byte header + payload) at or below
// 1400 bytes, well under gortsplib's 1472-byte limit minus SRTP overhead.
const (
	maxRTPPacketSize = 1400
	rtpHeaderSize    = 12

	videoClockRate = 90000
)

// Clip is a parsed, pre-packetized media clip that a simulated camera plays in
// a loop. It is immutable after LoadClip and may be shared by several Sims.
type Clip struct {
	SPS, PPS      []byte
	Width, Height int
	FPS           int
	SampleRate    int
	Channels      int

	// frameDur is the spacing of video access units in 90 kHz ticks.
	frameDur uint32
	video    []clipUnit
	audio    []clipUnit
	audioCfg *mpeg4audio.AudioSpecificConfig
}

// clipUnit holds the RTP payloads of one access unit. The packets are made
// once at load time so the player only stamps headers at run time.
type clipUnit struct {
	payloads [][]byte
	markers  []bool
	idr      bool
}

// VideoFrames is the number of video access units in one loop of the clip.
func (c *Clip) VideoFrames() int { return len(c.video) }

// AudioFrames is the number of AAC access units in one loop of the clip.
func (c *Clip) AudioFrames() int { return len(c.audio) }

// Duration is the length of one video loop.
func (c *Clip) Duration() time.Duration {
	return time.Duration(len(c.video)) * time.Second / time.Duration(c.FPS)
}

// LoadClip parses an H.264 Annex-B elementary stream and an AAC-LC ADTS
// stream and packetizes them. The H.264 stream must carry SPS and PPS in band.
func LoadClip(h264Data, aacData []byte) (*Clip, error) {
	c := &Clip{}
	if err := c.loadVideo(h264Data); err != nil {
		return nil, fmt.Errorf("h264 clip: %w", err)
	}
	if err := c.loadAudio(aacData); err != nil {
		return nil, fmt.Errorf("aac clip: %w", err)
	}
	return c, nil
}

func (c *Clip) loadVideo(data []byte) error {
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(data); err != nil {
		return err
	}
	aus := SplitAccessUnits(nalus)
	if len(aus) == 0 {
		return errors.New("no access units")
	}

	for _, au := range aus {
		for _, n := range au {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				if c.SPS == nil {
					c.SPS = n
				}
			case h264.NALUTypePPS:
				if c.PPS == nil {
					c.PPS = n
				}
			}
		}
	}
	if c.SPS == nil || c.PPS == nil {
		return errors.New("no SPS/PPS in stream")
	}
	if !h264.IsRandomAccess(aus[0]) {
		// Looping back to a non-IDR frame would leave a reader that joined
		// at the loop point with undecodable references.
		return errors.New("stream does not start with an IDR frame")
	}
	var sps h264.SPS
	if err := sps.Unmarshal(c.SPS); err != nil {
		return fmt.Errorf("SPS: %w", err)
	}
	c.Width, c.Height = sps.Width(), sps.Height()
	c.FPS = int(sps.FPS() + 0.5)
	if c.FPS <= 0 {
		c.FPS = 25
	}
	c.frameDur = uint32(videoClockRate / c.FPS)

	f := &format.H264{PayloadTyp: 96, PacketizationMode: 1}
	enc, err := f.CreateEncoder()
	if err != nil {
		return err
	}
	enc.PayloadMaxSize = maxRTPPacketSize - rtpHeaderSize
	for _, au := range aus {
		pkts, err := enc.Encode(au)
		if err != nil {
			return err
		}
		u := clipUnit{idr: h264.IsRandomAccess(au)}
		for _, p := range pkts {
			u.payloads = append(u.payloads, p.Payload)
			u.markers = append(u.markers, p.Marker)
		}
		c.video = append(c.video, u)
	}
	return nil
}

// SplitAccessUnits groups NAL units into access units using the rules of
// H.264 7.4.1.2.3, since an elementary stream from ffmpeg carries no
// access unit delimiters.
func SplitAccessUnits(nalus [][]byte) [][][]byte {
	var aus [][][]byte
	var cur [][]byte
	hasVCL := false
	flush := func() {
		if len(cur) > 0 && hasVCL {
			aus = append(aus, cur)
		}
		cur, hasVCL = nil, false
	}
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		typ := h264.NALUType(n[0] & 0x1f)
		switch typ {
		case h264.NALUTypeAccessUnitDelimiter, h264.NALUTypeFillerData:
			if typ == h264.NALUTypeAccessUnitDelimiter && hasVCL {
				flush()
			}
			continue
		case h264.NALUTypeNonIDR, h264.NALUTypeIDR:
			// first_mb_in_slice is ue(v); a leading 1 bit means 0, the
			// first slice of a new picture.
			if hasVCL && len(n) > 1 && n[1]&0x80 != 0 {
				flush()
			}
			cur = append(cur, n)
			hasVCL = true
		case h264.NALUTypeSEI, h264.NALUTypeSPS, h264.NALUTypePPS:
			if hasVCL {
				flush()
			}
			cur = append(cur, n)
		default:
			cur = append(cur, n)
		}
	}
	flush()
	return aus
}

func (c *Clip) loadAudio(data []byte) error {
	var pkts mpeg4audio.ADTSPackets
	if err := pkts.Unmarshal(data); err != nil {
		return err
	}
	if len(pkts) == 0 {
		return errors.New("no ADTS frames")
	}
	first := pkts[0]
	for _, p := range pkts {
		if p.SampleRate != first.SampleRate || p.ChannelCount != first.ChannelCount || p.Type != first.Type {
			return errors.New("ADTS parameters change inside the stream")
		}
	}
	c.SampleRate = first.SampleRate
	c.Channels = first.ChannelCount
	c.audioCfg = &mpeg4audio.AudioSpecificConfig{
		Type:         first.Type,
		SampleRate:   first.SampleRate,
		ChannelCount: first.ChannelCount,
	}
	f := c.audioFormat()
	enc, err := f.CreateEncoder()
	if err != nil {
		return err
	}
	enc.PayloadMaxSize = maxRTPPacketSize - rtpHeaderSize
	for _, p := range pkts {
		// One AU per packet, as cameras send it, so every packet's timestamp
		// is the AU's own.
		rp, err := enc.Encode([][]byte{p.AU})
		if err != nil {
			return err
		}
		var u clipUnit
		for _, x := range rp {
			u.payloads = append(u.payloads, x.Payload)
			u.markers = append(u.markers, x.Marker)
		}
		c.audio = append(c.audio, u)
	}
	return nil
}

func (c *Clip) videoFormat() *format.H264 {
	return &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: c.SPS, PPS: c.PPS}
}

func (c *Clip) audioFormat() *format.MPEG4Audio {
	return &format.MPEG4Audio{
		PayloadTyp:       97,
		ProfileLevelID:   1,
		Config:           c.audioCfg,
		SizeLength:       13,
		IndexLength:      3,
		IndexDeltaLength: 3,
	}
}

// Clip file names inside the testdata directory.
const (
	ClipH264File = "clip.h264"
	ClipAACFile  = "clip.aac"
)

// FindTestdata walks up from the working directory to the module root (the
// directory holding go.mod) and returns its testdata directory. Tests run in
// their package directory, and the CLI may run anywhere inside the checkout.
func FindTestdata() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			td := filepath.Join(dir, "testdata")
			if _, err := os.Stat(filepath.Join(td, ClipH264File)); err != nil {
				return "", fmt.Errorf("module root %s has no testdata/%s: %w", dir, ClipH264File, err)
			}
			return td, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found above the working directory")
		}
		dir = parent
	}
}

// LoadTestdataClip loads the clip committed in the module's testdata.
func LoadTestdataClip() (*Clip, error) {
	dir, err := FindTestdata()
	if err != nil {
		return nil, err
	}
	return LoadClipFiles(filepath.Join(dir, ClipH264File), filepath.Join(dir, ClipAACFile))
}

// LoadClipFiles reads and loads an H.264 Annex-B file and an AAC ADTS file.
func LoadClipFiles(h264Path, aacPath string) (*Clip, error) {
	v, err := os.ReadFile(h264Path)
	if err != nil {
		return nil, err
	}
	a, err := os.ReadFile(aacPath)
	if err != nil {
		return nil, err
	}
	return LoadClip(v, a)
}
