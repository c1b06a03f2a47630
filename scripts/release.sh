#!/usr/bin/env bash
# Builds the release binaries (`make release` runs it): static
# (CGO_ENABLED=0: no libc, so one file runs on any Linux of its
# architecture, a NAS's included), with no build paths in them (-trimpath),
# stripped, and stamped with the version as `make build` stamps it. Writes
# OUT_DIR/nestmtx-<release>-linux-<arch> and OUT_DIR/SHA256SUMS, which
# `sha256sum -c SHA256SUMS` checks.
#
#   scripts/release.sh OUT_DIR
#
# Environment: RELEASE (required) and COMMIT, the version stamped in;
# TARGETS, a space-separated list of GOOS/GOARCH[/v<GOARM>] (default
# "linux/amd64 linux/arm64 linux/arm/v7"); GO (default go).
#
# The targets build at once, each its own `go build`. A cold build cache
# costs about 3 CPU-minutes per target; after that only the link runs
# (about 4 s each), whatever the version and wherever the clone is, since
# -trimpath keeps the checkout's path out of the cache keys.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: scripts/release.sh OUT_DIR}
: "${RELEASE:?RELEASE must be set (make release sets it from git describe)}"
COMMIT=${COMMIT:-unknown}
GO=${GO:-go}
TARGETS=${TARGETS:-linux/amd64 linux/arm64 linux/arm/v7}
case $RELEASE in
  */* | *' '* | '') echo "release.sh: RELEASE ($RELEASE) must not contain / or spaces" >&2; exit 2 ;;
esac

mkdir -p "$out"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

names=() pids=()
for target in $TARGETS; do
  IFS=/ read -r goos goarch variant <<<"$target"
  goarm=
  suffix=
  case $goarch/$variant in
    arm/v[5-7]) goarm=${variant#v}; suffix=$variant ;;
    arm/) echo "release.sh: $target: give arm's version, e.g. linux/arm/v7" >&2; exit 2 ;;
    */) ;;
    *) echo "release.sh: $target: only arm takes a variant (linux/arm/v7)" >&2; exit 2 ;;
  esac
  name=nestmtx-$RELEASE-$goos-$goarch$suffix
  (
    export CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=$goarm
    "$GO" build -trimpath -ldflags "-s -w -X main.release=$RELEASE -X main.commit=$COMMIT" \
      -o "$out/$name" ./cmd/nestmtx
  ) >"$logs/$name.log" 2>&1 &
  names+=("$name") pids+=($!)
done

failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "release.sh: ${names[$i]} failed:" >&2
    cat "$logs/${names[$i]}.log" >&2
    failed=1
  fi
done
((failed == 0)) || exit 1

# Only this build's files: an earlier version's binaries in the same
# directory stay out of the list.
(cd "$out" && sha256sum "${names[@]}" >SHA256SUMS)
for name in "${names[@]}"; do
  printf '%s/%s\t%s bytes\n' "$out" "$name" "$(wc -c <"$out/$name" | tr -d ' ')"
done
