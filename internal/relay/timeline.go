package relay

import "time"

// timeline maps one track's upstream timestamps to output timestamps that
// never jump by an outage and never go backwards: each upstream segment
// starts one frame after the last timestamp sent.
//
// It also keeps the track's NTP clock for RTCP sender reports. Readers such
// as ffmpeg compute presentation times from the latest report, which pairs
// an RTP time with an NTP time; were that NTP the wall clock, every outage
// would shift the pairing, and timestamps would jump by the outage (or run
// backwards after reports extrapolated through it). Deriving NTP from the
// output timeline keeps one fixed offset between the two for the stream's
// whole life.
type timeline struct {
	clockRate   uint64
	ext         uint64    // the last output timestamp, unwrapped
	originExt   uint64    // ext of the first packet
	origin      time.Time // wall time of the first packet
	defaultStep uint32
	started     bool // a segment is running
	sentAny     bool
	inBase      uint32
	outBase     uint32
	lastIn      uint32
	lastOut     uint32
	step        uint32 // the last observed frame duration
	// pendingOut, when hasPending, is where the next segment starts
	// (startAt).
	pendingOut uint32
	hasPending bool
}

func (t *timeline) newSegment() { t.started, t.hasPending = false, false }

// maxForwardJump is the largest upstream timestamp step taken as it is
// (in clock ticks, 5 s at 90 kHz); anything larger, or any step back, is a
// discontinuity in the upstream and starts a new segment.
const maxForwardJump = 5 * 90000

func (t *timeline) next(in uint32) uint32 {
	if t.started {
		d := int32(in - t.lastIn)
		if d <= 0 || d > maxForwardJump {
			t.started = false
		} else if uint32(d) < t.defaultStep*4 {
			t.step = uint32(d)
		}
	}
	if !t.started {
		t.started = true
		t.inBase = in
		switch {
		case t.hasPending:
			t.outBase, t.hasPending = t.pendingOut, false
		case !t.sentAny:
			t.outBase = in // the first segment keeps the upstream's own origin
		case t.step > 0:
			t.outBase = t.lastOut + t.step
		default:
			t.outBase = t.lastOut + t.defaultStep
		}
	}
	out := t.outBase + (in - t.inBase)
	if !t.sentAny {
		t.ext, t.originExt, t.origin = uint64(out), uint64(out), time.Now()
	} else {
		t.ext += uint64(out - t.lastOut) // forward by construction
	}
	t.lastIn = in
	t.lastOut = out
	t.sentAny = true
	return out
}

// stepOrDefault is the frame duration the timeline last saw, or its
// default.
func (t *timeline) stepOrDefault() uint32 {
	if t.step > 0 {
		return t.step
	}
	return t.defaultStep
}

// extAt is the (unwrapped) output timestamp whose reference time is tm;
// never before the first one.
func (t *timeline) extAt(tm time.Time) uint64 {
	d := tm.Sub(t.origin)
	if d < 0 {
		return t.originExt
	}
	return t.originExt + uint64(d/time.Second)*t.clockRate + uint64(d%time.Second)*t.clockRate/uint64(time.Second)
}

// startAt makes the next segment begin at output timestamp out (after the
// last one) instead of one frame after the last.
func (t *timeline) startAt(out uint32) {
	t.pendingOut, t.hasPending = out, true
}

// ntp is the reference time of the last output timestamp.
func (t *timeline) ntp() time.Time {
	d := t.ext - t.originExt
	return t.origin.Add(time.Duration(d/t.clockRate)*time.Second +
		time.Duration(d%t.clockRate*uint64(time.Second)/t.clockRate))
}
