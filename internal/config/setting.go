// One setting: its constructors by value type and its modifiers.

package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

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
