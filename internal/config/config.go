// Package config assembles nestmtx's runtime configuration from command-line
// flags, environment variables, an optional YAML file and built-in defaults,
// in that order of precedence.
//
// Every key is described exactly once, in the settings table below. Flags,
// environment lookups, YAML keys, validation and the README table are all
// derived from it, so a new key cannot be documented in one place and
// forgotten in another.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Config is the merged, validated configuration.
type Config struct {
	DataDir     string
	HTTPAddress string
	// HTTPPprof serves Go's profiler under /debug/pprof/ on the HTTP
	// address, for benchmarks and for diagnosing a live daemon.
	HTTPPprof          bool
	RTSPAddress        string
	RTSPAnonymous      bool
	RTSPMaxConnections int

	// MQTTURL is empty when nestmtx should run its embedded broker.
	MQTTURL       string
	MQTTListen    string
	MQTTAnonymous bool
	MQTTUsername  string
	// MQTTPassword holds the content of MQTTPasswordFile after Load when
	// the file was given.
	MQTTPassword     string
	MQTTPasswordFile string
	MQTTBaseTopic    string
	// MQTTClientID is empty when the caller should generate one; the
	// generated form needs the hostname and pid, which are not config.
	MQTTClientID        string
	MQTTKeepAlive       time.Duration
	MQTTCAFile          string
	MQTTCertFile        string
	MQTTKeyFile         string
	MQTTMaxRequestBytes int
	// MQTTSessionExpiry is the session the daemon's client asks an external
	// broker to keep while it is away, so requests sent meanwhile wait.
	MQTTSessionExpiry time.Duration
	// MQTTRequestMaxAge: older requests are refused, not executed late.
	MQTTRequestMaxAge time.Duration
	// MQTTEventBuffer bounds the events kept while the broker is away.
	MQTTEventBuffer int

	// Limits of the embedded broker.
	MQTTMaxClients        int
	MQTTMaxSessionExpiry  time.Duration
	MQTTMaxQueuedMessages int

	// AdminPassword holds the content of AdminPasswordFile after Load when
	// the file was given.
	AdminPassword          string
	AdminPasswordFile      string
	TokenTTL               time.Duration
	LoginAttemptsPerMinute int

	LogLevel  string
	LogFormat string

	// ShutdownTimeout bounds a stop (SIGTERM): final events, Google
	// sessions stopped, offline published.
	ShutdownTimeout time.Duration

	OnDemandStartTimeout time.Duration
	OnDemandCloseAfter   time.Duration

	// StallTimeout is how long an upstream may send no media before its
	// session is regenerated.
	StallTimeout time.Duration

	// RTSPUDPAddress enables RTSP over UDP (RTP port; RTCP is the next one).
	RTSPUDPAddress string

	// Google's endpoints; the defaults are Google's own. Tests and the demo
	// point them at the simulator.
	GoogleAuthURL  string
	GoogleTokenURL string
	GoogleSDMURL   string
	// GoogleCAFile is an extra CA trusted for the cameras' RTSPS streams.
	GoogleCAFile string

	// Demo runs the simulated Google in the process with demo cameras.
	Demo          bool
	DemoStreamTTL time.Duration
	DemoFaults    string

	// ConfigFile is the YAML file the values were read from, "" if none.
	ConfigFile string
}

// Setting documents one configuration key.
type Setting struct {
	// YAMLKey is "" for a key that cannot be set from the file itself
	// (only the location of the file).
	YAMLKey string
	// Env lists the environment variables, canonical name first; later
	// names are aliases that other MQTT tooling already uses.
	Env []string
	// Flag is the flag name without leading dashes.
	Flag        string
	Default     string
	Description string
	Secret      bool
	// isBool makes the flag usable bare (--demo as well as --demo=true).
	isBool bool

	// apply parses raw, validates it and stores it into c. It must not
	// touch c when it fails, so a failed Load never half-applies a value.
	apply func(c *Config, raw string) error
	// check validates the value already held in c, for Validate on a
	// Config that did not come from Load.
	check func(c *Config) error
	// str exposes string fields so Redacted can blank secrets generically.
	str func(c *Config) *string
	// fileOf is the YAML key of the secret whose value this setting's file
	// holds, for the *_file settings; "" otherwise.
	fileOf string
}

const redactedValue = "***"

// settings is the single source of truth. Order matters only for
// documentation and for which error is reported first.
var settings = []Setting{
	stringSetting("config", "", "YAML file to read settings from. A missing file is an error.",
		func(c *Config) *string { return &c.ConfigFile }, nil).notInFile(),
	stringSetting("data_dir", "./data", "Directory for persistent state.",
		func(c *Config) *string { return &c.DataDir }, nonEmpty),
	stringSetting("http_address", ":2000", "Listen address (host:port) of the HTTP server.",
		func(c *Config) *string { return &c.HTTPAddress }, listenAddress),
	boolSetting("http_pprof", "false", "Serve Go's profiler at /debug/pprof/ on the HTTP address (unauthenticated: keep the address private).",
		func(c *Config) *bool { return &c.HTTPPprof }),
	stringSetting("rtsp_address", ":8554", "Listen address (host:port) of the RTSP server that serves the camera streams.",
		func(c *Config) *string { return &c.RTSPAddress }, listenAddress),
	boolSetting("rtsp_anonymous", "false", "Let anyone on the network play every camera without a login (Basic or Digest against the nestmtx accounts otherwise).",
		func(c *Config) *bool { return &c.RTSPAnonymous }),
	intSetting("rtsp_max_connections", "512", "Most RTSP connections at once; more are closed at once with a log line (at least 1).",
		func(c *Config) *int { return &c.RTSPMaxConnections }, 1, math.MaxInt),
	stringSetting("mqtt_url", "", "External MQTT v5 broker, e.g. mqtts://broker:8883 (schemes mqtt, mqtts, tcp, ssl, ws, wss). Empty runs the embedded broker.",
		func(c *Config) *string { return &c.MQTTURL }, brokerURL),
	stringSetting("mqtt_listen", ":1883", "Listen address (host:port) of the embedded MQTT broker; unused with mqtt_url.",
		func(c *Config) *string { return &c.MQTTListen }, listenAddress),
	boolSetting("mqtt_anonymous", "false", "Let clients connect to the embedded broker without a login. They may only read B/status, B/events/#, B/stream/# and B/state/# (which show camera paths); off by default.",
		func(c *Config) *bool { return &c.MQTTAnonymous }),
	stringSetting("mqtt_username", "", "MQTT username; requires mqtt_password or mqtt_password_file.",
		func(c *Config) *string { return &c.MQTTUsername }, mqttString).alias("MQTT_USER"),
	stringSetting("mqtt_password", "", "MQTT password; requires mqtt_username.",
		func(c *Config) *string { return &c.MQTTPassword }, nil).alias("MQTT_PASS").secret(),
	stringSetting("mqtt_password_file", "", "File whose content is the MQTT password, as systemd's LoadCredential= or a Docker secret provides it; a trailing newline is removed. Not together with mqtt_password.",
		func(c *Config) *string { return &c.MQTTPasswordFile }, nil).passwordFileOf("mqtt_password"),
	stringSetting("mqtt_base_topic", "nestmtx", "Prefix of every MQTT topic nestmtx publishes or subscribes to. No leading or trailing '/', no wildcards.",
		func(c *Config) *string { return &c.MQTTBaseTopic }, baseTopic).alias("MQTT_BASE_TOPIC"),
	stringSetting("mqtt_client_id", "", "MQTT client identifier. Empty generates nestmtx-<hostname>-<pid>.",
		func(c *Config) *string { return &c.MQTTClientID }, mqttString),
	durationSetting("mqtt_keepalive", "30s", "MQTT keep-alive interval, whole seconds from 5s to 65535s.",
		func(c *Config) *time.Duration { return &c.MQTTKeepAlive }, 5*time.Second, 65535*time.Second, true),
	stringSetting("mqtt_ca_file", "", "PEM file with CA certificates to verify the broker; empty uses the system pool.",
		func(c *Config) *string { return &c.MQTTCAFile }, nil),
	stringSetting("mqtt_cert_file", "", "PEM client certificate for mutual TLS; requires mqtt_key_file.",
		func(c *Config) *string { return &c.MQTTCertFile }, nil),
	stringSetting("mqtt_key_file", "", "PEM private key for mqtt_cert_file.",
		func(c *Config) *string { return &c.MQTTKeyFile }, nil),
	intSetting("mqtt_max_request_bytes", "65536", "Largest API request payload accepted over MQTT, in bytes (at least 1024).",
		func(c *Config) *int { return &c.MQTTMaxRequestBytes }, 1024, maxMQTTPacket),
	durationSetting("mqtt_session_expiry", "1h", "Session Expiry Interval the daemon asks an external broker for: while the daemon is away (a restart, a broker outage) the broker keeps its subscription and queues the QoS 1 requests for it. 0 asks for no session (each connection starts clean); whole seconds, at most 24h. The embedded broker needs none.",
		func(c *Config) *time.Duration { return &c.MQTTSessionExpiry }, 0, 24*time.Hour, true),
	durationSetting("mqtt_request_max_age", "5m", "A request older than this when the daemon receives it (kept by the broker while the daemon was away) is answered with an error (BAD_REQUEST, \"request expired\") instead of being executed late; a request's own Message Expiry Interval is honoured too (at least 1s).",
		func(c *Config) *time.Duration { return &c.MQTTRequestMaxAge }, time.Second, math.MaxInt64, false),
	intSetting("mqtt_event_buffer", "1024", "Events kept in order while the broker is away and published when it returns; beyond this the oldest are dropped, counted and logged (at least 16).",
		func(c *Config) *int { return &c.MQTTEventBuffer }, 16, 1<<20),
	intSetting("mqtt_max_clients", "256", "Most clients the embedded broker holds at once (the daemon's own included); more are refused (at least 2).",
		func(c *Config) *int { return &c.MQTTMaxClients }, 2, math.MaxInt),
	durationSetting("mqtt_max_session_expiry", "1h", "Longest session expiry the embedded broker grants; a client asking for more gets this. 0 keeps no session after a disconnect; whole seconds, at most 24h.",
		func(c *Config) *time.Duration { return &c.MQTTMaxSessionExpiry }, 0, 24*time.Hour, true),
	intSetting("mqtt_max_queued_messages", "256", "QoS 1 and 2 messages the embedded broker keeps for one client (in flight, or while a persistent session is offline); older ones are dropped (16 to 65535).",
		func(c *Config) *int { return &c.MQTTMaxQueuedMessages }, 16, 65535),
	stringSetting("admin_password", "", "Password of the user admin, set only on the first start (an empty store). Empty generates a random one, logged once and written to <data_dir>/initial-admin-password (mode 0600).",
		func(c *Config) *string { return &c.AdminPassword }, nil).secret(),
	stringSetting("admin_password_file", "", "File whose content is admin_password, as systemd's LoadCredential= or a Docker secret provides it; a trailing newline is removed. Not together with admin_password.",
		func(c *Config) *string { return &c.AdminPasswordFile }, nil).passwordFileOf("admin_password"),
	durationSetting("token_ttl", "24h", "Lifetime of API session tokens (at least 1m).",
		func(c *Config) *time.Duration { return &c.TokenTTL }, time.Minute, math.MaxInt64, false),
	intSetting("login_attempts_per_minute", "5", "Failed logins allowed per username and client address per minute (API, MQTT and RTSP together); then that pair is refused (TOO_MANY_REQUESTS) until the minute has passed, while the same username from other addresses still logs in.",
		func(c *Config) *int { return &c.LoginAttemptsPerMinute }, 1, math.MaxInt),
	enumSetting("log_level", "info", "Log verbosity: debug, info, warn or error.",
		func(c *Config) *string { return &c.LogLevel }, "debug", "info", "warn", "error"),
	enumSetting("log_format", "text", "Log output format: text or json.",
		func(c *Config) *string { return &c.LogFormat }, "text", "json"),
	durationSetting("shutdown_timeout", "8s", "How long a stop (SIGTERM) may take: readers get unread, cameras unDemand and notReady, live Google sessions are stopped, the retained state says stopped and the status offline. Keep it below the service manager's stop timeout (TimeoutStopSec=10s in the shipped unit); at least 1s.",
		func(c *Config) *time.Duration { return &c.ShutdownTimeout }, time.Second, 10*time.Minute, false),
	durationSetting("on_demand_start_timeout", "20s", "How long an RTSP client waits for a camera stream to start (at least 1s).",
		func(c *Config) *time.Duration { return &c.OnDemandStartTimeout }, time.Second, math.MaxInt64, false),
	durationSetting("on_demand_close_after", "30s", "How long a camera stream stays open after its last RTSP reader leaves (0 closes at once).",
		func(c *Config) *time.Duration { return &c.OnDemandCloseAfter }, 0, math.MaxInt64, false),
	durationSetting("stall_timeout", "5s", "How long a camera's Google stream may send no media before it is regenerated (at least 1s).",
		func(c *Config) *time.Duration { return &c.StallTimeout }, time.Second, math.MaxInt64, false),
	stringSetting("rtsp_udp_address", ":8000", "Address (host:port, even port) for RTSP over UDP: RTP on that port, RTCP on the next. Empty serves RTSP over TCP only.",
		func(c *Config) *string { return &c.RTSPUDPAddress }, udpAddress),
	stringSetting("google_auth_url", "https://nestservices.google.com/partnerconnections/{project_id}/auth", "Google's Partner Connections authorization page; {project_id} is replaced by the credential's Device Access project.",
		func(c *Config) *string { return &c.GoogleAuthURL }, httpURL),
	stringSetting("google_token_url", "https://www.googleapis.com/oauth2/v4/token", "Google's OAuth token endpoint.",
		func(c *Config) *string { return &c.GoogleTokenURL }, httpURL),
	stringSetting("google_sdm_url", "https://smartdevicemanagement.googleapis.com/v1", "Google's Smart Device Management API.",
		func(c *Config) *string { return &c.GoogleSDMURL }, httpURL),
	stringSetting("google_ca_file", "", "PEM file with an extra CA to trust for the cameras' RTSPS streams (the simulator's); empty trusts the system CAs only.",
		func(c *Config) *string { return &c.GoogleCAFile }, nil),
	boolSetting("demo", "false", "Run a simulated Google in the process with an authenticated Demo credential and cameras at front-door and backyard.",
		func(c *Config) *bool { return &c.Demo }),
	durationSetting("demo_stream_ttl", "5m", "Lifetime of the demo's simulated Google stream sessions (at least 1s).",
		func(c *Config) *time.Duration { return &c.DemoStreamTTL }, time.Second, math.MaxInt64, false),
	stringSetting("demo_faults", "", "Faults the demo's simulated Google injects, a comma list: extend_fail, drop=<duration>, rate_limit.",
		func(c *Config) *string { return &c.DemoFaults }, nil),
}

// boolFlag keeps a boolean flag's raw text for the common parsing, while
// telling the flag package that the flag may stand alone.
type boolFlag struct{ v *string }

func (b boolFlag) String() string {
	if b.v == nil {
		return ""
	}
	return *b.v
}
func (b boolFlag) Set(s string) error { *b.v = s; return nil }
func (b boolFlag) IsBoolFlag() bool   { return true }

func boolSetting(key, def, desc string, field func(*Config) *bool) Setting {
	s := newSetting(key, def, desc)
	s.isBool = true
	s.apply = func(c *Config, raw string) error {
		b, err := strconv.ParseBool(strings.ToLower(raw))
		if err != nil {
			return fmt.Errorf("%q is not a boolean (true, false, 1 or 0)", raw)
		}
		*field(c) = b
		return nil
	}
	s.check = func(*Config) error { return nil }
	return s
}

// udpAddress is empty (no UDP) or host:port with the even RTP port that
// RTSP's UDP transport requires.
func udpAddress(v string) error {
	if v == "" {
		return nil
	}
	if err := listenAddress(v); err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(v)
	if n, _ := strconv.Atoi(port); n%2 != 0 || n == 0 {
		return fmt.Errorf("%q needs an even, non-zero port (RTCP uses the next one)", v)
	}
	return nil
}

func httpURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", v)
	}
	return nil
}

// maxMQTTPacket is the largest packet MQTT's variable byte integer can
// express; a request limit beyond it could never be reached.
const maxMQTTPacket = 268435455

func newSetting(key, def, desc string) Setting {
	return Setting{
		YAMLKey:     key,
		Env:         []string{"NESTMTX_" + strings.ToUpper(key)},
		Flag:        strings.ReplaceAll(key, "_", "-"),
		Default:     def,
		Description: desc,
	}
}

func (s Setting) alias(env string) Setting {
	s.Env = append(slices.Clip(s.Env), env)
	return s
}

func (s Setting) secret() Setting {
	s.Secret = true
	return s
}

// passwordFileOf marks a setting as naming a file that holds the secret
// setting secretKey, so a password need not sit in the environment or on
// the command line.
func (s Setting) passwordFileOf(secretKey string) Setting {
	s.fileOf = secretKey
	return s
}

func (s Setting) notInFile() Setting {
	s.YAMLKey = ""
	return s
}

// name is how documentation and Validate refer to a setting when no
// particular source is involved.
func (s Setting) name() string {
	if s.YAMLKey != "" {
		return s.YAMLKey
	}
	return "--" + s.Flag
}

func stringSetting(key, def, desc string, field func(*Config) *string, valid func(string) error) Setting {
	if valid == nil {
		valid = func(string) error { return nil }
	}
	s := newSetting(key, def, desc)
	s.apply = func(c *Config, raw string) error {
		if err := valid(raw); err != nil {
			return err
		}
		*field(c) = raw
		return nil
	}
	s.check = func(c *Config) error { return valid(*field(c)) }
	s.str = field
	return s
}

// enumSetting accepts any case because env files and YAML written by hand
// often say INFO, but stores lower case so callers compare exactly.
func enumSetting(key, def, desc string, field func(*Config) *string, options ...string) Setting {
	valid := func(v string) error {
		if !slices.Contains(options, v) {
			return fmt.Errorf("%q is not one of %s", v, strings.Join(options, ", "))
		}
		return nil
	}
	s := newSetting(key, def, desc)
	s.apply = func(c *Config, raw string) error {
		if err := valid(strings.ToLower(raw)); err != nil {
			return valid(raw) // report what the user wrote, not our lowering
		}
		*field(c) = strings.ToLower(raw)
		return nil
	}
	s.check = func(c *Config) error { return valid(*field(c)) }
	s.str = field
	return s
}

func durationSetting(key, def, desc string, field func(*Config) *time.Duration, lo, hi time.Duration, wholeSeconds bool) Setting {
	valid := func(d time.Duration) error {
		switch {
		case d < lo:
			return fmt.Errorf("%s is less than the minimum %s", d, lo)
		case d > hi:
			return fmt.Errorf("%s is more than the maximum %s", d, hi)
		case wholeSeconds && d%time.Second != 0:
			// The protocol field counts seconds; silently truncating
			// would make the effective value differ from the configured one.
			return fmt.Errorf("%s is not a whole number of seconds", d)
		}
		return nil
	}
	s := newSetting(key, def, desc)
	s.apply = func(c *Config, raw string) error {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration (use Go syntax such as 30s, 5m or 1h30m)", raw)
		}
		if err := valid(d); err != nil {
			return err
		}
		*field(c) = d
		return nil
	}
	s.check = func(c *Config) error { return valid(*field(c)) }
	return s
}

func intSetting(key, def, desc string, field func(*Config) *int, lo, hi int) Setting {
	valid := func(n int) error {
		switch {
		case n < lo:
			return fmt.Errorf("%d is less than the minimum %d", n, lo)
		case n > hi:
			return fmt.Errorf("%d is more than the maximum %d", n, hi)
		}
		return nil
	}
	s := newSetting(key, def, desc)
	s.apply = func(c *Config, raw string) error {
		n, err := strconv.ParseInt(raw, 10, 0)
		if err != nil {
			return fmt.Errorf("%q is not a decimal integer", raw)
		}
		if err := valid(int(n)); err != nil {
			return err
		}
		*field(c) = int(n)
		return nil
	}
	s.check = func(c *Config) error { return valid(*field(c)) }
	return s
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// listenAddress insists on a numeric port because a typo such as ":800o"
// would otherwise only surface as a bind error deep inside a server.
func listenAddress(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is not host:port (for example :8080 or 127.0.0.1:8080)", v)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q does not end in a port number between 0 and 65535", v)
	}
	return nil
}

var brokerSchemes = []string{"mqtt", "mqtts", "tcp", "ssl", "ws", "wss"}

// brokerURL never echoes the URL back: it may carry a password in its
// userinfo, and these errors end up in logs.
func brokerURL(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("not a valid URL: %v", err)
	}
	if !slices.Contains(brokerSchemes, u.Scheme) {
		return fmt.Errorf("scheme %q is not one of %s (for example mqtt://broker:1883)", u.Scheme, strings.Join(brokerSchemes, ", "))
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("URL has no host (for example mqtt://broker:1883)")
	}
	return nil
}

// mqttString enforces the MQTT rule for UTF-8 strings on the wire, so a bad
// value fails here instead of as an opaque CONNECT rejection.
func mqttString(v string) error {
	switch {
	case !utf8.ValidString(v):
		return errors.New("is not valid UTF-8")
	case strings.ContainsRune(v, 0):
		return errors.New("must not contain NUL")
	case len(v) > 65535:
		return errors.New("is longer than 65535 bytes")
	}
	return nil
}

func baseTopic(v string) error {
	if err := mqttString(v); err != nil {
		return err
	}
	switch {
	case v == "":
		return errors.New("must not be empty")
	case strings.HasPrefix(v, "/") || strings.HasSuffix(v, "/"):
		return fmt.Errorf("%q must not start or end with /", v)
	case strings.ContainsAny(v, "+#"):
		return fmt.Errorf("%q must not contain the wildcards + or #", v)
	case strings.HasPrefix(v, "$"):
		// Brokers reserve $-topics (e.g. $SYS) and wildcard
		// subscriptions do not match them.
		return fmt.Errorf("%q must not start with $", v)
	}
	return nil
}

var defaults = func() Config {
	var c Config
	for _, s := range settings {
		if err := s.apply(&c, s.Default); err != nil {
			panic(fmt.Sprintf("config: default of %s: %v", s.name(), err))
		}
	}
	return c
}()

// Defaults returns the configuration used when nothing is set. It is built
// from the documented default strings so the docs cannot drift from it.
func Defaults() Config { return defaults }

// Settings lists every key, in documentation order.
func Settings() []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		s.Env = slices.Clone(s.Env)
		out[i] = s
	}
	return out
}

// Validate reports the first invalid value in c. Load only returns configs
// that pass; it exists for configs built or modified in code.
func (c Config) Validate() error {
	for _, s := range settings {
		if err := s.check(&c); err != nil {
			return fmt.Errorf("config: %s: %w", s.name(), err)
		}
	}
	return crossCheck(&c, func(i int) string { return settings[i].name() })
}

// Redacted returns a copy that is safe to log. A password embedded in
// MQTTURL is masked too, since that is the usual way to give one to
// MQTT clients.
func (c Config) Redacted() Config {
	for _, s := range settings {
		if s.Secret && *s.str(&c) != "" {
			*s.str(&c) = redactedValue
		}
	}
	if u, err := url.Parse(c.MQTTURL); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			// url.URL would percent-encode "***", so splice the
			// marker in after the (escaped, '@'-free) username.
			u.User = url.User(u.User.Username())
			s := u.String()
			at := strings.Index(s, "@")
			c.MQTTURL = s[:at] + ":" + redactedValue + s[at:]
		}
	}
	return c
}

// Load builds the configuration from args (without the program name or
// subcommand), an environment lookup such as os.LookupEnv and the YAML file
// named by --config or NESTMTX_CONFIG, and reads the password files it
// names. Usage is written to usage on -h or a flag error, and so are
// warnings (one line each, such as a password given as a flag); -h returns
// flag.ErrHelp.
func Load(args []string, lookupEnv func(string) (string, bool), usage io.Writer) (Config, error) {
	return load(args, lookupEnv, usage, true)
}

// LoadOffline is Load for the commands that work offline on the data
// directory (nestmtx admin): every value is parsed and validated on its own,
// but the checks across keys and the reading of password files are skipped,
// because they concern only the daemon and must not stop an operator
// repairing its data (a password file only the service user can read, say).
// AdminPassword and MQTTPassword are therefore not filled from their files.
func LoadOffline(args []string, lookupEnv func(string) (string, bool), usage io.Writer) (Config, error) {
	return load(args, lookupEnv, usage, false)
}

func load(args []string, lookupEnv func(string) (string, bool), usage io.Writer, forDaemon bool) (Config, error) {
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	if usage == nil {
		usage = io.Discard
	}

	fset := flag.NewFlagSet("nestmtx", flag.ContinueOnError)
	fset.SetOutput(usage)
	flagVals := make([]*string, len(settings))
	for i, s := range settings {
		if s.isBool {
			v := s.Default
			flagVals[i] = &v
			fset.Var(boolFlag{&v}, s.Flag, flagUsage(s))
			continue
		}
		flagVals[i] = fset.String(s.Flag, s.Default, flagUsage(s))
	}
	fset.Usage = func() {
		fmt.Fprintf(usage, "Usage: nestmtx [flags]\n\n"+
			"Flags override environment variables, which override the YAML file given by\n"+
			"--config, which overrides the defaults.\n\n")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, flag.ErrHelp
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if fset.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %q", fset.Arg(0))
	}
	flagSet := make([]bool, len(settings))
	fset.Visit(func(f *flag.Flag) {
		for i, s := range settings {
			if s.Flag == f.Name {
				flagSet[i] = true
			}
		}
	})
	for i, s := range settings {
		if s.Secret && flagSet[i] && *flagVals[i] != "" {
			instead := "the environment"
			if f := passwordFileIndex(s.YAMLKey); f >= 0 {
				instead = settings[f].Env[0] + " (or the environment)"
			}
			fmt.Fprintf(usage, "nestmtx: warning: --%s is visible to every user of this machine in ps; use %s instead\n", s.Flag, instead)
		}
	}

	// fromEnv treats an empty variable as unset: compose files and
	// systemd units commonly declare variables they leave blank.
	fromEnv := func(s Setting) (raw, origin string, ok bool) {
		for _, name := range s.Env {
			if v, found := lookupEnv(name); found && v != "" {
				return v, name, true
			}
		}
		return "", "", false
	}

	c := Defaults()
	origins := make([]string, len(settings))

	// The file location must be known before anything else is applied,
	// and follows the same flag-over-env rule; an explicit --config=""
	// therefore disables a file named in the environment.
	cfgIdx := slices.IndexFunc(settings, func(s Setting) bool { return s.Flag == "config" })
	path, pathOrigin := "", ""
	if flagSet[cfgIdx] {
		path, pathOrigin = *flagVals[cfgIdx], "--"+settings[cfgIdx].Flag
	} else if v, origin, ok := fromEnv(settings[cfgIdx]); ok {
		path, pathOrigin = v, origin
	}
	if path != "" {
		entries, err := readYAML(path, pathOrigin)
		if err != nil {
			return Config{}, err
		}
		for _, e := range entries {
			i := settingIndex(e.key)
			if err := settings[i].apply(&c, e.value); err != nil {
				return Config{}, fmt.Errorf("config: %s: %s: %w", path, e.key, err)
			}
			origins[i] = path + ": " + e.key
		}
	}

	for i, s := range settings {
		if raw, origin, ok := fromEnv(s); ok {
			if err := s.apply(&c, raw); err != nil {
				return Config{}, fmt.Errorf("config: %s: %w", origin, err)
			}
			origins[i] = origin
		}
	}
	for i, s := range settings {
		if flagSet[i] {
			origin := "--" + s.Flag
			if err := s.apply(&c, *flagVals[i]); err != nil {
				return Config{}, fmt.Errorf("config: %s: %w", origin, err)
			}
			origins[i] = origin
		}
	}

	label := func(i int) string {
		if origins[i] != "" {
			return origins[i]
		}
		return settings[i].name()
	}
	if !forDaemon {
		return c, nil
	}
	if err := readPasswordFiles(&c, label); err != nil {
		return Config{}, err
	}
	if err := crossCheck(&c, label); err != nil {
		return Config{}, err
	}
	return c, nil
}

// passwordFileIndex finds the *_file setting of the secret secretKey, -1 if
// it has none.
func passwordFileIndex(secretKey string) int {
	return slices.IndexFunc(settings, func(s Setting) bool { return s.fileOf == secretKey })
}

// readPasswordFiles moves each named password file's content into its
// secret. It runs on values, not origins, so that an explicit empty value
// (--admin-password=) clears a password set elsewhere instead of clashing.
func readPasswordFiles(c *Config, label func(int) string) error {
	for i, s := range settings {
		if s.fileOf == "" || *s.str(c) == "" {
			continue
		}
		j := settingIndex(s.fileOf)
		secret := settings[j]
		if *secret.str(c) != "" {
			return fmt.Errorf("config: both %s (from %s) and %s (from %s) are set; give the password one way only",
				secret.YAMLKey, label(j), s.YAMLKey, label(i))
		}
		pw, err := ReadSecretFile(*s.str(c))
		if err != nil {
			return fmt.Errorf("config: %s: %w", label(i), err)
		}
		// Secrets' validators never echo the value, so err is safe to show.
		if err := secret.apply(c, pw); err != nil {
			return fmt.Errorf("config: %s: the content of %s: %w", label(i), *s.str(c), err)
		}
	}
	return nil
}

// maxSecretFile bounds what ReadSecretFile reads, so that naming a device or
// a log file by mistake fails at once instead of filling memory.
const maxSecretFile = 64 << 10

// ReadSecretFile returns the content of a file holding one secret, in the
// style of systemd's LoadCredential= and Docker secrets: one trailing "\n"
// or "\r\n" is removed (editors add it), any other whitespace is kept. Its
// errors name the file and never its content.
func ReadSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", pathError(path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", pathError(path, err)
	}
	if len(data) > maxSecretFile {
		return "", fmt.Errorf("%s is larger than %d KiB; is it the right file?", path, maxSecretFile>>10)
	}
	v := string(data)
	if strings.HasSuffix(v, "\r\n") {
		v = v[:len(v)-2]
	} else {
		v = strings.TrimSuffix(v, "\n")
	}
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}

// pathError names path once: os errors carry it already, behind an
// operation name ("open", "read") that tells a user nothing.
func pathError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s: %w", path, err)
}

func flagUsage(s Setting) string {
	u := s.Description + "\n[env " + strings.Join(s.Env, ", ")
	if s.YAMLKey != "" {
		u += "; yaml " + s.YAMLKey
	}
	return u + "]"
}

// settingIndex finds a setting by YAML key; "" never matches because the
// setting without a YAML key cannot be named in the file.
func settingIndex(key string) int {
	if key == "" {
		return -1
	}
	return slices.IndexFunc(settings, func(s Setting) bool { return s.YAMLKey == key })
}

// crossCheck validates combinations of keys. label names a setting by where
// its value came from, so the message points at what the user must edit.
func crossCheck(c *Config, label func(int) string) error {
	cert, key := settingIndex("mqtt_cert_file"), settingIndex("mqtt_key_file")
	if (c.MQTTCertFile == "") != (c.MQTTKeyFile == "") {
		set, missing := cert, key
		if c.MQTTCertFile == "" {
			set, missing = key, cert
		}
		return fmt.Errorf("config: %s is set but %s is not; set both or neither", label(set), describe(missing))
	}

	// A half-configured login would only fail later, at the broker, as a
	// refused CONNECT that does not say which setting is missing.
	user, pw, pwFile := settingIndex("mqtt_username"), settingIndex("mqtt_password"), settingIndex("mqtt_password_file")
	hasPassword := c.MQTTPassword != "" || c.MQTTPasswordFile != ""
	if (c.MQTTUsername != "") != hasPassword {
		if c.MQTTUsername != "" {
			return fmt.Errorf("config: %s is set but no MQTT password is; set %s or %s as well, or no username",
				label(user), describe(pw), describe(pwFile))
		}
		set := pw
		if c.MQTTPasswordFile != "" {
			set = pwFile
		}
		return fmt.Errorf("config: %s is set but %s is not; set both or neither", label(set), describe(user))
	}

	// Two of our own listeners on one port would fail at bind time with
	// an error that does not say which setting to change.
	type listener struct {
		idx  int
		addr string
	}
	ls := []listener{
		{settingIndex("http_address"), c.HTTPAddress},
		{settingIndex("rtsp_address"), c.RTSPAddress},
	}
	if c.MQTTURL == "" {
		ls = append(ls, listener{settingIndex("mqtt_listen"), c.MQTTListen})
	}
	for i := range ls {
		for j := i + 1; j < len(ls); j++ {
			if addressesClash(ls[i].addr, ls[j].addr) {
				return fmt.Errorf("config: %s and %s both listen on %q", label(ls[i].idx), label(ls[j].idx), ls[j].addr)
			}
		}
	}
	return nil
}

func describe(i int) string {
	s := settings[i]
	return fmt.Sprintf("%s (%s, --%s)", s.YAMLKey, strings.Join(s.Env, ", "), s.Flag)
}

// addressesClash is deliberately conservative: it only reports pairs that
// certainly collide, i.e. the same fixed port on the same or a wildcard host.
func addressesClash(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb || pa == "0" {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wildcard(ha) || wildcard(hb)
}

type yamlEntry struct {
	key, value string
}

func readYAML(path, origin string) ([]yamlEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", origin, pathError(path, err))
	}
	entries, err := parseYAML(data)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return entries, nil
}

// parseYAML walks the node tree rather than decoding into a struct or map so
// that it can reject unknown and duplicate keys, and keep scalars as written
// ("0123" stays 0123 instead of becoming 83 or 123).
func parseYAML(data []byte) ([]yamlEntry, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("line %d: only one YAML document is allowed", extra.Line)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	root := deref(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: expected a mapping of settings (key: value), got %s", root.Line, kindName(root))
	}

	var entries []yamlEntry
	seen := make(map[string]int)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := deref(root.Content[i]), deref(root.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: keys must be plain names, got %s", k.Line, kindName(k))
		}
		key := k.Value
		if settingIndex(key) < 0 {
			return nil, fmt.Errorf("line %d: unknown key %q%s", k.Line, key, suggest(key))
		}
		if line, dup := seen[key]; dup {
			return nil, fmt.Errorf("line %d: %s: already set on line %d", k.Line, key, line)
		}
		seen[key] = k.Line
		if v.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s: must be a string, number or boolean, got %s", key, kindName(v))
		}
		switch v.ShortTag() {
		case "!!null":
			// An empty value ("key:") is how templates leave a key
			// unset; treating it as "" would override defaults.
			continue
		case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
		default:
			return nil, fmt.Errorf("%s: must be a string, number or boolean, got tag %s", key, v.ShortTag())
		}
		entries = append(entries, yamlEntry{key: key, value: v.Value})
	}
	return entries, nil
}

// deref follows an alias to its anchor; an anchor cannot itself be an alias,
// so one step is enough.
func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	case yaml.AliasNode:
		return "an alias"
	}
	return "an empty document"
}

// suggest catches the common slip of writing a key in flag or env style.
func suggest(key string) string {
	norm := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	norm = strings.TrimPrefix(norm, "nestmtx_")
	if settingIndex(norm) >= 0 {
		return fmt.Sprintf(" (did you mean %q?)", norm)
	}
	return ""
}

// markdownEscaper keeps descriptions such as "nestmtx-<hostname>" from
// being swallowed as HTML tags or splitting a table cell.
var markdownEscaper = strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;")

// MarkdownTable renders Settings as a Markdown table for the README.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| YAML key | Environment | Flag | Default | Description |\n")
	b.WriteString("|---|---|---|---|---|\n")
	code := func(s string) string { return "`" + s + "`" }
	for _, s := range settings {
		yamlKey := "—"
		if s.YAMLKey != "" {
			yamlKey = code(s.YAMLKey)
		}
		envs := make([]string, len(s.Env))
		for i, e := range s.Env {
			envs[i] = code(e)
		}
		def := "—"
		if s.Default != "" {
			def = code(s.Default)
		}
		desc := s.Description
		if s.Secret {
			desc += " Secret: redacted in logs."
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n",
			yamlKey, strings.Join(envs, ", "), code("--"+s.Flag), def, markdownEscaper.Replace(desc))
	}
	return b.String()
}
