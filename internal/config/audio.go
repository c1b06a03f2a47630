// Camera audio modes, shared with the API, which validates a camera's own
// setting against the same list.

package config

import "slices"

// The audio modes a camera can be served in.
const (
	// AudioOpus passes the camera's audio through as it comes: Opus from
	// WebRTC cameras, AAC from RTSP cameras.
	AudioOpus = "opus"
	// AudioAAC transcodes WebRTC cameras' Opus to AAC (with ffmpeg); RTSP
	// cameras' AAC passes through.
	AudioAAC = "aac"
	// AudioNone serves video only.
	AudioNone = "none"
)

// AudioModes lists the valid audio modes, in documentation order. Each
// call returns a new slice, so callers may keep or change it.
func AudioModes() []string { return []string{AudioOpus, AudioAAC, AudioNone} }

// ValidAudioMode reports whether s is one of AudioModes, exactly (lower
// case): callers normalise input before asking if they accept any case.
func ValidAudioMode(s string) bool { return slices.Contains(AudioModes(), s) }
