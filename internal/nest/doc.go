// Package nest is a client for Google's Smart Device Management API and
// the OAuth flow in front of it. It knows nothing of RTSP serving, MQTT or
// the store: it hands out stream URLs, keeps one credential's cameras
// jointly under Google's quotas, and classifies Google's failures so the
// supervisor can decide between retrying, regenerating and asking the user
// to re-authorize.
//
// Everything that leaves this package in an error string or a String/
// LogValue method is free of tokens, secrets and auth= values: those
// strings end up in logs and MQTT events.
package nest
