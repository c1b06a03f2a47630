package config

import (
	"bytes"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

func writeSecret(t testing.TB, content string) string { return writeFile(t, "secret", content) }

func TestAnonymousSwitches(t *testing.T) {
	c := mustLoad(t, []string{"--mqtt-anonymous", "--rtsp-anonymous"}, nil)
	if !c.MQTTAnonymous || !c.RTSPAnonymous {
		t.Errorf("bare flags: MQTTAnonymous=%v RTSPAnonymous=%v, want true", c.MQTTAnonymous, c.RTSPAnonymous)
	}
	c = mustLoad(t, nil, map[string]string{"NESTMTX_MQTT_ANONYMOUS": "TRUE", "NESTMTX_RTSP_ANONYMOUS": "1"})
	if !c.MQTTAnonymous || !c.RTSPAnonymous {
		t.Errorf("env: MQTTAnonymous=%v RTSPAnonymous=%v, want true", c.MQTTAnonymous, c.RTSPAnonymous)
	}
	path := writeYAML(t, "mqtt_anonymous: true\nrtsp_anonymous: false\n")
	c = mustLoad(t, []string{"--config", path}, nil)
	if !c.MQTTAnonymous || c.RTSPAnonymous {
		t.Errorf("yaml: MQTTAnonymous=%v RTSPAnonymous=%v", c.MQTTAnonymous, c.RTSPAnonymous)
	}
	_, err := Load([]string{"--mqtt-anonymous=maybe"}, nil, nil)
	checkErr(t, err, "config: --mqtt-anonymous: ", "not a boolean")
	_, err = Load(nil, env(map[string]string{"NESTMTX_RTSP_ANONYMOUS": "yes"}), nil)
	checkErr(t, err, "config: NESTMTX_RTSP_ANONYMOUS: ", "not a boolean")
}

func TestPasswordFileContent(t *testing.T) {
	for _, tt := range []struct{ content, want string }{
		{"pw\n", "pw"},
		{"pw", "pw"},
		{"pw\r\n", "pw"},
		{"pw\n\n", "pw\n"},       // only one newline is the editor's
		{"pw\r", "pw\r"},         // a lone CR is not a line end
		{" p w \t\n", " p w \t"}, // other whitespace may be part of it
	} {
		path := writeSecret(t, tt.content)
		c := mustLoad(t, nil, map[string]string{"NESTMTX_ADMIN_PASSWORD_FILE": path})
		if c.AdminPassword != tt.want {
			t.Errorf("content %q: AdminPassword = %q, want %q", tt.content, c.AdminPassword, tt.want)
		}
		if c.AdminPasswordFile != path {
			t.Errorf("AdminPasswordFile = %q, want %q", c.AdminPasswordFile, path)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("Validate() of a loaded config = %v", err)
		}
	}
}

func TestPasswordFileSources(t *testing.T) {
	admin, mqtt := writeSecret(t, "admin-pw\n"), writeSecret(t, "mqtt-pw\n")
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"env", nil, map[string]string{"NESTMTX_ADMIN_PASSWORD_FILE": admin, "NESTMTX_MQTT_PASSWORD_FILE": mqtt, "NESTMTX_MQTT_USERNAME": "u"}},
		{"flag", []string{"--admin-password-file", admin, "--mqtt-password-file=" + mqtt, "--mqtt-username=u"}, nil},
		{"yaml", []string{"--config", writeYAML(t, "admin_password_file: "+admin+"\nmqtt_password_file: "+mqtt+"\nmqtt_username: u\n")}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			c, err := Load(tt.args, env(tt.env), &out)
			if err != nil {
				t.Fatal(err)
			}
			if c.AdminPassword != "admin-pw" || c.MQTTPassword != "mqtt-pw" {
				t.Errorf("AdminPassword=%q MQTTPassword=%q", c.AdminPassword, c.MQTTPassword)
			}
			if out.Len() != 0 {
				t.Errorf("a password file gave messages: %q", out.String())
			}
		})
	}
}

func TestPasswordAndFileBothSet(t *testing.T) {
	file := writeSecret(t, "from-file\n")
	for _, tt := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr []string
	}{
		{"env and env", nil, map[string]string{"NESTMTX_ADMIN_PASSWORD": "from-env", "NESTMTX_ADMIN_PASSWORD_FILE": file},
			[]string{"admin_password (from NESTMTX_ADMIN_PASSWORD)", "admin_password_file (from NESTMTX_ADMIN_PASSWORD_FILE)", "one way only"}},
		{"flag file over env password", []string{"--admin-password-file", file}, map[string]string{"NESTMTX_ADMIN_PASSWORD": "from-env"},
			[]string{"admin_password (from NESTMTX_ADMIN_PASSWORD)", "admin_password_file (from --admin-password-file)"}},
		{"yaml password and env file",
			[]string{"--config", writeYAML(t, "admin_password: from-yaml\n")}, map[string]string{"NESTMTX_ADMIN_PASSWORD_FILE": file},
			[]string{"admin_password (from ", ": admin_password)", "admin_password_file (from NESTMTX_ADMIN_PASSWORD_FILE)"}},
		{"mqtt alias and file", nil, map[string]string{"MQTT_PASS": "from-env", "NESTMTX_MQTT_PASSWORD_FILE": file, "MQTT_USER": "u"},
			[]string{"mqtt_password (from MQTT_PASS)", "mqtt_password_file (from NESTMTX_MQTT_PASSWORD_FILE)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, env(tt.env), nil)
			if err == nil {
				t.Fatal("both accepted")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, secret := range []string{"from-env", "from-yaml", "from-file"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a password", err)
				}
			}
		})
	}

	// An explicit empty value clears a password instead of clashing, the
	// way --mqtt-key-file= clears a key file set elsewhere.
	c := mustLoad(t, []string{"--admin-password="}, map[string]string{"NESTMTX_ADMIN_PASSWORD": "from-env", "NESTMTX_ADMIN_PASSWORD_FILE": file})
	if c.AdminPassword != "from-file" {
		t.Errorf("AdminPassword = %q, want the file's", c.AdminPassword)
	}
}

func TestPasswordFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	big := writeSecret(t, strings.Repeat("hunter2", 10000))
	for _, tt := range []struct {
		name    string
		path    string
		wantErr string
		wantIs  error
	}{
		{"missing", missing, "config: NESTMTX_ADMIN_PASSWORD_FILE: " + missing + ": no such file or directory", fs.ErrNotExist},
		{"empty", writeSecret(t, ""), " is empty", nil},
		{"only a newline", writeSecret(t, "\r\n"), " is empty", nil},
		{"a directory", dir, "config: NESTMTX_ADMIN_PASSWORD_FILE: " + dir + ": is a directory", nil},
		{"too large", big, big + " is larger than 64 KiB", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(nil, env(map[string]string{"NESTMTX_ADMIN_PASSWORD_FILE": tt.path}), nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %q, want it to contain %q and the path", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v does not wrap %v", err, tt.wantIs)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows the file's content: %q", err)
			}
		})
	}

	// The error names where the path came from, as for any other value.
	path := writeYAML(t, "mqtt_password_file: "+missing+"\nmqtt_username: u\n")
	_, err := Load([]string{"--config", path}, nil, nil)
	checkErr(t, err, "config: "+path+": mqtt_password_file: "+missing+": ", "no such file")
}

func TestMQTTLoginNeedsBoth(t *testing.T) {
	file := writeSecret(t, "pw\n")
	for _, tt := range []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr []string // nil: accepted
	}{
		{"neither", nil, nil, nil},
		{"both", []string{"--mqtt-username=u"}, map[string]string{"MQTT_PASS": "p"}, nil},
		{"username and password file", nil, map[string]string{"MQTT_USER": "u", "NESTMTX_MQTT_PASSWORD_FILE": file}, nil},
		{"username only", nil, map[string]string{"NESTMTX_MQTT_USERNAME": "u"},
			[]string{"config: NESTMTX_MQTT_USERNAME is set but no MQTT password is", "mqtt_password (NESTMTX_MQTT_PASSWORD, MQTT_PASS, --mqtt-password)",
				"mqtt_password_file (NESTMTX_MQTT_PASSWORD_FILE, --mqtt-password-file)"}},
		{"password only", nil, map[string]string{"MQTT_PASS": "p"},
			[]string{"config: MQTT_PASS is set but mqtt_username (NESTMTX_MQTT_USERNAME, MQTT_USER, --mqtt-username) is not"}},
		{"password file only", []string{"--mqtt-password-file", file}, nil,
			[]string{"config: --mqtt-password-file is set but mqtt_username"}},
		{"username cleared by flag", []string{"--mqtt-username="}, map[string]string{"MQTT_USER": "u", "MQTT_PASS": "p"},
			[]string{"config: MQTT_PASS is set but mqtt_username"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := loadCase(t, tt.args, tt.env, tt.wantErr); err != nil && strings.Contains(err.Error(), `"p"`) {
				t.Errorf("error shows the password: %q", err)
			}
		})
	}
}

func TestSecretFlagWarnings(t *testing.T) {
	file := writeSecret(t, "pw\n")
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"admin flag", []string{"--admin-password", "hunter2"}, nil, []string{
			"nestmtx: warning: --admin-password is visible to every user of this machine in ps; use NESTMTX_ADMIN_PASSWORD_FILE (or the environment) instead"}},
		{"both flags", []string{"--admin-password=hunter2", "--mqtt-username=u", "--mqtt-password=hunter2"}, nil, []string{
			"nestmtx: warning: --mqtt-password is visible to every user of this machine in ps; use NESTMTX_MQTT_PASSWORD_FILE (or the environment) instead",
			"nestmtx: warning: --admin-password is visible to every user of this machine in ps; use NESTMTX_ADMIN_PASSWORD_FILE (or the environment) instead"}},
		{"environment", nil, map[string]string{"NESTMTX_ADMIN_PASSWORD": "hunter2", "MQTT_USER": "u", "MQTT_PASS": "hunter2"}, nil},
		{"yaml", []string{"--config", writeYAML(t, "admin_password: hunter2\n")}, nil, nil},
		{"file flags", []string{"--admin-password-file", file, "--mqtt-username=u", "--mqtt-password-file", file}, nil, nil},
		// An empty flag shows nothing in ps.
		{"empty flag", []string{"--admin-password="}, nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if _, err := Load(tt.args, env(tt.env), &out); err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if out.Len() == 0 {
				got = nil
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("messages:\n%s\nwant:\n%s", out.String(), strings.Join(tt.want, "\n"))
			}
			if strings.Contains(out.String(), "hunter2") {
				t.Error("a warning shows the password")
			}
		})
	}
}

func TestRedactedKeepsPasswordFiles(t *testing.T) {
	admin, mqtt := writeSecret(t, "admin-secret\n"), writeSecret(t, "mqtt-secret\n")
	c := mustLoad(t, nil, map[string]string{
		"NESTMTX_ADMIN_PASSWORD_FILE": admin, "NESTMTX_MQTT_PASSWORD_FILE": mqtt, "NESTMTX_MQTT_USERNAME": "u",
	})
	r := c.Redacted()
	if r.AdminPassword != "***" || r.MQTTPassword != "***" {
		t.Errorf("passwords from files not redacted: %q %q", r.AdminPassword, r.MQTTPassword)
	}
	if r.AdminPasswordFile != admin || r.MQTTPasswordFile != mqtt {
		t.Errorf("file paths redacted: %q %q", r.AdminPasswordFile, r.MQTTPasswordFile)
	}
	if strings.Contains(fmtConfig(r), "admin-secret") || strings.Contains(fmtConfig(r), "mqtt-secret") {
		t.Errorf("redacted copy still holds a password: %s", fmtConfig(r))
	}
}

func TestLoadOffline(t *testing.T) {
	e := map[string]string{
		"NESTMTX_DATA_DIR":            "/var/lib/nestmtx",
		"NESTMTX_MQTT_USERNAME":       "u", // a daemon-only mistake
		"NESTMTX_ADMIN_PASSWORD_FILE": filepath.Join(t.TempDir(), "readable-only-by-the-service"),
		"NESTMTX_RTSP_ADDRESS":        ":2000", // clashes with http_address
	}
	if _, err := Load(nil, env(e), nil); err == nil {
		t.Fatal("Load accepted the daemon-only mistakes")
	}
	c, err := LoadOffline(nil, env(e), nil)
	if err != nil {
		t.Fatalf("LoadOffline: %v", err)
	}
	if c.DataDir != "/var/lib/nestmtx" || c.AdminPassword != "" {
		t.Errorf("DataDir=%q AdminPassword=%q", c.DataDir, c.AdminPassword)
	}
	path := writeYAML(t, "data_dir: /from-yaml\n")
	if c, err := LoadOffline([]string{"--config", path}, nil, nil); err != nil || c.DataDir != "/from-yaml" {
		t.Errorf("LoadOffline with a file: %q, %v", c.DataDir, err)
	}
	// Each value is still checked on its own.
	_, err = LoadOffline([]string{"--data-dir="}, nil, nil)
	checkErr(t, err, "config: --data-dir: ", "must not be empty")
}
