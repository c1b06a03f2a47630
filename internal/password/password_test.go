package password

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestHashFormat(t *testing.T) {
	h, err := Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^\$argon2id\$v=19\$m=7168,t=5,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !re.MatchString(h) {
		t.Fatalf("unexpected encoding %q", h)
	}
	h2, err := Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if h == h2 {
		t.Fatal("two hashes of the same password are equal; salt is not random")
	}
}

func TestVerify(t *testing.T) {
	h, err := Hash("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{
		{"s3cret", true},
		{"s3cret ", false},
		{"S3cret", false},
		{"", false},
	} {
		ok, err := Verify(tc.pw, h)
		if err != nil {
			t.Fatalf("Verify(%q): %v", tc.pw, err)
		}
		if ok != tc.want {
			t.Errorf("Verify(%q) = %v, want %v", tc.pw, ok, tc.want)
		}
	}
}

// Params must come from the string, not from the package constants, so hashes
// made with other costs keep verifying after the defaults change.
func TestVerifyUsesEncodedParams(t *testing.T) {
	salt := []byte("somesalt")
	key := argon2.IDKey([]byte("pw"), salt, 3, 64, 2, 24)
	enc := encode(params{memory: 64, passes: 3, lanes: 2, salt: salt, key: key})
	if ok, err := Verify("pw", enc); err != nil || !ok {
		t.Fatalf("hash with non-default params: ok=%v err=%v", ok, err)
	}
	// Same salt and key but a different cost must not verify.
	altered := strings.Replace(enc, "t=3", "t=4", 1)
	if ok, err := Verify("pw", altered); err != nil || ok {
		t.Fatalf("altered params still verified: ok=%v err=%v", ok, err)
	}
}

func TestVerifyMalformed(t *testing.T) {
	good, err := Hash("pw")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$")
	salt, key := parts[4], parts[5]
	for _, enc := range []string{
		"",
		"plain",
		"$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=16$m=19456,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2$" + salt + "$" + key,
		"$argon2id$v=19$t=2,m=19456,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=0,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=0,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2,p=0$" + salt + "$" + key,
		"$argon2id$v=19$m=99999999,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=-1,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=8,t=2,p=4$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2,p=1$!!!$" + key,
		"$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$",
		"$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key + "$",
		"x$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key,
	} {
		ok, err := Verify("pw", enc)
		if ok || !errors.Is(err, ErrMalformed) {
			t.Errorf("Verify(%q) = %v, %v; want ErrMalformed", enc, ok, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	good, err := Hash("pw")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("pw", good)
	f.Add("pw", "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("", "$argon2id$v=19$m=,t=,p=$$")
	f.Add("x", "$$$$$")
	f.Fuzz(func(t *testing.T, pw, enc string) {
		p, err := decode(enc)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decode error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if p.memory < 8*uint32(p.lanes) || p.passes == 0 || p.lanes == 0 || len(p.salt) < minSaltLen || len(p.key) < minKeyLen {
			t.Fatalf("decode accepted out-of-range params: %+v", p)
		}
		// Running argon2 on every accepted input would make fuzzing crawl;
		// the parser is what sees hostile input, so only cheap costs run it.
		if p.memory > 1024 || p.passes > 2 {
			return
		}
		if _, err := Verify(pw, enc); err != nil {
			t.Fatalf("decode accepted %q but Verify failed: %v", enc, err)
		}
	})
}
