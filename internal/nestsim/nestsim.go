// Over 500 lines: the simulator's options, state and lifecycle belong together; its endpoints live in oauth.go, sdm.go and session.go.

// Package nestsim is a simulated Google for tests, demos and benchmarks: the
// OAuth endpoints (Partner Connections auth page and token endpoint), the
// Smart Device Management REST API and an RTSPS "dropcam" camera server that
// plays a looped clip in real time. The daemon talks to it over real sockets
// in Google's wire shapes, so the code under test is the production code.
//
// Behaviour where Google's is unknown or where the sim chooses:
//
//   - The auth page grants at once (no HTML) and redirects with code, state
//     and scope. A refresh token is issued only for access_type=offline, as
//     Google does. Codes are single-use and live 10 minutes.
//   - RevokeRefreshTokens leaves issued access tokens valid until expiry.
//   - SDM checks, in order: path shape (404), bearer token (401; 403 when
//     the token lacks the sdm.service scope), ServerErrors fault (500),
//     project (404), for executeCommand the rate-limit fault and quota (429),
//     then the device (404) and the command.
//   - Extension tokens chain: only the newest one is accepted by Extend and
//     Stop (older or unknown: 400 INVALID_ARGUMENT); the newest one of an
//     expired or stopped session gives 400 FAILED_PRECONDITION.
//   - WebRTC (devices whose Protocols include WEB_RTC; see webrtc.go): the
//     offer is validated as Google does (webrtc_offer.go), a pion answerer
//     answers sendrecv with every offered H.264 profile it knows (two for
//     Chrome's and pion's offers), gathers its ICE candidates before
//     answering (UDP over IPv4, on loopback only when the HTTP listener is
//     on loopback, no mDNS) and, once connected, plays the clip's H.264 and
//     Options.Opus (default: Opus silence) in real time. A PLI or FIR makes
//     the next picture an IDR. Extend and Stop take the mediaSessionId;
//     an unknown, ended, empty or other device's one answers 400
//     FAILED_PRECONDITION "WebRtc error caused by invalid session or user
//     id mismatch.". Extend on a Battery device answers 400
//     FAILED_PRECONDITION too. A session is cut (its peer connection
//     closed) at expiresAt, and a peer that fails or closes ends its
//     session. Google's answer candidates lack a foundation; the sim's
//     have one.
//   - RTSPS is TCP only (interleaved), as with Google's cameras; a UDP SETUP
//     gets 461 from gortsplib. DESCRIBE, SETUP and PLAY need the session's
//     current stream token: 404 for an unknown, stopped or expired session,
//     403 for any other token. Keepalives are not checked, so a reader
//     connected before an extension keeps playing.
//   - One reader per stream session (Google: one client per URL). A second
//     concurrent SETUP waits up to 500 ms for the first reader to go away
//     (a client reconnecting may beat the server to noticing its old TCP
//     close) and is then refused with 453 Not Enough Bandwidth. DESCRIBE is
//     never refused for this reason.
//   - A session is cut at expiresAt exactly: its ServerStream is closed,
//     which kicks its reader.
//   - A removed device's running sessions play on until they expire; Extend
//     and Stop on it answer 404.
package nestsim

import (
	nestmtx "github.com/nestmtx/nestmtx"

	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/pion/webrtc/v4"
)

// Device types and protocols as the SDM API spells them.
const (
	TypeCamera     = "sdm.devices.types.CAMERA"
	TypeDoorbell   = "sdm.devices.types.DOORBELL"
	TypeDisplay    = "sdm.devices.types.DISPLAY"
	TypeThermostat = "sdm.devices.types.THERMOSTAT"

	ProtocolRTSP   = "RTSP"
	ProtocolWebRTC = "WEB_RTC"

	// ScopeSDM is the OAuth scope the SDM API requires.
	ScopeSDM = "https://www.googleapis.com/auth/sdm.service"

	// DefaultProjectID is the Device Access project id used when Options
	// leaves it empty.
	DefaultProjectID = "5c0ffee5-51a7-4e57-8000-00000000cafe"
	// DefaultClientID and DefaultClientSecret are the OAuth client the sim
	// accepts when Options leaves them empty.
	DefaultClientID     = "nestsim-client-id"
	DefaultClientSecret = "nestsim-client-secret"

	// Default device ids, stable so demos and tests can name them.
	FrontDoorID  = "AVPHwEuSimFrontDoor01"
	BackyardID   = "AVPHwEuSimBackyard02"
	ThermostatID = "AVPHwEuSimThermostat03"
	LivingRoomID = "AVPHwEuSimLivingRoom04"
	// BatteryDoorbellID is BatteryDoorbell's id.
	BatteryDoorbellID = "AVPHwEuSimBatteryBell05"
)

// Options configures a Sim. The zero value is usable.
type Options struct {
	// HTTPAddress serves OAuth and SDM. Default "127.0.0.1:0".
	HTTPAddress string
	// RTSPSAddress is the RTSPS camera server (TCP only, TLS with a
	// self-signed certificate made at start). Default "127.0.0.1:0".
	RTSPSAddress string
	// PublicHost is the host put into the URLs the sim hands out (auth,
	// token, SDM and rtsps stream URLs) and into the certificate's SANs.
	// Default: the listener's IP, or 127.0.0.1 when it listens on all
	// interfaces.
	PublicHost string
	// ProjectID is the Device Access project id. Default DefaultProjectID.
	ProjectID string
	// ClientID and ClientSecret are the OAuth client the sim accepts.
	ClientID, ClientSecret string
	// AccessTokenTTL is the lifetime of access tokens. Default 1h.
	AccessTokenTTL time.Duration
	// StreamTTL is the lifetime of a generated or extended RTSP stream or
	// WebRTC media session. Default 5m.
	StreamTTL time.Duration
	// Cameras are the shared devices. Nil means DefaultCameras(); an empty
	// non-nil slice means no devices (the list answer then has no
	// "devices" key, as Google's does).
	Cameras []Device
	// Clip is the media every RTSP camera plays. Nil plays the clip built
	// into the binary (testdata/clip.*, embedded by the root package).
	Clip *Clip
	// Opus is the audio of WebRTC cameras. Nil plays the tone built into
	// the binary (testdata/clip.opus); SilenceOpus() sends silent frames.
	Opus *OpusClip
	// EnforceQuota answers 429 RESOURCE_EXHAUSTED beyond 10 executeCommand
	// calls per rolling minute per project, as Google's sandbox does.
	EnforceQuota bool
	// Log receives debug and info events. Default: discarded.
	Log *slog.Logger
	// Now is the clock for token and stream expiry and the call log.
	// Default time.Now. Media pacing always uses the real clock.
	Now func() time.Time
	// ClockOffset sets the simulated Google's clock ahead (positive) or
	// behind (negative) of Now: its Date headers, expiresAt values and
	// expiry checks all follow it, as they would on a daemon host whose
	// clock is off by -ClockOffset.
	ClockOffset time.Duration
}

// Device describes one shared device: a camera or a doorbell, or another
// kind (a Type other than CAMERA, DOORBELL or DISPLAY is listed without
// camera traits: a thermostat, say).
type Device struct {
	ID         string   // device id (last segment of the name); default random
	CustomName string   // sdm.devices.traits.Info customName; may be empty, as in the Nest app
	Room       string   // parentRelations displayName
	Type       string   // default TypeCamera
	Protocols  []string // supportedProtocols; default ["RTSP"] for camera types
	// Width and Height are the advertised maxVideoResolution; default the
	// clip's size. The stream itself is always the clip.
	Width, Height int
	// Battery marks a battery-powered camera or doorbell: its
	// ExtendWebRtcStream answers 400 FAILED_PRECONDITION, as Google
	// documents, so a client must regenerate every StreamTTL.
	Battery bool
}

// DefaultCameras returns the devices a Sim shares when Options.Cameras is
// nil: an RTSP doorbell "Front Door" (room "Entrance"), an RTSP camera
// "Backyard" (room "Garden"), a thermostat (room "Hallway") and a WEB_RTC-only
// camera in room "Living Room" with an empty customName, as Nest app devices
// often have.
func DefaultCameras() []Device {
	return []Device{
		{ID: FrontDoorID, CustomName: "Front Door", Room: "Entrance", Type: TypeDoorbell, Protocols: []string{ProtocolRTSP}},
		{ID: BackyardID, CustomName: "Backyard", Room: "Garden", Type: TypeCamera, Protocols: []string{ProtocolRTSP}},
		{ID: ThermostatID, CustomName: "Hallway Thermostat", Room: "Hallway", Type: TypeThermostat},
		{ID: LivingRoomID, CustomName: "", Room: "Living Room", Type: TypeCamera, Protocols: []string{ProtocolWebRTC}},
	}
}

// BatteryDoorbell is a WEB_RTC-only battery doorbell "Porch Doorbell" (room
// "Porch") whose ExtendWebRtcStream is refused, as Google's are. It is not
// among DefaultCameras, whose count tests and demos rely on; append it:
// append(DefaultCameras(), BatteryDoorbell()).
func BatteryDoorbell() Device {
	return Device{ID: BatteryDoorbellID, CustomName: "Porch Doorbell", Room: "Porch", Type: TypeDoorbell,
		Protocols: []string{ProtocolWebRTC}, Battery: true}
}

// Call is one request the sim answered, for tests to assert on.
type Call struct {
	At time.Time
	// Method is "GenerateRtspStream", "ExtendRtspStream", "StopRtspStream",
	// "GenerateWebRtcStream", "ExtendWebRtcStream", "StopWebRtcStream"
	// (or another command's last name segment, or "executeCommand" when
	// the command is unreadable), "devices.list", "devices.get",
	// "token.authorization_code", "token.refresh_token" (or "token."+grant
	// type), "auth" for the consent page, or "sdm" for other SDM paths.
	Method string
	Device string // device id, when the call names one
	Status int    // HTTP status answered
}

// maxCallLog bounds the call log of a long-running demo; counts stay exact.
const maxCallLog = 100000

// Sim is a running simulated Google. All methods are safe for concurrent use.
type Sim struct {
	o      Options
	log    *slog.Logger
	now    func() time.Time
	clip   *Clip
	faults *Faults

	httpLn   net.Listener
	httpSrv  *http.Server
	httpBase string

	rtsp     *gortsplib.Server
	rtspAddr string // dialable host:port for stream URLs
	certPEM  []byte

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	reapKick chan struct{}

	opus   *OpusClip
	rtcAPI *webrtc.API
	// rtcWG waits for the RTCP readers, which end only when their peer
	// connection is closed, after wg's goroutines.
	rtcWG sync.WaitGroup

	mu          sync.Mutex
	closed      bool
	devices     []*device
	byID        map[string]*device
	codes       map[string]*authCode
	refresh     map[string]*refreshToken
	access      map[string]*accessToken
	sessions    map[string]*streamSession
	extTokens   map[string]*streamSession // every extension token ever issued
	connSess    map[*gortsplib.ServerConn]*streamSession
	readerSess  map[*gortsplib.ServerSession]*streamSession
	rtcSessions map[string]*rtcSession // by mediaSessionId
	calls       []Call
	callCounts  map[string]int
	quota       []time.Time
}

// Start listens on both addresses and serves until Close.
func Start(o Options) (*Sim, error) {
	if o.HTTPAddress == "" {
		o.HTTPAddress = "127.0.0.1:0"
	}
	if o.RTSPSAddress == "" {
		o.RTSPSAddress = "127.0.0.1:0"
	}
	if o.ProjectID == "" {
		o.ProjectID = DefaultProjectID
	}
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.ClientSecret == "" {
		o.ClientSecret = DefaultClientSecret
	}
	if o.AccessTokenTTL <= 0 {
		o.AccessTokenTTL = time.Hour
	}
	if o.StreamTTL <= 0 {
		o.StreamTTL = 5 * time.Minute
	}
	if o.Cameras == nil {
		o.Cameras = DefaultCameras()
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if off := o.ClockOffset; off != 0 {
		base := o.Now
		o.Now = func() time.Time { return base().Add(off) }
	}
	if o.Clip == nil {
		// The clip is built into the binary, so the demo and `nestmtx
		// simulate` work wherever it is installed.
		c, err := LoadClip(nestmtx.DemoClipH264, nestmtx.DemoClipAAC)
		if err != nil {
			return nil, fmt.Errorf("nestsim: the built-in clip: %w", err)
		}
		o.Clip = c
	}

	ctx, cancel := context.WithCancel(context.Background())
	s := &Sim{
		o:          o,
		log:        o.Log,
		now:        o.Now,
		clip:       o.Clip,
		ctx:        ctx,
		cancel:     cancel,
		reapKick:   make(chan struct{}, 1),
		byID:       map[string]*device{},
		codes:      map[string]*authCode{},
		refresh:    map[string]*refreshToken{},
		access:     map[string]*accessToken{},
		sessions:   map[string]*streamSession{},
		extTokens:  map[string]*streamSession{},
		connSess:   map[*gortsplib.ServerConn]*streamSession{},
		readerSess: map[*gortsplib.ServerSession]*streamSession{},
		callCounts: map[string]int{},

		opus:        o.Opus,
		rtcSessions: map[string]*rtcSession{},
	}
	if s.opus == nil {
		var err error
		if s.opus, err = LoadOggOpus(nestmtx.DemoClipOpus); err != nil {
			cancel()
			return nil, fmt.Errorf("nestsim: the built-in Opus clip: %w", err)
		}
	}
	s.faults = &Faults{s: s, dropKick: make(chan struct{}, 1)}

	if err := s.initDevices(); err != nil {
		cancel()
		return nil, err
	}

	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	var err error
	s.httpLn, err = net.Listen("tcp", o.HTTPAddress)
	if err != nil {
		return nil, fmt.Errorf("nestsim: http listen: %w", err)
	}
	s.httpBase = "http://" + s.publicHostPort(s.httpLn.Addr())
	var listenIP net.IP
	if ta, ok := s.httpLn.Addr().(*net.TCPAddr); ok {
		listenIP = ta.IP
	}
	if s.rtcAPI, err = newRTCAPI(listenIP); err != nil {
		return nil, fmt.Errorf("nestsim: webrtc: %w", err)
	}

	rtspLn, err := net.Listen("tcp", o.RTSPSAddress)
	if err != nil {
		return nil, fmt.Errorf("nestsim: rtsps listen: %w", err)
	}
	s.rtspAddr = s.publicHostPort(rtspLn.Addr())
	host, _, _ := net.SplitHostPort(s.rtspAddr)
	cert, certPEM, err := selfSignedCert(host)
	if err != nil {
		rtspLn.Close()
		return nil, err
	}
	s.certPEM = certPEM
	s.rtsp = &gortsplib.Server{
		Handler:     &rtspHandler{s: s},
		RTSPAddress: rtspLn.Addr().String(),
		TLSConfig:   &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		// The listener is made beforehand so that the certificate can name
		// the real address and ":0" yields a known port.
		Listen: func(string, string) (net.Listener, error) { return rtspLn, nil },
	}
	if err := s.rtsp.Start(); err != nil {
		s.rtsp = nil
		rtspLn.Close()
		return nil, fmt.Errorf("nestsim: rtsps start: %w", err)
	}

	s.httpSrv = &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("nestsim http server stopped", "err", err)
		}
	}()

	for _, d := range s.devices {
		if d.player != nil {
			s.wg.Add(1)
			go d.player.run()
		}
	}
	s.wg.Add(2)
	go s.reaper()
	go s.faults.dropLoop()

	ok = true
	s.log.Info("nestsim started", "http", s.httpBase, "rtsps", s.rtspAddr, "project", o.ProjectID)
	return s, nil
}

// publicHostPort turns a listener address into one a client can dial.
func (s *Sim) publicHostPort(a net.Addr) string {
	host, port, _ := net.SplitHostPort(a.String())
	if s.o.PublicHost != "" {
		host = s.o.PublicHost
	} else if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Close stops serving, ends every stream session and waits for every
// goroutine the sim started.
func (s *Sim) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()

		if s.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				s.httpSrv.Close()
			}
			cancel()
		} else if s.httpLn != nil {
			s.httpLn.Close()
		}
		// Players must be gone before their streams close so no write
		// races a closed stream into a log line.
		s.wg.Wait()

		s.mu.Lock()
		var cut cutList
		for _, ss := range s.sessions {
			if ss.state == stateLive {
				s.endLocked(ss, stateStopped, &cut)
			}
		}
		for _, ss := range s.rtcSessions {
			if ss.state == stateLive {
				s.endRTCLocked(ss, stateStopped, &cut)
			}
		}
		s.mu.Unlock()
		cut.do()
		s.rtcWG.Wait()
		if s.rtsp != nil {
			s.rtsp.Close()
		}
		s.log.Info("nestsim stopped")
	})
	return nil
}

// AuthURL is the Partner Connections consent page.
func (s *Sim) AuthURL() string {
	return s.httpBase + "/partnerconnections/" + s.o.ProjectID + "/auth"
}

// TokenURL is the OAuth token endpoint.
func (s *Sim) TokenURL() string { return s.httpBase + "/oauth2/v4/token" }

// SDMURL is the SDM API base; clients append /enterprises/{project}/devices.
func (s *Sim) SDMURL() string { return s.httpBase + "/v1" }

// HTTPAddress is the dialable host:port of the OAuth/SDM server.
func (s *Sim) HTTPAddress() string { return s.httpBase[len("http://"):] }

// CACertPEM is the RTSPS server's self-signed certificate, for clients to
// trust as a root.
func (s *Sim) CACertPEM() []byte { return append([]byte(nil), s.certPEM...) }

// WriteCAFile writes CACertPEM to path.
func (s *Sim) WriteCAFile(path string) error { return os.WriteFile(path, s.certPEM, 0o644) }

// RTSPSAddress is the dialable host:port of the RTSPS camera server.
func (s *Sim) RTSPSAddress() string { return s.rtspAddr }

// ProjectID is the Device Access project id.
func (s *Sim) ProjectID() string { return s.o.ProjectID }

// ClientID is the OAuth client id the sim accepts.
func (s *Sim) ClientID() string { return s.o.ClientID }

// ClientSecret is the OAuth client secret the sim accepts.
func (s *Sim) ClientSecret() string { return s.o.ClientSecret }

// Clip is the media the cameras play.
func (s *Sim) Clip() *Clip { return s.clip }

// Faults controls fault injection at run time.
func (s *Sim) Faults() *Faults { return s.faults }

// Calls returns a copy of the call log, oldest first.
func (s *Sim) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CountCalls counts calls of one Method, whatever their status.
func (s *Sim) CountCalls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callCounts[method]
}

// ResetCalls empties the call log and its counts.
func (s *Sim) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
	s.callCounts = map[string]int{}
}

func (s *Sim) recordCall(method, dev string, status int) {
	if method == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) >= maxCallLog {
		s.calls = append(s.calls[:0], s.calls[len(s.calls)/2:]...)
	}
	s.calls = append(s.calls, Call{At: s.now(), Method: method, Device: dev, Status: status})
	s.callCounts[method]++
}

// FramesSent counts the video access units written to that camera's
// stream sessions, once per session that had a playing reader at the time,
// plus those sent on its connected WebRTC sessions.
func (s *Sim) FramesSent(deviceID string) int {
	s.mu.Lock()
	d := s.byID[deviceID]
	s.mu.Unlock()
	if d == nil {
		return 0
	}
	n := d.rtcFrames.Load()
	if d.player != nil {
		n += d.player.frames.Load()
	}
	return int(n)
}

// LiveSessions counts stream sessions that are generated and neither
// stopped nor expired.
func (s *Sim) LiveSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.sessions {
		if ss.state == stateLive {
			n++
		}
	}
	return n
}

// Readers counts RTSPS reader sessions (SETUP done) across all stream
// sessions.
func (s *Sim) Readers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.readerSess)
}

func randToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func randUint32() uint32 {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func itoa(n int) string { return strconv.Itoa(n) }
