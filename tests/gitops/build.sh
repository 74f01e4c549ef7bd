#!/usr/bin/env bash
# Builds gitops-check (tests/gitops: Argo CD's Lua health check and Flux's kstatus over
# Kubernetes objects, for tests/gitops.rs) into a cache outside the checkout and prints the
# binary's path on stdout (progress goes to stderr):
#
#   ${REWIND_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rewind/tools}/gitops-check-<hash>/gitops-check
#
# <hash> covers go.mod, go.sum and the Go sources, so a change to any of them builds anew; the
# Lua scripts it runs are read at run time and are not part of it. Like tests/tools/build.sh:
# linked under a temporary name and renamed into place, one build at a time (flock).
#
# Usage: tests/gitops/build.sh          build if missing; print the binary's path
#        tests/gitops/build.sh --path   print the path only (builds nothing)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { printf 'gitops/build.sh: %s\n' "$*" >&2; }
die() { printf 'gitops/build.sh: error: %s\n' "$*" >&2; exit 1; }

print_only=0
case "${1:-}" in
  --path) print_only=1 ;;
  "") ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

hash=$(cd "$HERE" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)
CACHE_ROOT=${REWIND_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rewind/tools}
OUT_DIR="$CACHE_ROOT/gitops-check-$hash"
BIN="$OUT_DIR/gitops-check"
if [[ $print_only == 1 || -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 ||
  die "'go' is not on PATH: gitops-check is built from its Go module (tests/gitops/go.mod); install Go and run this again."
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$OUT_DIR"
exec 9>"$OUT_DIR/build.lock"
flock 9
if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi
log="$OUT_DIR/build.log"
tmp="$OUT_DIR/.gitops-check.tmp.$$"
trap 'rm -f "$tmp"' EXIT
say "building gitops-check from tests/gitops/go.mod..."
start=$SECONDS
if ! (cd "$HERE" && go build -mod=readonly -trimpath -ldflags '-s -w' -o "$tmp" .) >"$log" 2>&1; then
  say "FAILED to build gitops-check; last lines of $log:"
  tail -n 20 "$log" | sed 's/^/    /' >&2
  if grep -Eq 'dial tcp|no such host|proxy\.golang\.org|reading https?://|i/o timeout|connection refused' "$log"; then
    die "could not download gitops-check's Go modules: building needs the Go module proxy (GOPROXY=$(go env GOPROXY)) or a filled module cache"
  fi
  die "go build of gitops-check failed; see $log"
fi
mv -f "$tmp" "$BIN"
say "built gitops-check in $((SECONDS - start))s"
echo "$BIN"
