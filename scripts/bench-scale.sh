#!/usr/bin/env bash
# How the relay scales (GitHub issue 15): the same 1080p30 ~4.2 Mbit/s camera
# read by 10, 50, 100, 200 and 300 RTSP readers, then 8 cameras × 25
# readers, each configuration with fresh `nestmtx simulate` and `nestmtx
# serve` processes (a scripts/bench-relay.sh run each). In every run the
# first reader of each camera starts its stream, the rest join together
# after a baseline with the first readers alone, and the daemon is measured
# over a window. It prints one markdown table (a row per configuration:
# daemon CPU and CPU per delivered MB, RSS and RSS per reader, the GC's
# share of the CPU, the joiners' time to their first packet and first IDR,
# the readers' own CPU, dropped readers, the least reader's share), the
# machine, and the targets, each met or missed; a miss does not fail the
# run (a small machine is noisy), a run that fails is a row saying so.
#
# The readers run in one process on the same cores as the daemon: their
# CPU is measured and shown rather than kept apart.
#
# Usage: scripts/bench-scale.sh [options] [nestmtx-relaybench flags...]
#   --readers "N ..."  reader counts of the one-camera runs (default "10 50 100 200 300");
#                      "" runs none
#   --skip-cameras     leave out the 8 cameras × 25 readers run
#   --cameras C --per-camera R
#                      the many-camera run (default 8 and 25)
#   --window D         measured window of each run (default 15s)
#   --warmup D         warm-up between the joins and the window (default 5s)
#   --baseline D       the first readers alone before the joins (default 5s)
# e.g. scripts/bench-scale.sh --readers "50 200" --skip-cameras --window 10s
# The table is also written to bin/bench-relay/scale-table.md, each run's
# full report to bin/bench-relay/scale-<cameras>x<readers>.log and its daemon
# CPU profile to bin/bench-relay/scale-<cameras>x<readers>-1.pprof. The
# environment of scripts/bench-relay.sh applies (CLIP_SECONDS, DAEMON_ENV …).
set -euo pipefail
cd "$(dirname "$0")/.."

readers="10 50 100 200 300"
skip_cameras=0
cameras=8
per_camera=25
window=15s
warmup=5s
baseline=5s
extra=()
# The command line as it could be typed again (printed with the table).
cmdline="scripts/bench-scale.sh"
for a in "$@"; do
  if [[ $a =~ ^[A-Za-z0-9_./:=,+-]+$ ]]; then cmdline+=" $a"; else cmdline+=" '${a//\'/\'\\\'\'}'"; fi
done
while [ $# -gt 0 ]; do
  case $1 in
    --readers) readers=$2; shift 2 ;;
    --skip-cameras) skip_cameras=1; shift ;;
    --cameras) cameras=$2; shift 2 ;;
    --per-camera) per_camera=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done

# Before anything of ours runs: what else the machine was doing.
load=$(cut -d' ' -f1-3 /proc/loadavg)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p bin/bench-relay
go build -trimpath -o "$work/nestmtx-relaybench" ./cmd/nestmtx-relaybench

results=$work/results.txt
: >"$results"
# run_config CAMERAS READERS_PER_CAMERA: one bench-relay.sh run. Dropped
# readers, failed joins and unequal readers are counted in its result, not
# fatal, so that the table reports them.
run_config() {
  local cams=$1 per=$2
  local log=bin/bench-relay/scale-${cams}x${per}.log
  echo "bench-scale: $cams camera(s) × $per readers" >&2
  if PPROF_NAME=scale-${cams}x${per} scripts/bench-relay.sh --runs 1 --cameras "$cams" --readers "$per" \
      --duration "$window" --warmup "$warmup" --baseline "$baseline" --allow-disconnects --min-reader-ratio 0 \
      "${extra[@]}" >"$log" 2>&1; then
    grep '^relaybench-result ' "$log" >>"$results"
    grep -E '^(cold start|joins|cost|daemon GC|context):|^ +from PLAY' "$log" | sed 's/^/  /' >&2 || true
  else
    echo "relaybench-failed cameras=$cams readers_per_camera=$per" >>"$results"
    echo "bench-scale: the run of $cams camera(s) × $per readers failed; its log ($log) ends:" >&2
    tail -n 15 "$log" >&2
  fi
}

for n in $readers; do
  run_config 1 "$n"
done
[ "$skip_cameras" = 1 ] || run_config "$cameras" "$per_camera"

if ! [ -s "$results" ]; then
  echo "bench-scale: nothing was run" >&2
  exit 1
fi
echo
"$work/nestmtx-relaybench" table --command "$cmdline" --load "$load" <"$results" | tee bin/bench-relay/scale-table.md
