package nestsim

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
)

var (
	clipOnce      sync.Once
	fullClip      *Clip
	shortClip     *Clip
	clipErr       error
	shortClipSecs = 2
)

// clips loads the committed clip once per test binary, plus a two-second
// cut of it so that tests see the loop point without playing ten seconds.
func clips(t testing.TB) (full, short *Clip) {
	t.Helper()
	clipOnce.Do(func() {
		dir, err := FindTestdata()
		if err != nil {
			clipErr = err
			return
		}
		v, err := os.ReadFile(filepath.Join(dir, ClipH264File))
		if err != nil {
			clipErr = err
			return
		}
		a, err := os.ReadFile(filepath.Join(dir, ClipAACFile))
		if err != nil {
			clipErr = err
			return
		}
		if fullClip, clipErr = LoadClip(v, a); clipErr != nil {
			return
		}
		// The clip has one IDR per second, each preceded by an SPS.
		vs, err := cutAtSPS(v, shortClipSecs)
		if err != nil {
			clipErr = err
			return
		}
		as, err := cutADTS(a, shortClipSecs*48000/1024)
		if err != nil {
			clipErr = err
			return
		}
		shortClip, clipErr = LoadClip(vs, as)
	})
	if clipErr != nil {
		t.Fatalf("loading test clip: %v", clipErr)
	}
	return fullClip, shortClip
}

// cutAtSPS returns the Annex-B stream up to its n-th SPS (0-based), that
// is, the first n GOPs.
func cutAtSPS(b []byte, n int) ([]byte, error) {
	seen := 0
	for i := 0; i+4 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 && b[i+3]&0x1f == 7 {
			if seen == n {
				start := i
				if start > 0 && b[start-1] == 0 {
					start--
				}
				return b[:start], nil
			}
			seen++
		}
	}
	return nil, errors.New("not enough SPS NAL units")
}

// cutADTS returns the first n ADTS frames.
func cutADTS(b []byte, n int) ([]byte, error) {
	pos := 0
	for range n {
		if pos+7 > len(b) {
			return nil, errors.New("not enough ADTS frames")
		}
		l := int(b[pos+3]&0x03)<<11 | int(b[pos+4])<<3 | int(b[pos+5])>>5
		pos += l
	}
	return b[:pos], nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func startSim(t testing.TB, o Options) *Sim {
	t.Helper()
	if o.Clip == nil {
		_, o.Clip = clips(t)
	}
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// api is a minimal SDM client speaking plain HTTP+JSON, independent of the
// daemon's client so the sim is checked against the wire shapes alone.
type api struct {
	t     testing.TB
	s     *Sim
	token string
}

func newAPI(t testing.TB, s *Sim) *api {
	return &api{t: t, s: s, token: s.IssueAccessToken()}
}

func (a *api) do(method, path string, body any) (int, []byte) {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.s.SDMURL()+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return res.StatusCode, b
}

func (a *api) devPath(id string) string {
	return "/enterprises/" + a.s.ProjectID() + "/devices/" + id
}

func (a *api) exec(dev, cmd string, params map[string]any) (int, []byte) {
	a.t.Helper()
	if params == nil {
		params = map[string]any{}
	}
	return a.do(http.MethodPost, a.devPath(dev)+":executeCommand", map[string]any{
		"command": "sdm.devices.commands.CameraLiveStream." + cmd, "params": params,
	})
}

type streamResults struct {
	Results struct {
		StreamURLs struct {
			RTSPURL string `json:"rtspUrl"`
		} `json:"streamUrls"`
		StreamExtensionToken string `json:"streamExtensionToken"`
		StreamToken          string `json:"streamToken"`
		ExpiresAt            string `json:"expiresAt"`
	} `json:"results"`
}

func (a *api) generate(dev string) streamResults {
	a.t.Helper()
	code, b := a.exec(dev, "GenerateRtspStream", nil)
	if code != http.StatusOK {
		a.t.Fatalf("GenerateRtspStream: %d %s", code, b)
	}
	var r streamResults
	mustJSON(a.t, b, &r)
	return r
}

func (a *api) extend(dev, ext string) (int, streamResults, []byte) {
	a.t.Helper()
	code, b := a.exec(dev, "ExtendRtspStream", map[string]any{"streamExtensionToken": ext})
	var r streamResults
	if code == http.StatusOK {
		mustJSON(a.t, b, &r)
	}
	return code, r, b
}

type googleErrBody struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
	} `json:"error"`
}

func mustJSON(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
}

// wantGoogleError checks an SDM error answer's status and body shape.
func wantGoogleError(t testing.TB, code int, body []byte, wantCode int, wantStatus string) googleErrBody {
	t.Helper()
	if code != wantCode {
		t.Fatalf("got HTTP %d %s, want %d %s", code, body, wantCode, wantStatus)
	}
	var e googleErrBody
	mustJSON(t, body, &e)
	if e.Error.Code != wantCode || e.Error.Status != wantStatus || e.Error.Message == "" {
		t.Fatalf("error body %s, want code %d status %s and a message", body, wantCode, wantStatus)
	}
	return e
}

func withAuth(raw, token string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	q.Set("auth", token)
	u.RawQuery = q.Encode()
	return u.String()
}

// reader is a gortsplib RTSPS client that records what it receives.
type reader struct {
	c    *gortsplib.Client
	done chan struct{}
	err  error

	mu         sync.Mutex
	video      []hdr
	maxSize    int
	videoAUs   int
	firstIDRAt time.Time
	audio      []hdr
	lastPktAt  time.Time
}

func (s *Sim) tlsConfig(t testing.TB) *tls.Config {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CACertPEM()) {
		t.Fatal("CACertPEM is not a PEM certificate")
	}
	return &tls.Config{RootCAs: pool}
}

func rtspsClient(t testing.TB, s *Sim, u *base.URL) *gortsplib.Client {
	tcp := gortsplib.TransportTCP
	return &gortsplib.Client{
		Scheme:        u.Scheme,
		Host:          u.Host,
		TLSConfig:     s.tlsConfig(t),
		Transport:     &tcp,
		ReadTimeout:   5 * time.Second,
		WriteTimeout:  5 * time.Second,
		OnPacketsLost: func(uint64) {},
		OnDecodeError: func(error) {},
	}
}

// describe makes a fresh connection and sends only DESCRIBE.
func describe(t testing.TB, s *Sim, raw string) (*base.Response, error) {
	t.Helper()
	u, err := base.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := rtspsClient(t, s, u)
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, res, err := c.Describe(u)
	return res, err
}

// statusOf extracts the RTSP status code from a client error, 0 if none.
func statusOf(err error) int {
	var e liberrors.ErrClientBadStatusCode
	if errors.As(err, &e) {
		return int(e.Code)
	}
	return 0
}

// play connects, sets up both tracks and plays.
func play(t testing.TB, s *Sim, raw string) (*reader, error) {
	t.Helper()
	u, err := base.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	r := &reader{c: rtspsClient(t, s, u), done: make(chan struct{})}
	if err := r.c.Start2(); err != nil {
		return nil, err
	}
	desc, _, err := r.c.Describe(u)
	if err != nil {
		r.c.Close()
		return nil, err
	}
	var h264f *format.H264
	vmedi := desc.FindFormat(&h264f)
	var aacf *format.MPEG4Audio
	amedi := desc.FindFormat(&aacf)
	if vmedi == nil || amedi == nil {
		r.c.Close()
		t.Fatalf("description lacks H264 or MPEG-4 audio: %+v", desc.Medias)
	}
	if err := r.c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		r.c.Close()
		return nil, err
	}
	dec, err := h264f.CreateDecoder()
	if err != nil {
		t.Fatal(err)
	}
	r.c.OnPacketRTP(vmedi, h264f, func(p *rtp.Packet) {
		size := p.MarshalSize()
		au, derr := dec.Decode(p)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.video = append(r.video, hdrOf(p))
		r.maxSize = max(r.maxSize, size)
		r.lastPktAt = time.Now()
		if derr == nil {
			r.videoAUs++
			if r.firstIDRAt.IsZero() && h264.IsRandomAccess(au) {
				r.firstIDRAt = time.Now()
			}
		} else if !errors.Is(derr, rtph264.ErrMorePacketsNeeded) && !errors.Is(derr, rtph264.ErrNonStartingPacketAndNoPrevious) {
			t.Errorf("H.264 depacketization: %v", derr)
		}
	})
	r.c.OnPacketRTP(amedi, aacf, func(p *rtp.Packet) {
		size := p.MarshalSize()
		r.mu.Lock()
		defer r.mu.Unlock()
		r.audio = append(r.audio, hdrOf(p))
		r.maxSize = max(r.maxSize, size)
		r.lastPktAt = time.Now()
	})
	if _, err := r.c.Play(nil); err != nil {
		r.c.Close()
		return nil, err
	}
	go func() {
		r.err = r.c.Wait()
		close(r.done)
	}()
	t.Cleanup(r.c.Close)
	return r, nil
}

// hdr is the part of an RTP header the tests check.
type hdr struct {
	seq    uint16
	ts     uint32
	marker bool
	pt     uint8
	ssrc   uint32
}

func hdrOf(p *rtp.Packet) hdr {
	return hdr{seq: p.SequenceNumber, ts: p.Timestamp, marker: p.Marker, pt: p.PayloadType, ssrc: p.SSRC}
}

func (r *reader) headers() (video, audio []hdr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hdr(nil), r.video...), append([]hdr(nil), r.audio...)
}

func (r *reader) counts() (video, audio, aus int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.video), len(r.audio), r.videoAUs
}

// waitCut waits for the server to end the reader's connection.
func (r *reader) waitCut(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(within):
		t.Fatalf("reader still connected after %s", within)
		return nil
	}
}

func (r *reader) alive() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}
