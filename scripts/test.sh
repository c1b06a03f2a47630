#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs the real
# parts the tests use (Mosquitto, its clients, ffmpeg), fetches the Go
# modules, then runs every test with the race detector and a short fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null    || need+=(mosquitto)
command -v mosquitto_rr >/dev/null || need+=(mosquitto-clients)
command -v ffmpeg >/dev/null       || need+=(ffmpeg)
command -v npm >/dev/null          || need+=(npm)
command -v systemd-analyze >/dev/null || need+=(systemd)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (apt-get install ${need[*]}); tests that need them fail in CI and skip elsewhere" >&2
  fi
fi

# The Socket.IO tests drive the real npm client, pinned, installed where
# they look for it (git-ignored).
if command -v npm >/dev/null; then
  npm install --prefix internal/app/testdata/socketio --no-save --no-audit --no-fund --no-package-lock \
    --loglevel=error socket.io-client@4.8.4 >/dev/null
  # The Dockerfile's linter (no container engine runs here).
  npm install --prefix deploy/testdata/dockerfile-utils --no-save --no-audit --no-fund --no-package-lock \
    --loglevel=error dockerfile-utils@0.16.3 >/dev/null
else
  echo "missing: npm (apt-get install npm); the Socket.IO tests fail in CI and skip elsewhere" >&2
fi

go mod download
unformatted=$(gofmt -l cmd internal deploy)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1
fi
go vet ./...
go test -race -count=1 -timeout 9m ./...
# A short fuzz of the request decoder on top of its seed corpus. Without
# -fuzzminimizetime 0x the workers spent most of the 15 s minimising the
# first new inputs they found (about 20k executions instead of 500k).
go test -run '^$' -fuzz FuzzDecodeRequest -fuzztime 15s -fuzzminimizetime 0x ./internal/api/
