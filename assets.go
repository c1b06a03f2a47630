// Package nestmtx holds the files the binary carries with it: the clip the
// simulated cameras of the demo play (see testdata/README.md), so that
// `nestmtx serve --demo` works wherever the binary is installed.
package nestmtx

import _ "embed"

// DemoClipH264 is a 10 s 640x360 25 fps H.264 Annex-B stream, GOP 25.
//
//go:embed testdata/clip.h264
var DemoClipH264 []byte

// DemoClipAAC is the matching 48 kHz AAC-LC ADTS stream.
//
//go:embed testdata/clip.aac
var DemoClipAAC []byte

// DemoClipOpus is the audio of the demo's WebRTC cameras: a 10 s 440 Hz
// tone, Opus 48 kHz mono, 20 ms frames, in Ogg.
//
//go:embed testdata/clip.opus
var DemoClipOpus []byte
