package nestsim

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Faults injects failures at run time. All methods are safe for concurrent
// use and take effect for the next request.
type Faults struct {
	s *Sim

	mu             sync.Mutex
	failExtensions bool
	rateLimit      bool
	rateCounter    int
	serverErrors   int
	slow           time.Duration
	dropPeriod     time.Duration
	freeze         bool
	refuseStreams  int
	linger         bool
	withholdIDR    bool

	dropKick chan struct{}
}

// FailExtensions makes every ExtendRtspStream and ExtendWebRtcStream answer
// 400 FAILED_PRECONDITION, so sessions die at their expiry.
func (f *Faults) FailExtensions(on bool) {
	f.mu.Lock()
	f.failExtensions = on
	f.mu.Unlock()
}

// LingerExpired keeps sending the media of sessions past their expiresAt
// instead of cutting them: a stream that looks alive on a session Google has
// already let go, which only a check of expiresAt can catch.
func (f *Faults) LingerExpired(on bool) {
	f.mu.Lock()
	f.linger = on
	f.mu.Unlock()
}

func (f *Faults) lingering() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.linger
}

// RefuseStreams makes the next n RTSPS DESCRIBEs answer 404, as dropcam
// hosts intermittently do for fresh URLs (HA #60353).
func (f *Faults) RefuseStreams(n int) {
	f.mu.Lock()
	f.refuseStreams = n
	f.mu.Unlock()
}

func (f *Faults) takeStreamRefusal() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuseStreams > 0 {
		f.refuseStreams--
		return true
	}
	return false
}

// SetCameraClip makes a camera play another clip from its next frame, and
// announce its codec parameters in the sessions generated from then on.
func (f *Faults) SetCameraClip(deviceID string, c *Clip) error {
	f.s.mu.Lock()
	d := f.s.byID[deviceID]
	f.s.mu.Unlock()
	if d == nil || d.player == nil {
		return fmt.Errorf("nestsim: no camera %q", deviceID)
	}
	d.player.next.Store(c)
	return nil
}

// FreezeStreams stops every camera's media while their RTSPS connections
// and WebRTC peer connections stay open: a stall that only a watchdog on the
// media can see. RTP timestamps keep running, so the media resumes with a
// gap in timestamps but none in sequence numbers.
func (f *Faults) FreezeStreams(on bool) {
	f.mu.Lock()
	f.freeze = on
	f.mu.Unlock()
}

func (f *Faults) frozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.freeze
}

// RefuseWebRTCExtensions makes ExtendWebRtcStream on one device answer 400
// FAILED_PRECONDITION (on) or work again (off), as for a battery doorbell
// (Device.Battery sets it at start).
func (f *Faults) RefuseWebRTCExtensions(deviceID string, on bool) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	d := f.s.byID[deviceID]
	if d == nil || !d.supports(ProtocolWebRTC) {
		return fmt.Errorf("nestsim: no WebRTC camera %q", deviceID)
	}
	d.noExtend = on
	return nil
}

// FailICE closes the peer connections of one device's live WebRTC sessions
// ("" for every device), as when ICE fails: the client's connection goes
// away and the media sessions end, so Extend answers FAILED_PRECONDITION.
// It returns the number of sessions cut.
func (f *Faults) FailICE(deviceID string) int { return f.s.failICE(deviceID) }

// WithholdIDR makes WebRTC sessions that connect from now on start in the
// middle of a GOP and skip every IDR until the client sends a PLI or FIR,
// like a camera that sends keyframes only on request.
func (f *Faults) WithholdIDR(on bool) {
	f.mu.Lock()
	f.withholdIDR = on
	f.mu.Unlock()
}

func (f *Faults) withholdingIDR() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.withholdIDR
}

// RateLimitEveryOther makes every second executeCommand answer 429
// RESOURCE_EXHAUSTED (the first one after turning it on passes).
func (f *Faults) RateLimitEveryOther(on bool) {
	f.mu.Lock()
	f.rateLimit = on
	f.rateCounter = 0
	f.mu.Unlock()
}

// ServerErrors makes the next n SDM calls (after authentication) answer
// 500 INTERNAL "Internal error encountered.".
func (f *Faults) ServerErrors(n int) {
	f.mu.Lock()
	f.serverErrors = n
	f.mu.Unlock()
}

// RevokeRefreshTokens invalidates every refresh token issued so far:
// refreshing with one answers invalid_grant from now on. Access tokens
// already issued stay valid until they expire; new consent flows and
// IssueRefreshToken give working tokens again.
func (f *Faults) RevokeRefreshTokens() { f.s.revokeRefreshTokens() }

// SlowResponses delays every SDM and OAuth answer by d (0 = off). The call
// takes effect before the delay, as with a slow server whose answer a
// client may give up on.
func (f *Faults) SlowResponses(d time.Duration) {
	f.mu.Lock()
	f.slow = d
	f.mu.Unlock()
}

// DropStreams cuts every live RTSPS connection now. The stream sessions
// stay valid: a reader may reconnect with the same URL.
func (f *Faults) DropStreams() { f.s.dropStreams() }

// DropEvery cuts every live RTSPS connection every d (0 = off).
func (f *Faults) DropEvery(d time.Duration) {
	f.mu.Lock()
	f.dropPeriod = d
	f.mu.Unlock()
	select {
	case f.dropKick <- struct{}{}:
	default:
	}
}

// RemoveDevice unshares a device: it is listed no more and get/commands
// answer 404 NOT_FOUND. Its running stream sessions play on until they
// expire (they cannot be extended).
func (f *Faults) RemoveDevice(id string) error { return f.s.setRemoved(id, true) }

// RestoreDevice shares a removed device again.
func (f *Faults) RestoreDevice(id string) error { return f.s.setRemoved(id, false) }

func (s *Sim) setRemoved(id string, removed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.byID[id]
	if d == nil {
		return fmt.Errorf("nestsim: no device %q", id)
	}
	d.removed = removed
	return nil
}

func (f *Faults) extensionsFail() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failExtensions
}

func (f *Faults) takeRateLimit() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.rateLimit {
		return false
	}
	f.rateCounter++
	return f.rateCounter%2 == 0
}

func (f *Faults) takeServerError() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.serverErrors <= 0 {
		return false
	}
	f.serverErrors--
	return true
}

func (f *Faults) slowDelay() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.slow
}

func (f *Faults) dropLoop() {
	defer f.s.wg.Done()
	var tick <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		select {
		case <-f.s.ctx.Done():
			return
		case <-f.dropKick:
			f.mu.Lock()
			d := f.dropPeriod
			f.mu.Unlock()
			if ticker != nil {
				ticker.Stop()
				ticker, tick = nil, nil
			}
			if d > 0 {
				ticker = time.NewTicker(d)
				tick = ticker.C
			}
		case <-tick:
			f.s.dropStreams()
		}
	}
}

// FaultSpec is a parsed fault list for demo mode.
type FaultSpec struct {
	ExtendFail   bool          // "extend_fail"
	DropEvery    time.Duration // "drop=<duration>"
	RateLimit    bool          // "rate_limit"
	ServerErrors int           // "server_errors=<n>"
	Slow         time.Duration // "slow=<duration>"
}

// ParseFaults parses a comma-separated fault list such as
// "extend_fail,drop=90s,rate_limit". Blank items are ignored.
func ParseFaults(spec string) (FaultSpec, error) {
	var fs FaultSpec
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		key, val, hasVal := strings.Cut(item, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		needVal := key == "drop" || key == "server_errors" || key == "slow"
		if hasVal != needVal {
			if needVal {
				return FaultSpec{}, fmt.Errorf("fault %q needs a value (%s=...)", key, key)
			}
			return FaultSpec{}, fmt.Errorf("fault %q takes no value", key)
		}
		switch key {
		case "extend_fail":
			fs.ExtendFail = true
		case "rate_limit":
			fs.RateLimit = true
		case "drop", "slow":
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 {
				return FaultSpec{}, fmt.Errorf("fault %s: want a positive duration, got %q", key, val)
			}
			if key == "drop" {
				fs.DropEvery = d
			} else {
				fs.Slow = d
			}
		case "server_errors":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 {
				return FaultSpec{}, fmt.Errorf("fault server_errors: want a positive count, got %q", val)
			}
			fs.ServerErrors = n
		default:
			return FaultSpec{}, fmt.Errorf("unknown fault %q (known: extend_fail, drop=<duration>, rate_limit, server_errors=<n>, slow=<duration>)", key)
		}
	}
	return fs, nil
}

// String renders the spec in ParseFaults' syntax.
func (fs FaultSpec) String() string {
	var parts []string
	if fs.ExtendFail {
		parts = append(parts, "extend_fail")
	}
	if fs.DropEvery > 0 {
		parts = append(parts, "drop="+fs.DropEvery.String())
	}
	if fs.RateLimit {
		parts = append(parts, "rate_limit")
	}
	if fs.ServerErrors > 0 {
		parts = append(parts, "server_errors="+strconv.Itoa(fs.ServerErrors))
	}
	if fs.Slow > 0 {
		parts = append(parts, "slow="+fs.Slow.String())
	}
	return strings.Join(parts, ",")
}

// Apply turns on the faults the spec names. Faults it does not name are
// left as they are, so specs can be layered.
func (f *Faults) Apply(fs FaultSpec) {
	if fs.ExtendFail {
		f.FailExtensions(true)
	}
	if fs.DropEvery > 0 {
		f.DropEvery(fs.DropEvery)
	}
	if fs.RateLimit {
		f.RateLimitEveryOther(true)
	}
	if fs.ServerErrors > 0 {
		f.ServerErrors(fs.ServerErrors)
	}
	if fs.Slow > 0 {
		f.SlowResponses(fs.Slow)
	}
}
