package cmdline

import (
	"slices"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"", nil},
		{"   \t\n", nil},
		{"ffmpeg -i rtsp://localhost:$RTSP_PORT/$MTX_PATH", []string{"ffmpeg", "-i", "rtsp://localhost:$RTSP_PORT/$MTX_PATH"}},
		{`sh -c 'echo "$MTX_PATH" > /tmp/x'`, []string{"sh", "-c", `echo "$MTX_PATH" > /tmp/x`}},
		{`curl -d "path=\"$MTX_PATH\"" \\host`, []string{"curl", "-d", `path="$MTX_PATH"`, `\host`}},
		{`a "b\c" 'd\e' f\ g`, []string{"a", `b\c`, `d\e`, "f g"}},
		{`a '' "" b`, []string{"a", "", "", "b"}},
		{"a \\\n b", []string{"a", "b"}},
		{`x"y"'z'w`, []string{"xyzw"}},
		{`"a\$b\` + "`" + `"`, []string{"a$b`"}},
	} {
		got, err := Split(tc.line)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Split(%q) = %q, %v; want %q", tc.line, got, err, tc.want)
		}
	}
	for _, bad := range []string{`a 'b`, `a "b`, `a \`, `"a\"`} {
		if _, err := Split(bad); err == nil {
			t.Errorf("Split(%q) accepted", bad)
		}
	}
	if err := Check(`'' x`); err == nil {
		t.Error("an empty program name passed Check")
	}
	if err := Check(""); err != nil {
		t.Errorf("Check(\"\") = %v", err)
	}
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{`a "b c" 'd'`, `\`, `"\"`, "a\\\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		words, err := Split(line)
		if err != nil {
			return
		}
		// Quoting each word in single quotes gives the same words back.
		var re string
		for _, w := range words {
			re += "'" + strings.ReplaceAll(w, "'", `'\''`) + "' "
		}
		again, err := Split(re)
		if err != nil || !slices.Equal(again, words) {
			t.Fatalf("round trip of %q: %q -> %q, %v", line, words, again, err)
		}
	})
}
