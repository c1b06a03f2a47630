package config

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// env turns a map into a lookup so tests never see the real environment.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func writeYAML(t testing.TB, content string) string { return writeFile(t, "nestmtx.yml", content) }

// writeFile writes content to a new file named name, mode 0600.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadCase loads args and env: with wantErr nil the result must load and
// validate; otherwise loading must fail with an error containing each of
// wantErr. It returns the error.
func loadCase(t *testing.T, args []string, environ map[string]string, wantErr []string) error {
	t.Helper()
	c, err := Load(args, env(environ), nil)
	if wantErr == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("Validate() = %v", err)
		}
		return nil
	}
	if err == nil {
		t.Fatal("want error, got nil")
	}
	for _, w := range wantErr {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	return err
}

func mustLoad(t *testing.T, args []string, e map[string]string) Config {
	t.Helper()
	c, err := Load(args, env(e), nil)
	if err != nil {
		t.Fatalf("Load(%q): %v", args, err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	want := Config{
		DataDir:                "./data",
		HTTPAddress:            ":2000",
		RTSPAddress:            ":8554",
		MQTTListen:             ":1883",
		MQTTBaseTopic:          "nestmtx",
		MQTTKeepAlive:          30 * time.Second,
		MQTTMaxRequestBytes:    65536,
		MQTTSessionExpiry:      time.Hour,
		MQTTRequestMaxAge:      5 * time.Minute,
		MQTTEventBuffer:        1024,
		ShutdownTimeout:        8 * time.Second,
		MQTTMaxClients:         256,
		MQTTMaxSessionExpiry:   time.Hour,
		MQTTMaxQueuedMessages:  256,
		RTSPMaxConnections:     512,
		TokenTTL:               24 * time.Hour,
		LoginAttemptsPerMinute: 5,
		LogLevel:               "info",
		LogFormat:              "text",
		OnDemandStartTimeout:   20 * time.Second,
		OnDemandCloseAfter:     30 * time.Second,
		StallTimeout:           5 * time.Second,
		CameraAudio:            "opus",
		FFmpegPath:             "ffmpeg",
		MQTTLogs:               "off",
		LateJoin:               "paced",
		HADiscovery:            true,
		HADiscoveryPrefix:      "homeassistant",
		RTSPUDPAddress:         ":8000",
		GoogleAuthURL:          "https://nestservices.google.com/partnerconnections/{project_id}/auth",
		GoogleTokenURL:         "https://www.googleapis.com/oauth2/v4/token",
		GoogleSDMURL:           "https://smartdevicemanagement.googleapis.com/v1",
		DemoStreamTTL:          5 * time.Minute,
	}
	if got := Defaults(); got != want {
		t.Errorf("Defaults() = %+v\nwant %+v", got, want)
	}
	if err := Defaults().Validate(); err != nil {
		t.Errorf("Defaults().Validate() = %v", err)
	}
	// With nothing set, Load must agree with Defaults, including nil
	// lookup and writer, which callers may pass in tests.
	got, err := Load(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("Load(nil) = %+v\nwant %+v", got, want)
	}
}

func TestPrecedence(t *testing.T) {
	type layer struct {
		yaml, env, flag string // "" means not given at this layer
	}
	keys := []struct {
		yamlKey, envName, flagName string
		values                     [3]string // yaml, env, flag
		get                        func(Config) any
		want                       [3]any
		def                        any
	}{
		{"log_level", "NESTMTX_LOG_LEVEL", "log-level", [3]string{"debug", "WARN", "error"},
			func(c Config) any { return c.LogLevel }, [3]any{"debug", "warn", "error"}, "info"},
		{"http_address", "NESTMTX_HTTP_ADDRESS", "http-address", [3]string{":3001", ":3002", ":3003"},
			func(c Config) any { return c.HTTPAddress }, [3]any{":3001", ":3002", ":3003"}, ":2000"},
		{"mqtt_keepalive", "NESTMTX_MQTT_KEEPALIVE", "mqtt-keepalive", [3]string{"10s", "1m", "2h"},
			func(c Config) any { return c.MQTTKeepAlive }, [3]any{10 * time.Second, time.Minute, 2 * time.Hour}, 30 * time.Second},
		{"mqtt_max_request_bytes", "NESTMTX_MQTT_MAX_REQUEST_BYTES", "mqtt-max-request-bytes", [3]string{"2048", "4096", "8192"},
			func(c Config) any { return c.MQTTMaxRequestBytes }, [3]any{2048, 4096, 8192}, 65536},
		{"mqtt_base_topic", "NESTMTX_MQTT_BASE_TOPIC", "mqtt-base-topic", [3]string{"from/yaml", "from/env", "from/flag"},
			func(c Config) any { return c.MQTTBaseTopic }, [3]any{"from/yaml", "from/env", "from/flag"}, "nestmtx"},
		{"admin_password", "NESTMTX_ADMIN_PASSWORD", "admin-password", [3]string{"y", "e", "f"},
			func(c Config) any { return c.AdminPassword }, [3]any{"y", "e", "f"}, ""},
	}
	// Each combination of present layers; the highest present one wins.
	combos := []struct {
		yaml, env, flag bool
		winner          int // index into values, -1 for default
	}{
		{false, false, false, -1},
		{true, false, false, 0},
		{false, true, false, 1},
		{false, false, true, 2},
		{true, true, false, 1},
		{true, false, true, 2},
		{false, true, true, 2},
		{true, true, true, 2},
	}
	for _, k := range keys {
		for _, cb := range combos {
			name := k.yamlKey
			if cb.yaml {
				name += "/yaml"
			}
			if cb.env {
				name += "/env"
			}
			if cb.flag {
				name += "/flag"
			}
			t.Run(name, func(t *testing.T) {
				e := map[string]string{}
				var args []string
				if cb.yaml {
					// Another key in the file proves the file was read
					// even when this key is overridden.
					e["NESTMTX_CONFIG"] = writeYAML(t, k.yamlKey+": '"+k.values[0]+"'\ndata_dir: /from-yaml\n")
				}
				if cb.env {
					e[k.envName] = k.values[1]
				}
				if cb.flag {
					args = []string{"--" + k.flagName, k.values[2]}
				}
				c := mustLoad(t, args, e)
				want := k.def
				if cb.winner >= 0 {
					want = k.want[cb.winner]
				}
				if got := k.get(c); got != want {
					t.Errorf("%s = %v, want %v", k.yamlKey, got, want)
				}
				if cb.yaml && c.DataDir != "/from-yaml" {
					t.Errorf("DataDir = %q, want value from YAML", c.DataDir)
				}
			})
		}
	}
}

func TestEnvAliases(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		get  func(Config) string
		want string
	}{
		{"MQTT_USER", map[string]string{"MQTT_USER": "alice", "MQTT_PASS": "pw"}, func(c Config) string { return c.MQTTUsername }, "alice"},
		{"MQTT_PASS", map[string]string{"MQTT_USER": "alice", "MQTT_PASS": "pw"}, func(c Config) string { return c.MQTTPassword }, "pw"},
		{"MQTT_BASE_TOPIC", map[string]string{"MQTT_BASE_TOPIC": "home/cams"}, func(c Config) string { return c.MQTTBaseTopic }, "home/cams"},
		{"canonical beats alias", map[string]string{"MQTT_USER": "alias", "NESTMTX_MQTT_USERNAME": "canonical", "MQTT_PASS": "pw"},
			func(c Config) string { return c.MQTTUsername }, "canonical"},
		{"empty canonical falls back to alias", map[string]string{"NESTMTX_MQTT_PASSWORD": "", "MQTT_PASS": "alias", "MQTT_USER": "alice"},
			func(c Config) string { return c.MQTTPassword }, "alias"},
		{"flag beats alias", map[string]string{"MQTT_BASE_TOPIC": "alias"},
			func(c Config) string { return c.MQTTBaseTopic }, "flagged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var args []string
			if strings.HasPrefix(tt.name, "flag") {
				args = []string{"-mqtt-base-topic=flagged"}
			}
			if got := tt.get(mustLoad(t, args, tt.env)); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEmptyEnvIsUnset(t *testing.T) {
	path := writeYAML(t, "log_level: debug\n")
	c := mustLoad(t, nil, map[string]string{
		"NESTMTX_CONFIG":    path,
		"NESTMTX_LOG_LEVEL": "", // must not override the file
		"NESTMTX_DATA_DIR":  "", // would be invalid if taken as a value
		"NESTMTX_TOKEN_TTL": "", // would fail to parse if taken as a value
	})
	if c.LogLevel != "debug" || c.DataDir != "./data" || c.TokenTTL != 24*time.Hour {
		t.Errorf("empty env vars were applied: %+v", c)
	}
}

func TestConfigFileLocation(t *testing.T) {
	envFile := writeYAML(t, "log_format: json\n")
	flagFile := writeYAML(t, "log_format: text\nlog_level: warn\n")
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantFile   string
		wantFormat string
	}{
		{"none", nil, nil, "", "text"},
		{"env", nil, map[string]string{"NESTMTX_CONFIG": envFile}, envFile, "json"},
		{"flag", []string{"--config", flagFile}, nil, flagFile, "text"},
		{"flag beats env", []string{"--config=" + flagFile}, map[string]string{"NESTMTX_CONFIG": envFile}, flagFile, "text"},
		// An explicit empty flag is how to ignore a file named in the
		// environment without unsetting the variable.
		{"empty flag disables env file", []string{"--config="}, map[string]string{"NESTMTX_CONFIG": envFile}, "", "text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, tt.args, tt.env)
			if c.ConfigFile != tt.wantFile || c.LogFormat != tt.wantFormat {
				t.Errorf("ConfigFile=%q LogFormat=%q, want %q %q", c.ConfigFile, c.LogFormat, tt.wantFile, tt.wantFormat)
			}
		})
	}
}

func TestMissingConfigFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yml")
	for _, tt := range []struct {
		args   []string
		env    map[string]string
		origin string
	}{
		{[]string{"--config", missing}, nil, "--config"},
		{nil, map[string]string{"NESTMTX_CONFIG": missing}, "NESTMTX_CONFIG"},
	} {
		_, err := Load(tt.args, env(tt.env), nil)
		if err == nil {
			t.Fatalf("%s: missing file accepted", tt.origin)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: error %v does not wrap fs.ErrNotExist", tt.origin, err)
		}
		if want := "config: " + tt.origin + ": " + missing + ":"; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %q, want prefix %q", err, want)
		}
	}
}

// TestValidationErrorNamesKey runs every bad value through all three
// sources, because each source formats the key name differently.
func TestValidationErrorNamesKey(t *testing.T) {
	tests := []struct {
		key, value, wantMsg string
	}{
		{"log_level", "loud", `"loud" is not one of debug, info, warn, error`},
		{"log_format", "xml", `"xml" is not one of text, json`},
		{"data_dir", "", "must not be empty"},
		{"http_address", "2000", "not host:port"},
		{"rtsp_address", ":rtsp", "port number"},
		{"mqtt_listen", "localhost", "not host:port"},
		{"mqtt_listen", ":70000", "port number"},
		{"mqtt_url", "http://broker", `scheme "http" is not one of`},
		{"mqtt_url", "broker:1883", "is not one of"},
		{"mqtt_url", "mqtt://", "no host"},
		{"mqtt_url", "mqtt://host:port", "not a valid URL"},
		{"mqtt_url", "mqtt:///path", "no host"},
		{"mqtt_username", "a\x00b", "NUL"},
		{"mqtt_username", "\xff", "UTF-8"},
		{"mqtt_base_topic", "", "must not be empty"},
		{"mqtt_base_topic", "/nestmtx", "must not start or end with /"},
		{"mqtt_base_topic", "nestmtx/", "must not start or end with /"},
		{"mqtt_base_topic", "a/+/b", "wildcards"},
		{"mqtt_base_topic", "a/#", "wildcards"},
		{"mqtt_base_topic", "a\x00b", "NUL"},
		{"mqtt_base_topic", "$SYS", "must not start with $"},
		{"mqtt_client_id", "id\x00", "NUL"},
		{"mqtt_keepalive", "4s", "less than the minimum 5s"},
		{"mqtt_keepalive", "65536s", "more than the maximum"},
		{"mqtt_keepalive", "7500ms", "whole number of seconds"},
		{"mqtt_keepalive", "30", "not a duration"},
		{"mqtt_max_request_bytes", "1023", "less than the minimum 1024"},
		{"mqtt_max_request_bytes", "1e6", "not a decimal integer"},
		{"mqtt_max_request_bytes", "99999999999999999999", "not a decimal integer"},
		{"mqtt_max_request_bytes", "268435456", "more than the maximum"},
		{"token_ttl", "59s", "less than the minimum 1m0s"},
		{"token_ttl", "forever", "not a duration"},
		{"login_attempts_per_minute", "0", "less than the minimum 1"},
		{"login_attempts_per_minute", "five", "not a decimal integer"},
		{"on_demand_start_timeout", "999ms", "less than the minimum 1s"},
		{"on_demand_close_after", "-1s", "less than the minimum 0s"},
		{"mqtt_max_clients", "1", "less than the minimum 2"},
		{"mqtt_max_clients", "many", "not a decimal integer"},
		{"mqtt_max_session_expiry", "-1s", "less than the minimum 0s"},
		{"mqtt_max_session_expiry", "24h0m1s", "more than the maximum 24h0m0s"},
		{"mqtt_max_session_expiry", "1500ms", "whole number of seconds"},
		{"mqtt_max_queued_messages", "15", "less than the minimum 16"},
		{"mqtt_max_queued_messages", "65536", "more than the maximum 65535"},
		{"rtsp_max_connections", "0", "less than the minimum 1"},
		{"camera_audio", "mp3", `"mp3" is not one of opus, aac, none`},
		{"camera_audio", "", `"" is not one of opus, aac, none`},
		{"ffmpeg_path", "", "must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.value, func(t *testing.T) {
			envName := "NESTMTX_" + strings.ToUpper(tt.key)
			flagName := "--" + strings.ReplaceAll(tt.key, "_", "-")

			_, err := Load([]string{flagName, tt.value}, nil, nil)
			checkErr(t, err, "config: "+flagName+": ", tt.wantMsg)

			if tt.value != "" { // empty env vars are unset by design
				_, err = Load(nil, env(map[string]string{envName: tt.value}), nil)
				checkErr(t, err, "config: "+envName+": ", tt.wantMsg)
			}

			if !strings.ContainsAny(tt.value, "\x00\xff") { // not representable in YAML
				path := writeYAML(t, tt.key+": \""+tt.value+"\"\n")
				_, err = Load([]string{"--config", path}, nil, nil)
				checkErr(t, err, "config: "+path+": "+tt.key+": ", tt.wantMsg)
			}
		})
	}
}

func checkErr(t *testing.T, err error, wantPrefix, wantMsg string) {
	t.Helper()
	if err == nil {
		t.Errorf("want error %q...%q, got nil", wantPrefix, wantMsg)
		return
	}
	if !strings.HasPrefix(err.Error(), wantPrefix) || !strings.Contains(err.Error(), wantMsg) {
		t.Errorf("error %q\nwant prefix %q containing %q", err, wantPrefix, wantMsg)
	}
}

func TestExactErrorMessages(t *testing.T) {
	path := writeYAML(t, "log_level: loud\n")
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"NESTMTX_LOG_LEVEL": "loud"}, `config: NESTMTX_LOG_LEVEL: "loud" is not one of debug, info, warn, error`},
		{[]string{"--log-level=loud"}, nil, `config: --log-level: "loud" is not one of debug, info, warn, error`},
		{[]string{"--config", path}, nil, `config: ` + path + `: log_level: "loud" is not one of debug, info, warn, error`},
		{nil, map[string]string{"MQTT_BASE_TOPIC": "a/#"}, `config: MQTT_BASE_TOPIC: "a/#" must not contain the wildcards + or #`},
	}
	for _, tt := range tests {
		_, err := Load(tt.args, env(tt.env), nil)
		if err == nil || err.Error() != tt.want {
			t.Errorf("got %v\nwant %s", err, tt.want)
		}
	}
}

func TestValidEdgeValues(t *testing.T) {
	tests := []struct {
		flag, value string
		get         func(Config) any
		want        any
	}{
		{"log-level", "DeBuG", func(c Config) any { return c.LogLevel }, "debug"},
		{"log-format", "JSON", func(c Config) any { return c.LogFormat }, "json"},
		{"mqtt-keepalive", "5s", func(c Config) any { return c.MQTTKeepAlive }, 5 * time.Second},
		{"mqtt-keepalive", "65535s", func(c Config) any { return c.MQTTKeepAlive }, 65535 * time.Second},
		{"mqtt-max-request-bytes", "1024", func(c Config) any { return c.MQTTMaxRequestBytes }, 1024},
		{"token-ttl", "1m", func(c Config) any { return c.TokenTTL }, time.Minute},
		{"login-attempts-per-minute", "1", func(c Config) any { return c.LoginAttemptsPerMinute }, 1},
		{"on-demand-start-timeout", "1s", func(c Config) any { return c.OnDemandStartTimeout }, time.Second},
		{"on-demand-close-after", "0", func(c Config) any { return c.OnDemandCloseAfter }, time.Duration(0)},
		{"mqtt-url", "MQTTS://broker:8883", func(c Config) any { return c.MQTTURL }, "MQTTS://broker:8883"},
		{"mqtt-url", "wss://user:pw@broker/mqtt", func(c Config) any { return c.MQTTURL }, "wss://user:pw@broker/mqtt"},
		{"mqtt-url", "tcp://[::1]:1883", func(c Config) any { return c.MQTTURL }, "tcp://[::1]:1883"},
		{"mqtt-listen", "[::]:0", func(c Config) any { return c.MQTTListen }, "[::]:0"},
		{"mqtt-base-topic", "home/nest cams", func(c Config) any { return c.MQTTBaseTopic }, "home/nest cams"},
		{"mqtt-password", "", func(c Config) any { return c.MQTTPassword }, ""},
		{"mqtt-anonymous", "true", func(c Config) any { return c.MQTTAnonymous }, true},
		{"rtsp-anonymous", "1", func(c Config) any { return c.RTSPAnonymous }, true},
		{"mqtt-max-clients", "2", func(c Config) any { return c.MQTTMaxClients }, 2},
		{"mqtt-max-session-expiry", "0", func(c Config) any { return c.MQTTMaxSessionExpiry }, time.Duration(0)},
		{"mqtt-max-session-expiry", "24h", func(c Config) any { return c.MQTTMaxSessionExpiry }, 24 * time.Hour},
		{"mqtt-max-queued-messages", "16", func(c Config) any { return c.MQTTMaxQueuedMessages }, 16},
		{"mqtt-max-queued-messages", "65535", func(c Config) any { return c.MQTTMaxQueuedMessages }, 65535},
		{"rtsp-max-connections", "1", func(c Config) any { return c.RTSPMaxConnections }, 1},
		{"mqtt-client-id", "", func(c Config) any { return c.MQTTClientID }, ""},
		{"camera-audio", "AAC", func(c Config) any { return c.CameraAudio }, "aac"},
		{"camera-audio", "None", func(c Config) any { return c.CameraAudio }, "none"},
		{"ffmpeg-path", "/usr/lib/jellyfin-ffmpeg/ffmpeg", func(c Config) any { return c.FFmpegPath }, "/usr/lib/jellyfin-ffmpeg/ffmpeg"},
	}
	for _, tt := range tests {
		t.Run(tt.flag+"="+tt.value, func(t *testing.T) {
			c := mustLoad(t, []string{"--" + tt.flag + "=" + tt.value}, nil)
			if got := tt.get(c); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
}

// TestCameraAudio: the global audio mode from each source, any case in,
// lower case out, and the exported list the API validates cameras with.
func TestCameraAudio(t *testing.T) {
	if c := mustLoad(t, nil, map[string]string{"NESTMTX_CAMERA_AUDIO": "none", "NESTMTX_FFMPEG_PATH": "/opt/ffmpeg"}); c.CameraAudio != "none" || c.FFmpegPath != "/opt/ffmpeg" {
		t.Errorf("from env: CameraAudio=%q FFmpegPath=%q", c.CameraAudio, c.FFmpegPath)
	}
	path := writeYAML(t, "camera_audio: AAC\nffmpeg_path: ffmpeg7\n")
	if c := mustLoad(t, []string{"--config", path}, nil); c.CameraAudio != "aac" || c.FFmpegPath != "ffmpeg7" {
		t.Errorf("from YAML: CameraAudio=%q FFmpegPath=%q", c.CameraAudio, c.FFmpegPath)
	}
	_, err := Load(nil, env(map[string]string{"NESTMTX_CAMERA_AUDIO": "mp3"}), nil)
	if want := `config: NESTMTX_CAMERA_AUDIO: "mp3" is not one of opus, aac, none`; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}

	if got := AudioModes(); !reflect.DeepEqual(got, []string{"opus", "aac", "none"}) {
		t.Errorf("AudioModes() = %q", got)
	}
	AudioModes()[0] = "mutated"
	if AudioModes()[0] != AudioOpus {
		t.Error("AudioModes() exposes a shared slice")
	}
	for _, m := range []string{AudioOpus, AudioAAC, AudioNone} {
		if !ValidAudioMode(m) {
			t.Errorf("ValidAudioMode(%q) = false", m)
		}
		if err := settings[settingIndex("camera_audio")].apply(&Config{}, m); err != nil {
			t.Errorf("camera_audio refuses %q, which ValidAudioMode accepts: %v", m, err)
		}
	}
	for _, m := range []string{"", "AAC", "mp3", " opus"} {
		if ValidAudioMode(m) {
			t.Errorf("ValidAudioMode(%q) = true", m)
		}
	}
}

func TestURLErrorDoesNotLeakPassword(t *testing.T) {
	for _, u := range []string{"mqtt://user:hunter2@host:bad", "http://user:hunter2@host", "mqtt://user:hunter2@"} {
		_, err := Load([]string{"--mqtt-url", u}, nil, nil)
		if err == nil {
			t.Fatalf("%q accepted", u)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks password: %v", err)
		}
	}
}

func TestCrossFieldChecks(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr []string // substrings; nil means success
	}{
		{"cert and key", []string{"--mqtt-cert-file=c.pem", "--mqtt-key-file=k.pem"}, nil, nil},
		{"cert only (flag)", []string{"--mqtt-cert-file=c.pem"}, nil,
			[]string{"config: --mqtt-cert-file is set", "mqtt_key_file", "NESTMTX_MQTT_KEY_FILE", "--mqtt-key-file"}},
		{"key only (env)", nil, map[string]string{"NESTMTX_MQTT_KEY_FILE": "k.pem"},
			[]string{"config: NESTMTX_MQTT_KEY_FILE is set", "mqtt_cert_file"}},
		{"cert only, key cleared by flag", []string{"--mqtt-key-file="},
			map[string]string{"NESTMTX_MQTT_CERT_FILE": "c.pem", "NESTMTX_MQTT_KEY_FILE": "k.pem"},
			[]string{"NESTMTX_MQTT_CERT_FILE is set", "mqtt_key_file"}},
		{"http and rtsp on one port", []string{"--rtsp-address=:2000"}, nil,
			[]string{"http_address", "--rtsp-address", `":2000"`}},
		{"embedded broker clashes with wildcard host", []string{"--mqtt-listen=127.0.0.1:2000"}, nil,
			[]string{"--mqtt-listen"}},
		{"external broker frees mqtt_listen", []string{"--mqtt-listen=:2000", "--mqtt-url=mqtt://b"}, nil, nil},
		{"different hosts do not clash", []string{"--http-address=127.0.0.1:9000", "--rtsp-address=127.0.0.2:9000"}, nil, nil},
		{"port 0 never clashes", []string{"--http-address=:0", "--rtsp-address=:0", "--mqtt-listen=:0"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { loadCase(t, tt.args, tt.env, tt.wantErr) })
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"upper-case level is not normalized", func(c *Config) { c.LogLevel = "INFO" }, "config: log_level: "},
		{"zero value config", func(c *Config) { *c = Config{} }, "config: data_dir: must not be empty"},
		{"keepalive", func(c *Config) { c.MQTTKeepAlive = time.Second }, "config: mqtt_keepalive: "},
		{"max request", func(c *Config) { c.MQTTMaxRequestBytes = 1 }, "config: mqtt_max_request_bytes: "},
		{"cert without key", func(c *Config) { c.MQTTCertFile = "c" }, "config: mqtt_cert_file is set"},
		{"bad url", func(c *Config) { c.MQTTURL = "ftp://x" }, "config: mqtt_url: "},
		{"mqtt username without password", func(c *Config) { c.MQTTUsername = "u" }, "config: mqtt_username is set but no MQTT password is"},
		{"mqtt password without username", func(c *Config) { c.MQTTPassword = "p" }, "config: mqtt_password is set but mqtt_username"},
		{"mqtt username and password file", func(c *Config) { c.MQTTUsername, c.MQTTPasswordFile = "u", "/f" }, ""},
		{"queued messages", func(c *Config) { c.MQTTMaxQueuedMessages = 70000 }, "config: mqtt_max_queued_messages: "},
		{"camera audio", func(c *Config) { c.CameraAudio = "mp3" }, "config: camera_audio: "},
		{"upper-case camera audio is not normalized", func(c *Config) { c.CameraAudio = "AAC" }, "config: camera_audio: "},
		{"no ffmpeg", func(c *Config) { c.FFmpegPath = "" }, "config: ffmpeg_path: must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			tt.modify(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want prefix %q", err, tt.want)
			}
		})
	}
}

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--verbose"}, "config: flag provided but not defined: -verbose"},
		{"missing value", []string{"--data-dir"}, "config: flag needs an argument: -data-dir"},
		{"positional argument", []string{"--log-level", "debug", "extra"}, `config: unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Load(tt.args, nil, &out)
			if err == nil || err.Error() != tt.want {
				t.Errorf("error = %v, want %q", err, tt.want)
			}
			if errors.Is(err, flag.ErrHelp) {
				t.Error("flag error must not look like a help request")
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		var out bytes.Buffer
		_, err := Load([]string{arg}, nil, &out)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: error = %v, want flag.ErrHelp", arg, err)
		}
		usage := out.String()
		for _, s := range Settings() {
			if !strings.Contains(usage, "-"+s.Flag) {
				t.Errorf("%s: usage lacks flag -%s", arg, s.Flag)
			}
			for _, e := range s.Env {
				if !strings.Contains(usage, e) {
					t.Errorf("%s: usage lacks env %s", arg, e)
				}
			}
		}
	}
}

func TestYAML(t *testing.T) {
	tests := []struct {
		name    string
		content string
		check   func(Config) bool // for successes
		wantErr string            // substring after "config: <path>: "
	}{
		{"empty file", "", func(c Config) bool { return c == withFile(Defaults(), c.ConfigFile) }, ""},
		{"comments only", "# nothing\n", func(c Config) bool { return c.LogLevel == "info" }, ""},
		{"explicit null document", "~\n", func(c Config) bool { return c.LogLevel == "info" }, ""},
		{"null value leaves default", "data_dir:\nlog_level: ~\n",
			func(c Config) bool { return c.DataDir == "./data" && c.LogLevel == "info" }, ""},
		{"numbers and booleans as strings", "mqtt_max_request_bytes: 2048\nmqtt_username: true\nmqtt_password: 0123\n",
			func(c Config) bool {
				return c.MQTTMaxRequestBytes == 2048 && c.MQTTUsername == "true" && c.MQTTPassword == "0123"
			}, ""},
		{"timestamp-looking dir", "data_dir: 2024-01-02\n", func(c Config) bool { return c.DataDir == "2024-01-02" }, ""},
		{"quoted empty overrides default", "mqtt_url: ''\n", func(c Config) bool { return c.MQTTURL == "" }, ""},
		{"anchors and aliases", "mqtt_username: &u bob\nmqtt_client_id: *u\nmqtt_password: pw\n",
			func(c Config) bool { return c.MQTTUsername == "bob" && c.MQTTClientID == "bob" }, ""},
		{"unknown key", "log_level: info\nlogLevel: debug\n", nil, `line 2: unknown key "logLevel"`},
		{"unknown key with hint", "log-level: debug\n", nil, `unknown key "log-level" (did you mean "log_level"?)`},
		{"env-style key hint", "NESTMTX_DATA_DIR: /x\n", nil, `(did you mean "data_dir"?)`},
		{"config key is not settable in file", "config: other.yml\n", nil, `unknown key "config"`},
		{"duplicate key", "log_level: info\nlog_level: debug\n", nil, "line 2: log_level: already set on line 1"},
		{"list value", "data_dir: [a, b]\n", nil, "data_dir: must be a string, number or boolean, got a list"},
		{"nested mapping", "data_dir:\n  path: x\n", nil, "data_dir: must be a string, number or boolean, got a mapping"},
		{"custom tag", "data_dir: !secret x\n", nil, "data_dir: must be a string, number or boolean, got tag !secret"},
		{"binary", "data_dir: !!binary aGk=\n", nil, "got tag !!binary"},
		{"top-level list", "- data_dir\n", nil, "expected a mapping of settings"},
		{"top-level scalar", "hello\n", nil, "expected a mapping of settings"},
		{"non-scalar key", "? [a]\n: b\n", nil, "keys must be plain names"},
		{"two documents", "log_level: info\n---\nlog_level: debug\n", nil, "only one YAML document"},
		{"syntax error", "log_level: [\n", nil, "yaml:"},
		{"merge key", "base: &b {log_level: debug}\n<<: *b\n", nil, `unknown key "base"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeYAML(t, tt.content)
			c, err := Load([]string{"--config", path}, nil, nil)
			if tt.wantErr != "" {
				checkErr(t, err, "config: "+path+": ", tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if c.ConfigFile != path {
				t.Errorf("ConfigFile = %q, want %q", c.ConfigFile, path)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func withFile(c Config, path string) Config {
	c.ConfigFile = path
	return c
}

func TestRedacted(t *testing.T) {
	c := Defaults()
	c.MQTTUsername = "alice"
	c.MQTTPassword = "mqtt-secret"
	c.AdminPassword = "admin-secret"
	c.MQTTURL = "mqtts://bob:url-secret@broker:8883"
	orig := c

	r := c.Redacted()
	if r.MQTTPassword != "***" || r.AdminPassword != "***" {
		t.Errorf("secrets not redacted: %+v", r)
	}
	if r.MQTTURL != "mqtts://bob:***@broker:8883" {
		t.Errorf("MQTTURL = %q, want password masked", r.MQTTURL)
	}
	if strings.Contains(strings.Join([]string{r.MQTTURL, r.MQTTPassword, r.AdminPassword}, " "), "secret") {
		t.Errorf("redacted copy still contains a secret: %+v", r)
	}
	if r.MQTTUsername != "alice" || r.DataDir != c.DataDir || r.MQTTKeepAlive != c.MQTTKeepAlive {
		t.Errorf("non-secret fields changed: %+v", r)
	}
	if c != orig {
		t.Error("Redacted modified its receiver")
	}

	// Unset secrets stay empty so logs show that they are not configured.
	if e := Defaults().Redacted(); e != Defaults() {
		t.Errorf("Redacted changed a config without secrets: %+v", e)
	}
	// A URL without a password must pass through unchanged.
	c.MQTTURL = "mqtt://bob@broker"
	if r := c.Redacted(); r.MQTTURL != c.MQTTURL {
		t.Errorf("MQTTURL = %q, want unchanged", r.MQTTURL)
	}
}

func TestRedactedCoversEverySecret(t *testing.T) {
	var secrets int
	for _, s := range Settings() {
		if !s.Secret {
			continue
		}
		secrets++
		args := []string{"--" + s.Flag, "topsecret"}
		if s.YAMLKey == "mqtt_password" {
			args = append(args, "--mqtt-username=u") // a password alone is refused
		}
		c := mustLoad(t, args, nil)
		r := c.Redacted()
		if reflect.DeepEqual(c, r) {
			t.Errorf("%s: Redacted did not change anything", s.YAMLKey)
		}
		if strings.Contains(reflect.ValueOf(r).String()+fmtConfig(r), "topsecret") {
			t.Errorf("%s: secret survives Redacted", s.YAMLKey)
		}
	}
	if secrets != 3 {
		t.Errorf("found %d secret settings, want 3 (mqtt_password, admin_password, metrics_token)", secrets)
	}
	// Every secret can come from a file, so the flag warning always has
	// a file to suggest; the file's path itself is not a secret.
	for _, s := range Settings() {
		if !s.Secret {
			continue
		}
		f := passwordFileIndex(s.YAMLKey)
		if f < 0 {
			t.Errorf("%s has no *_file setting", s.YAMLKey)
			continue
		}
		if settings[f].Secret {
			t.Errorf("%s is marked secret; it is a path", settings[f].YAMLKey)
		}
	}
}

func fmtConfig(c Config) string {
	v := reflect.ValueOf(c)
	var b strings.Builder
	for i := range v.NumField() {
		b.WriteString(v.Field(i).String())
		b.WriteByte(' ')
	}
	return b.String()
}

// TestSettingsCoverConfig guards against a Config field that no setting
// can reach, or two settings writing the same field.
func TestSettingsCoverConfig(t *testing.T) {
	samples := map[string]string{
		"config": "x.yml", "data_dir": "/d", "http_address": ":1", "rtsp_address": ":2",
		"mqtt_url": "mqtt://h", "mqtt_listen": ":3", "mqtt_username": "u", "mqtt_password": "p",
		"mqtt_base_topic": "t", "mqtt_client_id": "c", "mqtt_keepalive": "6s", "mqtt_ca_file": "ca",
		"mqtt_cert_file": "cert", "mqtt_key_file": "key", "mqtt_max_request_bytes": "2000",
		"admin_password": "a", "token_ttl": "2m", "login_attempts_per_minute": "7",
		"log_level": "warn", "log_format": "json", "on_demand_start_timeout": "2s", "on_demand_close_after": "1s",
		"rtsp_udp_address": ":9000", "google_auth_url": "http://a/auth", "google_token_url": "http://a/token",
		"google_sdm_url": "http://a/v1", "google_ca_file": "ca.pem", "demo": "true", "http_pprof": "true", "demo_stream_ttl": "9s",
		"demo_faults": "extend_fail", "stall_timeout": "7s",
		"mqtt_anonymous": "true", "rtsp_anonymous": "true", "mqtt_max_clients": "3", "mqtt_max_session_expiry": "2m",
		"mqtt_max_queued_messages": "17", "rtsp_max_connections": "9",
		"mqtt_session_expiry": "3m", "mqtt_request_max_age": "4s", "mqtt_event_buffer": "99", "shutdown_timeout": "3s",
		"admin_password_file": "/run/credentials/admin", "mqtt_password_file": "/run/secrets/mqtt",
		"camera_audio": "aac", "ffmpeg_path": "/usr/bin/ffmpeg",
		"mqtt_logs": "warn", "late_join": "keyframe", "ha_discovery": "false", "metrics_token": "m-token", "metrics_token_file": "/run/secrets/metrics", "metrics_address": "127.0.0.1:9464", "ha_discovery_prefix": "ha", "http_cors_origins": "https://ha.example:8123, http://frigate.lan",
		"run_on_demand": "a", "run_on_demand_restart": "yes", "run_on_undemand": "b", "run_on_ready": "c",
		"run_on_ready_restart": "true", "run_on_not_ready": "d", "run_on_read": "e", "run_on_read_restart": "on",
		"run_on_unread": "f", "paths": "{front-door: {runOnReady: x}}",
	}
	leafNames, leafValues := configLeaves(Defaults())
	owner := make(map[string]string)
	for _, s := range settings {
		id := s.name()
		sample, ok := samples[strings.TrimPrefix(id, "--")]
		if !ok {
			t.Errorf("no sample value for %s", id)
			continue
		}
		c := Defaults()
		if err := s.apply(&c, sample); err != nil {
			t.Errorf("%s: sample %q rejected: %v", id, sample, err)
			continue
		}
		_, afterValues := configLeaves(c)
		var changed []string
		for i, name := range leafNames {
			if leafValues[i] != afterValues[i] {
				changed = append(changed, name)
			}
		}
		if len(changed) != 1 {
			t.Errorf("%s changed fields %v, want exactly one", id, changed)
			continue
		}
		if prev, dup := owner[changed[0]]; dup {
			t.Errorf("%s and %s both set %s", prev, id, changed[0])
		}
		owner[changed[0]] = id
	}
	for _, name := range leafNames {
		if _, ok := owner[name]; !ok {
			t.Errorf("Config.%s is not set by any setting", name)
		}
	}
}

// configLeaves lists c's fields, with the global hooks' own fields in
// place of Hooks (one setting each), as names and values.
func configLeaves(c Config) (names []string, values []any) {
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		for i := range v.NumField() {
			f, name := v.Field(i), prefix+v.Type().Field(i).Name
			if f.Type() == reflect.TypeFor[Hooks]() {
				walk(f, name+".")
				continue
			}
			names, values = append(names, name), append(values, f.Interface())
		}
	}
	walk(reflect.ValueOf(c), "")
	return names, values
}

func TestSettings(t *testing.T) {
	ss := Settings()
	if len(ss) != len(settings) {
		t.Fatalf("Settings() has %d entries, want %d", len(ss), len(settings))
	}
	seen := make(map[string]bool)
	for _, s := range ss {
		if s.Description == "" {
			t.Errorf("%s has no description", s.name())
		}
		for _, n := range append([]string{"flag " + s.Flag, "yaml " + s.YAMLKey}, s.Env...) {
			if n == "yaml " {
				continue
			}
			if seen[n] {
				t.Errorf("%s is used twice", n)
			}
			seen[n] = true
		}
	}
	for _, want := range []string{"MQTT_USER", "MQTT_PASS", "MQTT_BASE_TOPIC", "NESTMTX_CONFIG"} {
		if !seen[want] {
			t.Errorf("Settings() lacks env %s", want)
		}
	}
	// Callers get copies: mutating them must not change later results.
	ss[0].Env[0] = "MUTATED"
	ss[0].Default = "MUTATED"
	if Settings()[0].Env[0] == "MUTATED" || Settings()[0].Default == "MUTATED" {
		t.Error("Settings() exposes the internal table")
	}
}

func TestMarkdownTable(t *testing.T) {
	md := MarkdownTable()
	lines := strings.Split(strings.TrimSuffix(md, "\n"), "\n")
	if want := 2 + len(Settings()); len(lines) != want {
		t.Errorf("table has %d lines, want %d", len(lines), want)
	}
	for _, s := range Settings() {
		for _, e := range s.Env {
			if !strings.Contains(md, "`"+e+"`") {
				t.Errorf("table lacks env %s", e)
			}
		}
		if !strings.Contains(md, "`--"+s.Flag+"`") {
			t.Errorf("table lacks flag --%s", s.Flag)
		}
		if s.YAMLKey != "" && !strings.Contains(md, "`"+s.YAMLKey+"`") {
			t.Errorf("table lacks yaml key %s", s.YAMLKey)
		}
	}
	for i, l := range lines {
		// Every row needs the same column count or Markdown renders garbage.
		if n := strings.Count(strings.ReplaceAll(l, `\|`, ""), "|"); n != 6 {
			t.Errorf("line %d has %d pipes, want 6: %s", i+1, n, l)
		}
	}
	if strings.Contains(md, "<hostname>") || !strings.Contains(md, "&lt;hostname&gt;") {
		t.Error("angle brackets in descriptions are not escaped; Markdown would drop them as HTML")
	}
	if !strings.Contains(md, "Secret") {
		t.Error("table does not mark secrets")
	}
}

func FuzzLoadYAML(f *testing.F) {
	seeds := []string{
		"",
		"log_level: debug\n",
		"mqtt_url: mqtts://u:p@broker:8883\nmqtt_cert_file: c\nmqtt_key_file: k\n",
		"mqtt_keepalive: 65535s\nmqtt_max_request_bytes: 1024\n",
		"data_dir: [a]\n",
		"a: &x 1\nb: *x\n",
		"http_address: ':1883'\n",
		"--- \n...\n",
		"? [a]\n: b\n",
		"log_level: !!binary aGk=\n",
		"runOnReady: a\npaths:\n  cam: &h {runOnRead: 'b c', runOnReadRestart: yes}\n  '~^x(.)': *h\n  all_others:\n",
		"pathDefaults:\n  run_on_unread: u\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, content string) {
		path := writeYAML(t, content)
		c, err := Load([]string{"--config", path}, nil, nil)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("error without config prefix: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Errorf("Load accepted an invalid config: %v\ninput: %q", err, content)
		}
		if c.ConfigFile != path {
			t.Errorf("ConfigFile = %q, want %q", c.ConfigFile, path)
		}
	})
}

func TestCORSOrigins(t *testing.T) {
	if got := CORSOrigins(" https://ha.example:8123/ ,http://frigate.lan,, "); !slices.Equal(got, []string{"https://ha.example:8123", "http://frigate.lan"}) {
		t.Fatalf("CORSOrigins = %q", got)
	}
	for _, bad := range []string{"*", "ha.example", "ftp://h", "https://h/path", "https://u:p@h", "https://h?x=1"} {
		if err := corsOrigins(bad); err == nil {
			t.Errorf("origin %q accepted", bad)
		}
	}
	if err := corsOrigins(""); err != nil {
		t.Errorf("empty list: %v", err)
	}
}
