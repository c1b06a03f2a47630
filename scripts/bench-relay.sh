#!/usr/bin/env bash
# Measures the relay: one 1080p30 H.264 + AAC stream of about 4 Mbit/s read by
# 50 RTSP readers over TCP on loopback. It generates the clip with ffmpeg
# into bin/bench-relay/ (nothing is committed; later runs reuse it), builds
# nestmtx and nestmtx-relaybench, starts `nestmtx simulate --clip-dir` and
# `nestmtx serve` as separate processes (so the simulator's CPU is not the
# daemon's), and runs nestmtx-relaybench, which authorizes a credential
# over the MQTT API, serves the first RTSP camera (or --camera's, or the
# first --cameras N), starts each camera with one reader, has the other
# readers join together and measures the daemon's CPU time (and its ffmpeg
# children's) per delivered MB, its RSS, the GC's share of its CPU (from
# its /metrics, opened with a token made for the run), the joiners' time to
# their first packet and IDR, and the packets per second the readers
# receive. scripts/bench-scale.sh runs it for several reader counts.
#
# Usage: scripts/bench-relay.sh [--runs N] [nestmtx-relaybench flags...]
#   --runs N   repeat the whole measurement N times, each with fresh
#              processes, and print the medians (default 1)
# Among the flags passed on: --readers N (50 per camera), --cameras N (1;
# the simulator then serves max(N, 2) RTSP cameras), --duration, --warmup,
# --baseline, --camera NAME (the camera to serve; "Living Room" is the
# simulator's WebRTC camera, which plays the clip's video with a built-in
# Opus tone), --audio opus|aac|none|default (the camera's audio; aac has
# the daemon transcode a WebRTC camera's Opus with an ffmpeg child, whose
# CPU is reported apart and in the total), e.g.
#   scripts/bench-relay.sh --runs 1 --camera "Living Room" --readers 10 --audio aac
# Environment: CLIP_SECONDS (14), VIDEO_BITRATE (4M), FRESH_CLIP=1 makes
# the clip again rather than reusing bin/bench-relay's, KEEP=1 keeps the
# work directory (with the daemon's log), DAEMON_ENV adds variables to the
# daemon's environment only (e.g. DAEMON_ENV='GODEBUG=gctrace=1 GOGC=50'),
# DAEMON_BIN runs that daemon binary instead of this tree's (before/after),
# PPROF_NAME names the daemon CPU profiles (--pprof, skipped when the daemon
# exposes none), written to bin/bench-relay/<PPROF_NAME>-<run>.pprof
# (default daemon-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."

runs=1
cameras=1
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --runs=*) runs=${1#--runs=}; shift ;;
    # Passed on, and read here too: the simulator must serve that many.
    --cameras) cameras=$2; args+=("$1" "$2"); shift 2 ;;
    --cameras=*) cameras=${1#--cameras=}; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
# Two RTSP cameras is the simulator's default set; more are added to it.
sim_cameras=()
[ "$cameras" -le 2 ] || sim_cameras=(--rtsp-cameras "$cameras")
cmdline="scripts/bench-relay.sh --runs $runs"
[ ${#args[@]} -eq 0 ] || cmdline+=$(printf ' %q' "${args[@]}")

for tool in ffmpeg go python3; do
  command -v $tool >/dev/null || { echo "bench-relay: $tool is required" >&2; exit 1; }
done

work=$(mktemp -d)
mkdir -p bin/bench-relay
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "bench-relay: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The clip. nestsim reads clip.h264 whole through mediacommon's Annex-B
# parser, which refuses more than 8 MiB: at 4 Mbit/s that is about 16 s, so
# the default is 14 s (7 GOPs of 60 frames, so the loop restarts on a GOP
# boundary).
secs=${CLIP_SECONDS:-14}
vrate=${VIDEO_BITRATE:-4M}
# The clip is kept in bin/bench-relay/ (make clean removes it) and reused by
# later runs with the same length and bitrate: generating it takes most of a
# minute on a small machine. FRESH_CLIP=1 makes it again.
clip=$PWD/bin/bench-relay/clip-${secs}s-${vrate}
if [ "${FRESH_CLIP:-0}" != 1 ] && [ -s "$clip/clip.h264" ] && [ -s "$clip/clip.aac" ]; then
  echo "bench-relay: reusing the ${secs} s 1920x1080@30 clip in $clip" >&2
else
  mkdir -p "$work/clip"
  echo "bench-relay: generating a ${secs} s 1920x1080@30 H.264 (${vrate}, GOP 60) + AAC clip" >&2
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i testsrc2=size=1920x1080:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
    -map 0:v -t "$secs" -c:v libx264 -profile:v high -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -bf 0 \
    -x264-params repeat-headers=1 -b:v "$vrate" -maxrate "$vrate" -bufsize 8M -pix_fmt yuv420p -f h264 "$work/clip/clip.h264" \
    -map 1:a -t "$secs" -c:a aac -b:a 64k -f adts "$work/clip/clip.aac"
  size=$(stat -c %s "$work/clip/clip.h264")
  if [ "$size" -gt 8388608 ]; then
    echo "bench-relay: clip.h264 is $size bytes, over the simulator's 8 MiB limit; lower CLIP_SECONDS" >&2
    exit 1
  fi
  rm -rf "$clip"
  mkdir -p "$(dirname "$clip")"
  mv "$work/clip" "$clip"
fi

echo "bench-relay: building" >&2
# The daemon is built as a release is (scripts/release.sh): static, no
# libc mapped in, no symbol tables.
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/nestmtx" ./cmd/nestmtx
# DAEMON_BIN measures another build of the daemon (an older release, say)
# against this tree's simulator and tool, for a before/after comparison.
daemon_bin=$work/nestmtx
if [ -n "${DAEMON_BIN:-}" ]; then
  daemon_bin=$(realpath "$DAEMON_BIN")
  echo "bench-relay: measuring the daemon $daemon_bin" >&2
fi
go build -trimpath -o "$work/nestmtx-relaybench" ./cmd/nestmtx-relaybench

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() {
  for _ in $(seq 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-relay: nothing listens on port $1" >&2
  return 1
}

results=()
for run in $(seq "$runs"); do
  echo "bench-relay: run $run of $runs" >&2
  sim_http=$(freeport); sim_rtsps=$(freeport)
  "$work/nestmtx" simulate --clip-dir "$clip" --http "127.0.0.1:$sim_http" --rtsps "127.0.0.1:$sim_rtsps" \
    --ca-file "$work/sim-ca.pem" --stream-ttl 10m "${sim_cameras[@]}" >"$work/sim.out" 2>"$work/sim.log" &
  sim=$!
  pids+=("$sim")
  for _ in $(seq 200); do grep -qs '^# payload: ' "$work/sim.out" && break; sleep 0.1; done
  payload=$(sed -n 's/^# payload: //p' "$work/sim.out")
  [ -n "$payload" ] || { echo "bench-relay: the simulator printed no banner" >&2; cat "$work/sim.log" >&2; exit 1; }
  grep '^NESTMTX_' "$work/sim.out" >"$work/sim.env"

  mqtt=$(freeport); http=$(freeport); rtsp=$(freeport)
  # A token for this run's /metrics (the GC's share of the daemon's CPU);
  # the tool reads it from its environment, so it is in no command line.
  metrics_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  rm -rf "$work/data"
  (
    set -a
    . "$work/sim.env"
    NESTMTX_METRICS_TOKEN=$metrics_token \
    NESTMTX_DATA_DIR=$work/data NESTMTX_ADMIN_PASSWORD=bench-password \
    NESTMTX_MQTT_LISTEN=127.0.0.1:$mqtt NESTMTX_HTTP_ADDRESS=127.0.0.1:$http \
    NESTMTX_RTSP_ADDRESS=127.0.0.1:$rtsp NESTMTX_LOG_LEVEL=warn NESTMTX_HTTP_PPROF=true
    # shellcheck disable=SC2086 # DAEMON_ENV is a list of NAME=value words
    [ -z "${DAEMON_ENV:-}" ] || export ${DAEMON_ENV}
    exec "$daemon_bin" serve --rtsp-udp-address=
  ) 2>"$work/daemon.log" &
  daemon=$!
  pids+=("$daemon")
  waitport "$mqtt"

  out="$work/result-$run.txt"
  if ! NESTMTX_ADMIN_PASSWORD=bench-password NESTMTX_METRICS_TOKEN=$metrics_token \
      "$work/nestmtx-relaybench" --pid "$daemon" --sim-pid "$sim" --clip-dir "$clip" \
      --broker "127.0.0.1:$mqtt" --http "127.0.0.1:$http" --rtsp "127.0.0.1:$rtsp" \
      --credential "$payload" --command "$cmdline" --metrics "http://127.0.0.1:$http/metrics" \
      --pprof "http://127.0.0.1:$http/debug/pprof/profile" --pprof-out "bin/bench-relay/${PPROF_NAME:-daemon-cpu}-$run.pprof" \
      "${args[@]}" | tee "$out"; then
    echo "bench-relay: run $run failed; daemon log:" >&2
    tail -n 30 "$work/daemon.log" >&2
    exit 1
  fi
  results+=("$(grep '^relaybench-result ' "$out")")

  kill "$daemon" "$sim" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  wait "$sim" 2>/dev/null || true
  pids=()
done

if [ "$runs" -gt 1 ]; then
  echo
  echo "== medians of $runs runs =="
  printf '%s\n' "${results[@]}" | python3 -c '
import sys, statistics
rows = [dict(kv.split("=", 1) for kv in line.split()[1:]) for line in sys.stdin if line.strip()]
for k in rows[0]:
    vals = [float(r[k]) for r in rows]
    print(f"{k:24} median {statistics.median(vals):10.3f}   runs: " + "  ".join(f"{v:g}" for v in vals))
'
fi
