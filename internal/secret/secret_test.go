package secret

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateKeyCreatesAndReuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "data")
	path := filepath.Join(dir, "secret.key")

	b1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode = %v, want 0600", st.Mode().Perm())
	}
	if st.Size() != KeySize {
		t.Fatalf("key size = %d, want %d", st.Size(), KeySize)
	}
	key1, _ := os.ReadFile(path)

	ct := b1.Seal([]byte("hello"))
	b2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	key2, _ := os.ReadFile(path)
	if !bytes.Equal(key1, key2) {
		t.Fatal("key file was rewritten on second load")
	}
	pt, err := b2.Open(ct)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("reloaded key cannot open: %q %v", pt, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("leftover files in key dir: %v", entries)
	}
}

func TestLoadOrCreateKeyTightensMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret.key")
	if err := os.WriteFile(path, bytes.Repeat([]byte{7}, KeySize), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // umask may have narrowed it
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(path); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", st.Mode().Perm())
	}
}

func TestLoadOrCreateKeyWrongSize(t *testing.T) {
	for _, size := range []int{0, 16, KeySize + 1} {
		path := filepath.Join(t.TempDir(), "secret.key")
		orig := bytes.Repeat([]byte{1}, size)
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateKey(path)
		if err == nil || !strings.Contains(err.Error(), "wrong size") {
			t.Fatalf("size %d: err = %v, want wrong size error", size, err)
		}
		got, _ := os.ReadFile(path)
		if !bytes.Equal(got, orig) {
			t.Fatalf("size %d: key file was modified", size)
		}
	}
}

func TestSealOpen(t *testing.T) {
	b, err := New(bytes.Repeat([]byte{3}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("refresh-token-value")
	c1, c2 := b.Seal(msg), b.Seal(msg)
	if bytes.Equal(c1, c2) {
		t.Fatal("sealing twice gave identical output; nonce reused")
	}
	if bytes.Contains(c1, msg) {
		t.Fatal("ciphertext contains plaintext")
	}
	if len(c1) != nonceSize+len(msg)+16 {
		t.Fatalf("ciphertext length %d", len(c1))
	}
	pt, err := b.Open(c1)
	if err != nil || !bytes.Equal(pt, msg) {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	empty, err := b.Open(b.Seal(nil))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty round trip = %q, %v", empty, err)
	}

	tampered := bytes.Clone(c1)
	tampered[len(tampered)-1] ^= 1
	if _, err := b.Open(tampered); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("tampered: err = %v", err)
	}
	if _, err := b.Open(c1[:10]); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("truncated: err = %v", err)
	}
	other, _ := New(bytes.Repeat([]byte{4}, KeySize))
	if _, err := other.Open(c1); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong key: err = %v", err)
	}
}

func TestNewRejectsBadKey(t *testing.T) {
	if _, err := New(make([]byte, 16)); err == nil {
		t.Fatal("16-byte key accepted")
	}
}
