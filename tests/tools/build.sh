#!/usr/bin/env bash
# Builds one of the project's Go tools (helm, crane, ...) from its pinned Go module into a cache
# outside the checkout and prints the binary's path on stdout (progress goes to stderr):
#
#   ${REWIND_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rewind/tools}/<tool>-<hash>/<tool>
#
# A tool is a directory tests/tools/<tool>/ holding go.mod + go.sum (the pins) and tool.env,
# which sets PACKAGE (the main package to build) and optionally LDFLAGS. <hash> covers all three,
# so any pin change builds anew. The binary is linked under a temporary name and renamed into
# place, so an interrupted build never leaves a half-written file that looks done.
#
# Usage: tests/tools/build.sh <tool>          build if missing; print the binary's path
#        tests/tools/build.sh --path <tool>   print the path only (builds nothing)
#        tests/tools/build.sh --list          the tools there are
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { printf 'tools/build.sh: %s\n' "$*" >&2; }
die() { printf 'tools/build.sh: error: %s\n' "$*" >&2; exit 1; }

print_only=0
case "${1:-}" in
  --list) for d in "$HERE"/*/; do [[ -f $d/tool.env ]] && basename "$d"; done; exit 0 ;;
  --path) print_only=1; shift ;;
  -h | --help | "") sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; [[ -n ${1:-} ]]; exit ;;
esac
TOOL=${1:?tool name}
DIR="$HERE/$TOOL"
[[ -f $DIR/tool.env && -f $DIR/go.mod ]] ||
  die "unknown tool '$TOOL': no $DIR/tool.env and go.mod (tools: $("$0" --list | tr '\n' ' '))"

PACKAGE='' LDFLAGS='-s -w'
# shellcheck source=/dev/null
source "$DIR/tool.env"
[[ -n $PACKAGE ]] || die "$DIR/tool.env sets no PACKAGE"

hash=$(cat "$DIR/tool.env" "$DIR/go.mod" "$DIR/go.sum" 2>/dev/null | sha256sum | cut -c1-12)
CACHE_ROOT=${REWIND_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rewind/tools}
OUT_DIR="$CACHE_ROOT/$TOOL-$hash"
BIN="$OUT_DIR/$TOOL"
if [[ $print_only == 1 || -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 ||
  die "'go' is not on PATH: $TOOL is built from its Go module ($PACKAGE); install Go and run this again."
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$OUT_DIR"
# One build per tool at a time; a second caller waits and then finds the binary.
exec 9>"$OUT_DIR/build.lock"
flock 9
if [[ -x $BIN ]]; then
  echo "$BIN"
  exit 0
fi
log="$OUT_DIR/build.log"
tmp="$OUT_DIR/.$TOOL.tmp.$$"
trap 'rm -f "$tmp"' EXIT
say "building $TOOL ($PACKAGE) from tests/tools/$TOOL/go.mod..."
start=$SECONDS
if ! (cd "$DIR" && go build -trimpath -ldflags "$LDFLAGS" -o "$tmp" "$PACKAGE") >"$log" 2>&1; then
  say "FAILED to build $TOOL; last lines of $log:"
  tail -n 20 "$log" | sed 's/^/    /' >&2
  if grep -Eq 'dial tcp|no such host|proxy\.golang\.org|reading https?://|i/o timeout|connection refused' "$log"; then
    die "could not download $TOOL's Go modules: building needs the Go module proxy (GOPROXY=$(go env GOPROXY)) or a filled module cache"
  fi
  die "go build of $TOOL failed; see $log"
fi
mv -f "$tmp" "$BIN"
say "built $TOOL in $((SECONDS - start))s"
echo "$BIN"
