#!/usr/bin/env bash
# Measures the MQTT API: starts a daemon on its embedded broker with a fresh
# data dir, runs nestmtx-load against it (and against a bare echo responder
# through the same broker), prints both and their ratio, stops the daemon.
# Usage: scripts/bench-api.sh [nestmtx-load flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/nestmtx ./cmd/nestmtx
go build -o bin/nestmtx-load ./cmd/nestmtx-load

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
NESTMTX_DATA_DIR=$data NESTMTX_ADMIN_PASSWORD=bench-password \
NESTMTX_MQTT_LISTEN=127.0.0.1:$port NESTMTX_HTTP_ADDRESS=127.0.0.1:$http \
NESTMTX_RTSP_ADDRESS=127.0.0.1:0 NESTMTX_LOG_LEVEL=warn bin/nestmtx serve &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
bin/nestmtx-load -broker 127.0.0.1:$port -password bench-password "$@"
