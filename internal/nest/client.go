package nest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// SDM command names.
const (
	CmdGenerateRtspStream = "sdm.devices.commands.CameraLiveStream.GenerateRtspStream"
	CmdExtendRtspStream   = "sdm.devices.commands.CameraLiveStream.ExtendRtspStream"
	CmdStopRtspStream     = "sdm.devices.commands.CameraLiveStream.StopRtspStream"
)

// defaultStreamLifetime is assumed when Google omits expiresAt; it is the
// documented RTSP session lifetime.
const defaultStreamLifetime = 5 * time.Minute

const (
	maxBodyBytes  = 1 << 20
	maxErrorBytes = 64 << 10
)

// ClientOptions configure a Client. Zero fields take the defaults noted.
type ClientOptions struct {
	ProjectID string
	SDMURL    string       // default Google's
	HTTP      *http.Client // default: 10 s timeout (never http.DefaultClient)
	Tokens    TokenSource  // required
	// Limiter gates executeCommand; default NewLimiter(DefaultLimits()).
	// Share one per Google user: the quotas are per user, not per client.
	Limiter *Limiter
	// ListLimiter gates devices.list (Google: 5 QPM); default 5 per minute.
	ListLimiter *Limiter
	// GetLimiter gates devices.get (Google: 10 QPM); default 10 per minute.
	GetLimiter *Limiter
	// Now is the clock for the expiresAt fallback; default time.Now.
	Now func() time.Time
	// OnCommand, if set, is told the outcome of every executeCommand sent
	// to Google (after the quota wait): the command's short name
	// (GenerateRtspStream …) and its error, nil on success. For metrics.
	OnCommand func(command string, err error)
}

// Client talks to SDM for one Google credential. It is safe for concurrent
// use by many cameras, which is the point: the limiters inside it are what
// keep those cameras jointly under the per-user quotas.
type Client struct {
	project     string
	base        string
	hc          *http.Client
	tokens      TokenSource
	limiter     *Limiter
	listLimiter *Limiter
	getLimiter  *Limiter
	now         func() time.Time
	onCommand   func(command string, err error)
}

// NewClient panics if o.Tokens is nil: that is a wiring bug, not a runtime
// condition.
func NewClient(o ClientOptions) *Client {
	if o.Tokens == nil {
		panic("nest: ClientOptions.Tokens is nil")
	}
	c := &Client{
		project:     o.ProjectID,
		base:        strings.TrimRight(o.SDMURL, "/"),
		hc:          o.HTTP,
		tokens:      o.Tokens,
		limiter:     o.Limiter,
		listLimiter: o.ListLimiter,
		getLimiter:  o.GetLimiter,
		now:         o.Now,
		onCommand:   o.OnCommand,
	}
	if c.base == "" {
		c.base = DefaultEndpoints().SDMURL
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	if c.limiter == nil {
		c.limiter = NewLimiter(DefaultLimits())
	}
	if c.listLimiter == nil {
		c.listLimiter = NewLimiter(Limits{PerCredential: 5, Window: time.Minute})
	}
	if c.getLimiter == nil {
		c.getLimiter = NewLimiter(Limits{PerCredential: 10, Window: time.Minute})
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Limiter is the executeCommand limiter, exposed for health stats.
func (c *Client) Limiter() *Limiter { return c.limiter }

// ProjectID is the Device Access project the client lists devices of.
func (c *Client) ProjectID() string { return c.project }

// ListDevices lists every device shared with the project. Google omits the
// "devices" key when nothing is shared; that is an empty list, not an error.
func (c *Client) ListDevices(ctx context.Context) ([]Device, error) {
	const op = "ListDevices"
	if c.project == "" || strings.ContainsAny(c.project, "/?#") {
		return nil, fmt.Errorf("nest: %s: invalid project id %q", op, c.project)
	}
	if err := c.listLimiter.Wait(ctx, "", "devices.list"); err != nil {
		return nil, err
	}
	var resp struct {
		Devices []wireDevice `json:"devices"`
	}
	err := c.do(ctx, op, http.MethodGet, "enterprises/"+url.PathEscape(c.project)+"/devices", nil, &resp)
	if err != nil {
		if IsRateLimited(err) {
			c.listLimiter.Penalize(0)
		}
		return nil, err
	}
	out := make([]Device, 0, len(resp.Devices))
	for _, w := range resp.Devices {
		out = append(out, w.toDevice())
	}
	return out, nil
}

// GetDevice fetches one device by full name (a bare id is expanded with the
// client's project).
func (c *Client) GetDevice(ctx context.Context, deviceName string) (Device, error) {
	const op = "GetDevice"
	name, err := c.deviceName(deviceName)
	if err != nil {
		return Device{}, fmt.Errorf("nest: %s: %w", op, err)
	}
	if err := c.getLimiter.Wait(ctx, "", "devices.get"); err != nil {
		return Device{}, err
	}
	var w wireDevice
	if err := c.do(ctx, op, http.MethodGet, name, nil, &w); err != nil {
		if IsRateLimited(err) {
			c.getLimiter.Penalize(0)
		}
		return Device{}, err
	}
	return w.toDevice(), nil
}

// ExecuteCommand runs one SDM command and returns the unwrapped "results"
// object (nil for commands that answer {}). It waits on the Limiter first;
// a 429 penalizes the Limiter and is returned to the caller, who decides
// whether to try again (the next attempt will wait out the penalty).
func (c *Client) ExecuteCommand(ctx context.Context, deviceName, command string, params any) (json.RawMessage, error) {
	return c.execute(ctx, shortCommand(command), deviceName, command, params)
}

func (c *Client) execute(ctx context.Context, op, deviceName, command string, params any, secrets ...string) (json.RawMessage, error) {
	raw, _, err := c.executeDated(ctx, op, deviceName, command, params, secrets...)
	return raw, err
}

func (c *Client) executeDated(ctx context.Context, op, deviceName, command string, params any, secrets ...string) (json.RawMessage, answer, error) {
	name, err := c.deviceName(deviceName)
	if err != nil {
		return nil, answer{}, fmt.Errorf("nest: %s: %w", op, err)
	}
	if params == nil {
		params = struct{}{}
	}
	body, err := json.Marshal(struct {
		Command string `json:"command"`
		Params  any    `json:"params"`
	}{command, params})
	if err != nil {
		return nil, answer{}, fmt.Errorf("nest: %s: encode params: %w", op, err)
	}
	// One wait per logical command: the retry after a 401 is not charged
	// again, since Google rejects it before it reaches the device.
	if err := c.limiter.Wait(ctx, name, command); err != nil {
		return nil, answer{}, err
	}
	var resp struct {
		Results json.RawMessage `json:"results"`
	}
	ans, err := c.doDated(ctx, op, http.MethodPost, name+":executeCommand", body, &resp, secrets...)
	if c.onCommand != nil {
		c.onCommand(shortCommand(command), err)
	}
	if err != nil {
		if IsRateLimited(err) {
			c.limiter.Penalize(c.limiter.Limits().Window)
		}
		return nil, ans, err
	}
	return resp.Results, ans, nil
}

type rtspResults struct {
	StreamURLs *struct {
		RTSPURL string `json:"rtspUrl"`
	} `json:"streamUrls"`
	StreamExtensionToken string `json:"streamExtensionToken"`
	StreamToken          string `json:"streamToken"`
	ExpiresAt            string `json:"expiresAt"`
}

// maxPlausibleLifetime bounds a lifetime computed from Google's clock: a
// Date header that far from expiresAt is broken, not a long session.
const maxPlausibleLifetime = time.Hour

// streamTiming is the expiry part of a session, the same for RTSP and WebRTC
// streams; see RTSPStream for what each field means.
type streamTiming struct {
	ExpiresAt  time.Time
	Lifetime   time.Duration
	ReceivedAt time.Time
	ClockSkew  time.Duration
}

func (s *RTSPStream) setTiming(t streamTiming) {
	s.ExpiresAt, s.Lifetime, s.ReceivedAt, s.ClockSkew = t.ExpiresAt, t.Lifetime, t.ReceivedAt, t.ClockSkew
}

// timing computes a session's expiry fields from an answer. The lifetime
// comes from Google's clock alone (expiresAt minus its Date header), and the
// local expiry is that lifetime after the answer arrived, on the monotonic clock:
// a host clock minutes off (no NTP at boot, drift) then neither extends too
// late nor regenerates healthy sessions. Without a usable Date header the
// lifetime falls back to expiresAt against the local clock.
func (c *Client) timing(expiresAt string, ans answer) (s streamTiming) {
	received := ans.received
	if received.IsZero() {
		received = time.Now()
	}
	t, err := time.Parse(time.RFC3339Nano, expiresAt)
	if err != nil {
		s.ExpiresAt = c.now().Add(defaultStreamLifetime)
		s.Lifetime, s.ReceivedAt, s.ClockSkew = defaultStreamLifetime, received, 0
		return s
	}
	s.ExpiresAt = t
	s.ReceivedAt = received
	s.ClockSkew = 0
	local := t.Sub(c.now())
	if !ans.googleDate.IsZero() {
		// Date has whole seconds, so Google's clock read somewhere in
		// [Date, Date+1s): the lifetime lies in (upper-1s, upper]. Within
		// that second the local clock is the finer reading when it agrees
		// with Google's; otherwise the short end is the safe one (a second
		// early costs nothing, a second late loses the session).
		if upper := t.Sub(ans.googleDate); upper > 0 && upper <= maxPlausibleLifetime {
			lower := max(upper-time.Second, 0)
			s.Lifetime = lower
			if local >= lower && local <= upper {
				s.Lifetime = local
			}
			// Only a skew well above the header's resolution is real.
			s.ClockSkew = c.now().Sub(ans.googleDate).Truncate(time.Second)
			return s
		}
	}
	s.Lifetime = max(local, 0)
	return s
}

// GenerateRtspStream starts a session. Each generated URL admits one RTSP
// client, so callers should fan a single upstream out rather than generate
// per viewer.
func (c *Client) GenerateRtspStream(ctx context.Context, deviceName string) (RTSPStream, error) {
	const op = "GenerateRtspStream"
	raw, ans, err := c.executeDated(ctx, op, deviceName, CmdGenerateRtspStream, nil)
	if err != nil {
		return RTSPStream{}, err
	}
	var r rtspResults
	if err := json.Unmarshal(raw, &r); err != nil {
		return RTSPStream{}, fmt.Errorf("nest: %s: decode results: %w", op, err)
	}
	if r.StreamURLs == nil || r.StreamURLs.RTSPURL == "" {
		return RTSPStream{}, fmt.Errorf("nest: %s: response has no rtspUrl", op)
	}
	name, _ := c.deviceName(deviceName)
	s := RTSPStream{
		DeviceName:     name,
		URL:            r.StreamURLs.RTSPURL,
		StreamToken:    r.StreamToken,
		ExtensionToken: r.StreamExtensionToken,
	}
	s.setTiming(c.timing(r.ExpiresAt, ans))
	return s, nil
}

// ExtendRtspStream extends s with its (newest) extension token and returns
// s carrying the new tokens, expiry and a URL rebuilt with the new stream
// token. A session-lost answer (IsSessionLost) means: stop, regenerate.
func (c *Client) ExtendRtspStream(ctx context.Context, s RTSPStream) (RTSPStream, error) {
	const op = "ExtendRtspStream"
	if s.ExtensionToken == "" {
		return s, fmt.Errorf("nest: %s: stream has no extension token", op)
	}
	raw, ans, err := c.executeDated(ctx, op, s.DeviceName, CmdExtendRtspStream,
		map[string]string{"streamExtensionToken": s.ExtensionToken},
		s.ExtensionToken, s.StreamToken)
	if err != nil {
		return s, err
	}
	var r rtspResults
	if err := json.Unmarshal(raw, &r); err != nil {
		return s, fmt.Errorf("nest: %s: decode results: %w", op, err)
	}
	if r.StreamExtensionToken == "" || r.StreamToken == "" {
		return s, fmt.Errorf("nest: %s: response lacks streamExtensionToken or streamToken", op)
	}
	s.ExtensionToken = r.StreamExtensionToken
	s.StreamToken = r.StreamToken
	s.setTiming(c.timing(r.ExpiresAt, ans))
	s.URL = withStreamToken(s.URL, r.StreamToken)
	return s, nil
}

// StopRtspStream ends the session; Google answers {}.
func (c *Client) StopRtspStream(ctx context.Context, s RTSPStream) error {
	const op = "StopRtspStream"
	if s.ExtensionToken == "" {
		return fmt.Errorf("nest: %s: stream has no extension token", op)
	}
	_, err := c.execute(ctx, op, s.DeviceName, CmdStopRtspStream,
		map[string]string{"streamExtensionToken": s.ExtensionToken},
		s.ExtensionToken, s.StreamToken)
	return err
}

// deviceName normalises and validates a device name so it can be used as a
// request path verbatim.
func (c *Client) deviceName(n string) (string, error) {
	if n != "" && !strings.Contains(n, "/") {
		n = "enterprises/" + c.project + "/devices/" + n
	}
	parts := strings.Split(n, "/")
	ok := len(parts) == 4 && parts[0] == "enterprises" && parts[2] == "devices"
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsAny(p, "?#:% \t\r\n") {
			ok = false
		}
	}
	if !ok {
		return "", fmt.Errorf("%w %q", ErrInvalidDeviceName, n)
	}
	return n, nil
}

func shortCommand(cmd string) string {
	if i := strings.LastIndexByte(cmd, '.'); i >= 0 {
		return cmd[i+1:]
	}
	return cmd
}

// do sends one SDM request, retrying once with a fresh token after a 401.
// secrets are values in the request that Google might echo in an error.
func (c *Client) do(ctx context.Context, op, method, path string, body []byte, out any, secrets ...string) error {
	_, err := c.doDated(ctx, op, method, path, body, out, secrets...)
	return err
}

// answer is what an SDM reply says besides its body: when it arrived here
// (with Go's monotonic reading) and Google's clock at that moment (its Date
// header; zero when absent or unparsable).
type answer struct {
	received   time.Time
	googleDate time.Time
}

// doDated is do, also returning when the answer came and Google's Date.
func (c *Client) doDated(ctx context.Context, op, method, path string, body []byte, out any, secrets ...string) (answer, error) {
	var ans answer
	err := c.doInto(ctx, op, method, path, body, out, &ans, secrets...)
	return ans, err
}

func (c *Client) doInto(ctx context.Context, op, method, path string, body []byte, out any, ans *answer, secrets ...string) error {
	for attempt := 0; ; attempt++ {
		tok, err := c.tokens.AccessToken(ctx)
		if err != nil {
			return fmt.Errorf("nest: %s: access token: %w", op, err)
		}
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base+"/"+path, rd)
		if err != nil {
			return fmt.Errorf("nest: %s: %w", op, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			// *url.Error names method and URL only; neither holds a secret.
			return fmt.Errorf("nest: %s: %w", op, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBytes))
			resp.Body.Close()
			c.tokens.Invalidate()
			continue
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			data, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
			resp.Body.Close()
			ae := newAPIError(op, resp.StatusCode, data, append(secrets[:len(secrets):len(secrets)], tok)...)
			if rerr != nil && len(data) == 0 {
				ae.Message = http.StatusText(resp.StatusCode)
			}
			return ae
		}
		ans.received = time.Now()
		if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			ans.googleDate = d
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("nest: %s: read response: %w", op, err)
		}
		if out == nil || len(bytes.TrimSpace(data)) == 0 {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			// json errors name types and offsets, never the offending
			// value, so the stream tokens in the body stay out of logs.
			return fmt.Errorf("nest: %s: decode response: %w", op, err)
		}
		return nil
	}
}
