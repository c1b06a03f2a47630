// Package password hashes and verifies login passwords with argon2id,
// encoded as PHC strings so the parameters travel with each hash and can be
// raised later without invalidating existing users.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Parameters for new hashes: one of OWASP's equivalent argon2id settings
// (7 MiB, 5 passes, 1 lane) rather than its 19 MiB baseline. The strength is
// the same; the memory is what a NAS daemon whose whole budget is 40 MB can
// spare. Older hashes carry their own parameters and still verify.
const (
	memoryKiB = 7 * 1024
	passes    = 5
	lanes     = 1
	saltLen   = 16
	keyLen    = 32
)

// Bounds applied when parsing. Hashes normally come from our own database, but
// an unbounded m or t read from a corrupted or tampered record would let one
// login attempt exhaust the NAS's memory or CPU.
const (
	maxMemoryKiB = 512 * 1024
	maxPasses    = 64
	maxLanes     = 64
	minSaltLen   = 8
	maxSaltLen   = 64
	minKeyLen    = 16
	maxKeyLen    = 64
)

// ErrMalformed is wrapped by Verify's error when the encoded hash cannot be
// parsed or uses parameters outside the accepted bounds.
var ErrMalformed = errors.New("malformed password hash")

var b64 = base64.RawStdEncoding.Strict()

type params struct {
	memory uint32
	passes uint32
	lanes  uint8
	salt   []byte
	key    []byte
}

// one admits a single argon2 computation at a time: concurrent logins must
// not add up their memory (each costs memoryKiB) on a small machine.
var one = make(chan struct{}, 1)

// Hash returns a PHC-encoded argon2id hash of pw with a fresh random salt.
func Hash(pw string) (string, error) {
	one <- struct{}{}
	defer func() { <-one }()
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, passes, memoryKiB, lanes, keyLen)
	return encode(params{memory: memoryKiB, passes: passes, lanes: lanes, salt: salt, key: key}), nil
}

// Verify reports whether pw matches encoded. A mismatch is (false, nil); an
// error means the encoding itself is unusable.
func Verify(pw, encoded string) (bool, error) {
	one <- struct{}{}
	defer func() { <-one }()
	p, err := decode(encoded)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(pw), p.salt, p.passes, p.memory, p.lanes, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(got, p.key) == 1, nil
}

func encode(p params) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.passes, p.lanes, b64.EncodeToString(p.salt), b64.EncodeToString(p.key))
}

func decode(s string) (params, error) {
	var p params
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return p, fmt.Errorf("%w: want 5 '$'-separated fields", ErrMalformed)
	}
	if parts[1] != "argon2id" {
		return p, fmt.Errorf("%w: unsupported algorithm %q", ErrMalformed, parts[1])
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, fmt.Errorf("%w: unsupported version %q", ErrMalformed, parts[2])
	}

	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return p, fmt.Errorf("%w: want parameters m,t,p", ErrMalformed)
	}
	m, err := param(kv[0], "m", maxMemoryKiB)
	if err != nil {
		return p, err
	}
	t, err := param(kv[1], "t", maxPasses)
	if err != nil {
		return p, err
	}
	l, err := param(kv[2], "p", maxLanes)
	if err != nil {
		return p, err
	}
	// argon2 requires at least 8 KiB per lane.
	if m < 8*l {
		return p, fmt.Errorf("%w: m=%d too small for p=%d", ErrMalformed, m, l)
	}

	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return p, fmt.Errorf("%w: bad salt", ErrMalformed)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) < minKeyLen || len(key) > maxKeyLen {
		return p, fmt.Errorf("%w: bad hash", ErrMalformed)
	}
	return params{memory: uint32(m), passes: uint32(t), lanes: uint8(l), salt: salt, key: key}, nil
}

func param(s, name string, max uint64) (uint64, error) {
	v, ok := strings.CutPrefix(s, name+"=")
	if !ok {
		return 0, fmt.Errorf("%w: want parameter %s", ErrMalformed, name)
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n < 1 || n > max {
		return 0, fmt.Errorf("%w: parameter %s out of range", ErrMalformed, name)
	}
	return n, nil
}

// The lengths a password may have, in characters: one rule for the API
// and the offline reset, so that a password set by one is accepted by the
// other.
const (
	MinLength = 6
	MaxLength = 1024
)

// Generate returns a random password (144 bits, URL-safe base64) for an
// account nobody chose one for yet.
func Generate() string {
	buf := make([]byte, 18)
	_, _ = rand.Read(buf) // never fails; crypto/rand aborts the program instead
	return base64.RawURLEncoding.EncodeToString(buf)
}
