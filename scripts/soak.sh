#!/usr/bin/env bash
# Soak test, not run in CI: builds the daemon and cmd/nestmtx-soak, then runs
# the daemon for [duration] (default 1h) against an in-process simulated
# Google with injected faults and readers that come and go, printing a line a
# minute and a summary. Exits non-zero when an invariant broke.
# Usage: scripts/soak.sh [duration] [nestmtx-soak flags...]   (e.g. scripts/soak.sh 3m)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-1h}
if [ $# -gt 0 ]; then shift; fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/nestmtx-soak.XXXXXX")
log=$dir/soak.log
go build -o "$dir/nestmtx" ./cmd/nestmtx
go build -o "$dir/nestmtx-soak" ./cmd/nestmtx-soak
echo "soak: duration $duration, log $log (daemon log, incidents.log and data alongside)"
set +e
"$dir/nestmtx-soak" --daemon "$dir/nestmtx" --duration "$duration" --work-dir "$dir" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
echo "soak: exit code $rc; log $log"
exit "$rc"
