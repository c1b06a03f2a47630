// Validation: the per-value validators, and the checks across keys.

package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

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

// corsOrigins accepts a comma-separated list of browser origins, each an
// http or https scheme and a host (with an optional port) and nothing
// more, as the Origin header carries them. "*" is refused: the API takes
// bearer tokens, and a page from anywhere should not be able to use one.
func corsOrigins(v string) error {
	for _, o := range CORSOrigins(v) {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("%q is not an origin like https://ha.example:8123 (\"*\" is not allowed)", o)
		}
	}
	return nil
}

// CORSOrigins splits the http_cors_origins setting into its origins,
// without trailing slashes.
func CORSOrigins(v string) []string {
	var out []string
	for _, o := range strings.Split(v, ",") {
		if o = strings.TrimSuffix(strings.TrimSpace(o), "/"); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// optionalListenAddress accepts "" (none) or a listen address.
func optionalListenAddress(v string) error {
	if v == "" {
		return nil
	}
	return listenAddress(v)
}
