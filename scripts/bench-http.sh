#!/usr/bin/env bash
# Measures the HTTP API: starts a daemon (its demo, so that GET /api/cameras
# lists two cameras) with a fresh data dir, runs nestmtx-load -http against
# it at 16 and at 64 requests in flight: an authenticated GET /api/cameras
# against GET /healthz on the same server, with their ratio. Stops the
# daemon.
# Usage: scripts/bench-http.sh [nestmtx-load flags...]   (e.g. -duration 5s)
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/nestmtx ./cmd/nestmtx
go build -o bin/nestmtx-load ./cmd/nestmtx-load

data=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(free_port)
mqtt=$(free_port)
NESTMTX_DATA_DIR=$data NESTMTX_ADMIN_PASSWORD=bench-password \
NESTMTX_MQTT_LISTEN=127.0.0.1:$mqtt NESTMTX_HTTP_ADDRESS=127.0.0.1:$http \
NESTMTX_RTSP_ADDRESS=127.0.0.1:0 NESTMTX_LOG_LEVEL=warn bin/nestmtx serve --demo --rtsp-udp-address= &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  kill -0 $daemon 2>/dev/null || { echo "the daemon exited" >&2; exit 1; }
  curl -fsS "http://127.0.0.1:$http/api/version" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for c in 16 64; do
  bin/nestmtx-load -http 127.0.0.1:$http -password bench-password -concurrency $c "$@"
done
