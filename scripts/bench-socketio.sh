#!/usr/bin/env bash
# Measures the Socket.IO API: starts a daemon with a fresh data dir, logs in
# over MQTT (mosquitto_rr) for a token, and runs
# internal/app/testdata/socketio/bench.js (the real npm socket.io-client)
# against it: closed-loop `request`s on one WebSocket connection, at each
# in-flight count, printing round trips a second and latency percentiles.
# Usage: scripts/bench-socketio.sh [in-flight counts...]   (default: 16 64)
# Environment: BENCH_REQUEST (JSON, default cameras list), BENCH_SECONDS
# (default 10), BENCH_CONNECTIONS (default 1), BENCH_TRANSPORT (websocket
# or polling).
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/nestmtx ./cmd/nestmtx
dir=internal/app/testdata/socketio
if [ ! -f "$dir/node_modules/socket.io-client/package.json" ]; then
  npm install --prefix "$dir" --no-save --no-audit --no-fund --no-package-lock --loglevel=error socket.io-client@4.8.4 >/dev/null
fi

free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
data=$(mktemp -d)
mqtt=$(free)
http=$(free)
udp=$(( $(free) / 2 * 2 ))
NESTMTX_DATA_DIR=$data NESTMTX_ADMIN_PASSWORD=bench-password \
NESTMTX_MQTT_LISTEN=127.0.0.1:$mqtt NESTMTX_HTTP_ADDRESS=127.0.0.1:$http \
NESTMTX_RTSP_ADDRESS=127.0.0.1:0 NESTMTX_RTSP_UDP_ADDRESS=127.0.0.1:$udp NESTMTX_LOG_LEVEL=warn bin/nestmtx serve &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$mqtt) 2>/dev/null && break
  sleep 0.1
done
login=$(mosquitto_rr -h 127.0.0.1 -p "$mqtt" -u admin -P bench-password -t nestmtx/requests -e nestmtx/responses/bench-login -W 10 \
  -m '{"command":"create","module":"auth","requestId":"bench-login","payload":{"username":"admin","password":"bench-password"}}')
token=$(node -e 'console.log(JSON.parse(process.argv[1]).bearer)' "$login")

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
request=${BENCH_REQUEST:-'{"command":"list","module":"cameras"}'}
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(16 64)
for n in "${counts[@]}"; do
  node "$dir/bench.js" "{\"url\":\"http://127.0.0.1:$http\",\"token\":\"$token\",\"inflight\":$n,
    \"connections\":${BENCH_CONNECTIONS:-1},\"seconds\":${BENCH_SECONDS:-10},\"transport\":\"${BENCH_TRANSPORT:-websocket}\",
    \"request\":$request}"
done
