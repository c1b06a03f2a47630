// The settings table: every key, described once.

package config

import (
	"math"
	"slices"
	"time"
)

// Setting documents one configuration key.
type Setting struct {
	// YAMLKey is "" for a key that cannot be set from the file itself
	// (only the location of the file).
	YAMLKey string
	// YAMLAliases are other names the file accepts for the key
	// (MediaMTX's camelCase names of the hooks).
	YAMLAliases []string
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
	// hook marks the global hooks, which the file's pathDefaults section
	// (MediaMTX's) may set too.
	hook bool
	// mapping: in the file the value is a YAML mapping (paths), handed to
	// apply as YAML text.
	mapping bool
}

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
	stringSetting("mqtt_client_id", "", "MQTT client identifier. Empty generates nestmtx-<hostname>-<base topic> for an external broker (stable across restarts, so that the broker keeps the daemon's session), and nestmtx-<hostname>-<pid> for the embedded one.",
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
	boolSetting("ha_discovery", "true", "Publish Home Assistant MQTT discovery (one device per camera) under ha_discovery_prefix, and take its switch and button commands.",
		func(c *Config) *bool { return &c.HADiscovery }),
	stringSetting("ha_discovery_prefix", "homeassistant", "Home Assistant's MQTT discovery prefix (its default is homeassistant).",
		func(c *Config) *string { return &c.HADiscoveryPrefix }, baseTopic),
	stringSetting("metrics_token", "", "Bearer token Prometheus must send to read /metrics on the HTTP address. Empty: /metrics there answers 401, and only metrics_address serves it.",
		func(c *Config) *string { return &c.MetricsToken }, nil).secret(),
	stringSetting("metrics_token_file", "", "File whose content is metrics_token (systemd's LoadCredential=, a Docker secret); a trailing newline is removed. Not together with metrics_token.",
		func(c *Config) *string { return &c.MetricsTokenFile }, nil).passwordFileOf("metrics_token"),
	stringSetting("metrics_address", "", "Listen address (host:port) of a listener that serves only /metrics, without a token unless metrics_token is set (bind it to 127.0.0.1 or a monitoring network). Empty: none.",
		func(c *Config) *string { return &c.MetricsAddress }, optionalListenAddress),
	enumSetting("late_join", "paced", "How a reader that joins a streaming camera starts: paced (the cached GOP's IDR at once, then the frames after it faster than real time until live: a picture at once and timestamps that suit Frigate's recorder), replay (the cached GOP at once), or keyframe (wait for the camera's next IDR).",
		func(c *Config) *string { return &c.LateJoin }, "paced", "replay", "keyframe"),
	enumSetting("mqtt_logs", "off", "Publish the daemon's log on MQTT at B/logs/<level> (QoS 0, not retained) from this level up: trace, debug, info, warn, error, fatal, or off. The embedded broker lets only admins read them.",
		func(c *Config) *string { return &c.MQTTLogs }, "off", "trace", "debug", "info", "warn", "error", "fatal"),
	stringSetting("http_cors_origins", "", "Comma-separated origins (scheme://host[:port]) whose web pages may call the HTTP API from a browser (CORS). Empty, the default, allows none.",
		func(c *Config) *string { return &c.HTTPCORSOrigins }, corsOrigins),
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
	enumSetting("camera_audio", AudioOpus, "Audio of cameras without their own audio setting: opus passes the camera's audio through as it comes (Opus from WebRTC cameras, AAC from RTSP cameras), aac transcodes WebRTC cameras' Opus to AAC with ffmpeg for recorders such as Frigate and Home Assistant that record AAC, none serves video only.",
		func(c *Config) *string { return &c.CameraAudio }, AudioModes()...),
	stringSetting("ffmpeg_path", "ffmpeg", "The ffmpeg binary used to transcode audio for cameras set to aac (a name looked up on PATH, or a path).",
		func(c *Config) *string { return &c.FFmpegPath }, nonEmpty),
	stringSetting("rtsp_udp_address", ":8000", "Address (host:port, even port) for RTSP over UDP: RTP on that port, RTCP on the next. Empty serves RTSP over TCP only.",
		func(c *Config) *string { return &c.RTSPUDPAddress }, udpAddress),
	hookSetting("run_on_demand", "Command run when a reader asks for a camera that is not streaming (MediaMTX's runOnDemand), with MTX_PATH, MTX_QUERY and RTSP_PORT in its environment; stopped (SIGINT to its process group, SIGKILL 5s later) at unDemand. Run without a shell; $MTX_PATH and the like are expanded in its arguments. paths can override it per camera; see docs/hooks.md.",
		func(c *Config) *string { return &c.Hooks.RunOnDemand }),
	hookRestartSetting("run_on_demand_restart", "Start run_on_demand again 5s after it exits while the camera is still demanded (MediaMTX's runOnDemandRestart).",
		func(c *Config) *bool { return &c.Hooks.RunOnDemandRestart }),
	hookSetting("run_on_undemand", "Command run once when a camera's demand ends (MediaMTX's runOnUnDemand), with run_on_demand's environment.",
		func(c *Config) *string { return &c.Hooks.RunOnUnDemand }),
	hookSetting("run_on_ready", "Command run when a camera's stream is ready (MediaMTX's runOnReady), with MTX_PATH, MTX_SOURCE_TYPE (rtspsSource or webrtcSource), MTX_SOURCE_ID and RTSP_PORT in its environment; stopped at notReady.",
		func(c *Config) *string { return &c.Hooks.RunOnReady }),
	hookRestartSetting("run_on_ready_restart", "Start run_on_ready again 5s after it exits while the stream is still ready (MediaMTX's runOnReadyRestart).",
		func(c *Config) *bool { return &c.Hooks.RunOnReadyRestart }),
	hookSetting("run_on_not_ready", "Command run once when a camera's stream stops being ready (MediaMTX's runOnNotReady), with run_on_ready's environment.",
		func(c *Config) *string { return &c.Hooks.RunOnNotReady }),
	hookSetting("run_on_read", "Command run when an RTSP reader starts playing a camera (MediaMTX's runOnRead), with MTX_PATH, MTX_QUERY, MTX_READER_TYPE, MTX_READER_ID and RTSP_PORT in its environment; stopped at that reader's unread.",
		func(c *Config) *string { return &c.Hooks.RunOnRead }),
	hookRestartSetting("run_on_read_restart", "Start run_on_read again 5s after it exits while its reader still plays (MediaMTX's runOnReadRestart).",
		func(c *Config) *bool { return &c.Hooks.RunOnReadRestart }),
	hookSetting("run_on_unread", "Command run once when an RTSP reader stops playing a camera (MediaMTX's runOnUnread), with run_on_read's environment.",
		func(c *Config) *string { return &c.Hooks.RunOnUnread }),
	pathsSetting("Hooks per camera, as MediaMTX's paths: a mapping from a camera's mtx_path (or ~regexp, or all_others) to runOnReady and the other hooks above, which replace the global ones for that camera. In the file a YAML mapping; in the environment or a flag its flow form, e.g. {front-door: {runOnReady: ...}}. See docs/hooks.md."),
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

// maxMQTTPacket is the largest packet MQTT's variable byte integer can
// express; a request limit beyond it could never be reached.
const maxMQTTPacket = 268435455

// Settings lists every key, in documentation order.
func Settings() []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		s.Env = slices.Clone(s.Env)
		s.YAMLAliases = slices.Clone(s.YAMLAliases)
		out[i] = s
	}
	return out
}

// settingIndex finds a setting by YAML key; "" never matches because the
// setting without a YAML key cannot be named in the file.
func settingIndex(key string) int {
	if key == "" {
		return -1
	}
	return slices.IndexFunc(settings, func(s Setting) bool { return s.YAMLKey == key })
}

// yamlSettingIndex finds a setting by the name the file gives it: its YAML
// key or one of its aliases.
func yamlSettingIndex(name string) int {
	if i := settingIndex(name); i >= 0 {
		return i
	}
	return slices.IndexFunc(settings, func(s Setting) bool { return name != "" && slices.Contains(s.YAMLAliases, name) })
}

// passwordFileIndex finds the *_file setting of the secret secretKey, -1 if
// it has none.
func passwordFileIndex(secretKey string) int {
	return slices.IndexFunc(settings, func(s Setting) bool { return s.fileOf == secretKey })
}
