// Secrets read from files (the *_file settings).

package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

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
