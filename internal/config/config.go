// Package config assembles nestmtx's runtime configuration from command-line
// flags, environment variables, an optional YAML file and built-in defaults,
// in that order of precedence.
//
// Every key is described exactly once, in the settings table (settings.go).
// Flags, environment lookups, YAML keys, validation and the README table are
// all derived from it, so a new key cannot be documented in one place and
// forgotten in another.
package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
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

	// MetricsToken is the bearer /metrics needs on the HTTP address.
	MetricsToken     string
	MetricsTokenFile string
	// MetricsAddress is a listener serving only /metrics; "" for none.
	MetricsAddress string
	// HADiscovery publishes Home Assistant MQTT discovery.
	HADiscovery bool
	// HADiscoveryPrefix is Home Assistant's discovery prefix.
	HADiscoveryPrefix string
	// LateJoin is how a reader joining a streaming camera starts (relay's
	// join modes: paced, replay, keyframe).
	LateJoin string
	// MQTTLogs is the lowest level published on B/logs/<level>, "off" for
	// none.
	MQTTLogs string
	// HTTPCORSOrigins lists (comma-separated) the browser origins allowed
	// to call the HTTP API; "" allows none.
	HTTPCORSOrigins string
	LogLevel        string
	LogFormat       string

	// ShutdownTimeout bounds a stop (SIGTERM): final events, Google
	// sessions stopped, offline published.
	ShutdownTimeout time.Duration

	OnDemandStartTimeout time.Duration
	OnDemandCloseAfter   time.Duration

	// StallTimeout is how long an upstream may send no media before its
	// session is regenerated.
	StallTimeout time.Duration

	// CameraAudio is the audio mode (one of AudioModes) of cameras whose
	// own setting is empty.
	CameraAudio string
	// FFmpegPath is the ffmpeg that transcodes Opus to AAC for cameras in
	// the aac mode: a name looked up on PATH, or a path.
	FFmpegPath string

	// RTSPUDPAddress enables RTSP over UDP (RTP port; RTCP is the next one).
	RTSPUDPAddress string

	// Hooks are the global hooks, MediaMTX's runOn* commands of every
	// camera (GlobalHooks); Paths overrides them per camera (HooksFor).
	Hooks Hooks
	// Paths is the paths: section, hooks per camera path.
	Paths Paths

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

const redactedValue = "***"

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
