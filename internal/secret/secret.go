// Package secret encrypts small values (OAuth secrets and tokens) at rest with
// AES-256-GCM under a key kept in its own file, so a copy of the database alone
// does not reveal them.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the length of the key file in bytes (AES-256).
const KeySize = 32

const nonceSize = 12

// ErrDecrypt is returned by Open when the ciphertext is truncated, was
// tampered with, or was sealed under another key.
var ErrDecrypt = errors.New("secret: cannot decrypt value")

// Box seals and opens values with one key. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New returns a Box for a KeySize-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret: key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// LoadOrCreateKey reads the key at path, creating it with fresh random bytes
// if it does not exist. A key file of the wrong size is an error rather than
// being replaced: replacing it would make every stored secret unreadable.
func LoadOrCreateKey(path string) (*Box, error) {
	key, err := readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createKey(path)
	}
	if err != nil {
		return nil, err
	}
	return New(key)
}

func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("secret key %s is not a regular file", path)
	}
	if st.Mode().Perm()&^0o600 != 0 {
		// Someone (a backup restore, a copy with cp) widened the mode; the key
		// is only useful if other local users cannot read it.
		if err := f.Chmod(0o600); err != nil {
			return nil, fmt.Errorf("restrict permissions of secret key %s: %w", path, err)
		}
	}
	// Read one byte past the expected size to detect oversized files.
	key, err := io.ReadAll(io.LimitReader(f, KeySize+1))
	if err != nil {
		return nil, fmt.Errorf("read secret key %s: %w", path, err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret key %s has the wrong size (want %d bytes); refusing to replace it because secrets encrypted with it would be lost", path, KeySize)
	}
	return key, nil
}

// createKey writes through a temp file and rename so a crash never leaves a
// short key file behind, which the next start would then refuse.
func createKey(path string) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create secret key directory: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	// CreateTemp opens with mode 0600, so the key is never briefly readable.
	tmp, err := os.CreateTemp(dir, ".secret.key-*")
	if err != nil {
		return nil, fmt.Errorf("create secret key: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write secret key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write secret key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write secret key: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("install secret key: %w", err)
	}
	// Persist the directory entry too: losing the key after secrets were
	// written with it would lose those secrets.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return key, nil
}

// Seal encrypts plaintext and returns nonce||ciphertext||tag. Each call uses
// a fresh random nonce, so equal plaintexts give unrelated outputs.
func (b *Box) Seal(plaintext []byte) []byte {
	out := make([]byte, nonceSize, nonceSize+len(plaintext)+b.aead.Overhead())
	// crypto/rand.Read never returns an error; it aborts the program instead.
	_, _ = rand.Read(out)
	return b.aead.Seal(out, out[:nonceSize], plaintext, nil)
}

// Open reverses Seal.
func (b *Box) Open(ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < nonceSize+b.aead.Overhead() {
		return nil, ErrDecrypt
	}
	pt, err := b.aead.Open(nil, ciphertext[:nonceSize], ciphertext[nonceSize:], nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}
