#!/usr/bin/env bash
# Builds the binaries of Rewind's local test cluster from their Go modules (pinned by
# tests/cluster/{k8s,etcd,kwok}/go.mod + go.sum) into a cache outside the checkout:
#
#   ${REWIND_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rewind/cluster}/<key>/bin
#
# <key> names the three versions plus a hash of the go.mod/go.sum files and of this script's
# build flags, so any pin change builds into a new directory. Only missing binaries are built.
# Each binary is linked under a temporary name and renamed into place, so an interrupted build
# never leaves a half-written file that looks done.
#
# Usage: tests/cluster/build.sh                 build what is missing; bin dir on the last line
#        tests/cluster/build.sh --print-bin-dir print the bin dir only (builds nothing)
#        tests/cluster/build.sh --check         exit 0 if every binary is present, else 1
# Progress goes to stderr; stdout carries only the bin dir.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Bump when the build flags below change, so old binaries are not reused.
BUILD_REV=2
# Cold-build figures measured on a 2-core machine (see docs/test-cluster.md).
COLD_K8S_MIN=9
COLD_ETCD_MIN=1
COLD_KWOK_MIN=3

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

# version_of <go.mod> <module path>: the required version of a module.
version_of() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}

K8S_VERSION=$(version_of "$HERE/k8s/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(version_of "$HERE/etcd/go.mod" go.etcd.io/etcd/server/v3)
KWOK_VERSION=$(version_of "$HERE/kwok/go.mod" sigs.k8s.io/kwok)
[[ -n $K8S_VERSION && -n $ETCD_VERSION && -n $KWOK_VERSION ]] ||
  die "cannot read the pinned versions from $HERE/{k8s,etcd,kwok}/go.mod"

pins_hash=$( {
  echo "rev=$BUILD_REV"
  cat "$HERE/k8s/go.mod" "$HERE/k8s/go.sum" "$HERE/etcd/go.mod" "$HERE/etcd/go.sum" \
    "$HERE/kwok/go.mod" "$HERE/kwok/go.sum"
} | sha256sum | cut -c1-12)
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_${pins_hash}"
CACHE_ROOT=${REWIND_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rewind/cluster}
BIN_DIR="$CACHE_ROOT/$KEY/bin"

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
ALL_BINS=("${K8S_BINS[@]}" etcd kwok)

missing=()
for b in "${ALL_BINS[@]}"; do
  [[ -x "$BIN_DIR/$b" ]] || missing+=("$b")
done

case "${1:-}" in
  --print-bin-dir) echo "$BIN_DIR"; exit 0 ;;
  --check) [[ ${#missing[@]} -eq 0 ]]; exit ;;
  "") ;;
  -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (try --help)" ;;
esac

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null 2>&1 ||
  die "'go' is not on PATH. The test cluster's components (${missing[*]}) are built from Go modules; install Go >= 1.26 (https://go.dev/dl/) and put it on PATH, then run this again."

export GOTOOLCHAIN=local CGO_ENABLED=0
go_version=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
need_go=$(grep -h '^go [0-9]' "$HERE"/{k8s,etcd,kwok}/go.mod | awk '{print $2}' | sort -V | tail -1)
if [[ $(printf '%s\n%s\n' "$need_go" "$go_version" | sort -V | head -1) != "$need_go" ]]; then
  die "go $go_version is too old: the pinned modules need go >= $need_go (GOTOOLCHAIN=local, so no toolchain is downloaded). Install a newer Go."
fi

mkdir -p "$BIN_DIR" "$CACHE_ROOT/$KEY/logs"
# One build at a time per key (two `make cluster-up` at once would both try to link).
exec 9>"$CACHE_ROOT/$KEY/build.lock"
if ! flock -n 9; then
  say "another build into $BIN_DIR is running; waiting for it"
  flock 9
  # The other build may have produced what we were missing.
  missing=()
  for b in "${ALL_BINS[@]}"; do
    [[ -x "$BIN_DIR/$b" ]] || missing+=("$b")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "$BIN_DIR"
    exit 0
  fi
fi

# run_build <component> <module dir> <log> <go build args...>
# Runs `go build` in the module dir; on failure explains what failed and exits.
run_build() {
  local comp=$1 dir=$2 log=$3
  shift 3
  local start=$SECONDS
  if ! (cd "$dir" && go build "$@") >"$log" 2>&1; then
    say "FAILED to build $comp (go build log: $log); last lines:"
    tail -n 20 "$log" | sed 's/^/    /' >&2
    # Module fetch failures look like: "go: example.com/mod@v1.2.3: Get https://proxy...: ..."
    # or "...: reading https://proxy.golang.org/...: 404" or "dial tcp ...".
    local mod
    mod=$(grep -Eo '[A-Za-z0-9._~/-]+@v[0-9][A-Za-z0-9.+-]*' "$log" |
      grep -v '^golang.org/toolchain' | head -1 || true)
    [[ -n $mod ]] || mod=$(sed -n 's/^go: downloading \([^ ]*\) \([^ ]*\)$/\1@\2/p' "$log" | tail -1)
    if grep -Eq 'dial tcp|no such host|proxy\.golang\.org|GOPROXY|reading https?://|verifying module|module lookup disabled|i/o timeout|connection refused|TLS handshake' "$log"; then
      die "could not download Go module ${mod:-(see log)} for $comp. Building needs the Go module proxy (GOPROXY=$(go env GOPROXY)) or a filled module cache (GOMODCACHE=$(go env GOMODCACHE))."
    fi
    die "go build of $comp failed; see $log"
  fi
  say "built $comp in $(((SECONDS - start) / 60))m$(((SECONDS - start) % 60))s"
}

TMP_DIR=$(mktemp -d "$CACHE_ROOT/$KEY/tmp.XXXXXX")
trap 'rm -rf "$TMP_DIR"' EXIT
trap 'say "interrupted; nothing half-built was kept"; exit 130' INT TERM
LOGS="$CACHE_ROOT/$KEY/logs"

need() { # need <bin>...: true if any of them is missing
  local b m
  for b in "$@"; do for m in "${missing[@]}"; do [[ $b == "$m" ]] && return 0; done; done
  return 1
}

# --- Kubernetes: one `go build` for all missing k8s binaries (they share most packages).
k8s_missing=()
for b in "${K8S_BINS[@]}"; do need "$b" && k8s_missing+=("$b"); done
if [[ ${#k8s_missing[@]} -gt 0 ]]; then
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  # Stamp the version where Kubernetes' own build (hack/lib/version.sh) does: component-base
  # (what the binaries report) and client-go (their User-Agent, e.g. in audit logs).
  ldflags="-s -w"
  for P in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $P.gitVersion=$K8S_VERSION -X $P.gitMajor=1 -X $P.gitMinor=$minor"
    ldflags+=" -X $P.gitTreeState=clean -X $P.gitCommit=unknown"
  done
  pkgs=()
  for b in "${k8s_missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  say "building ${k8s_missing[*]} $K8S_VERSION (cold builds take ~${COLD_K8S_MIN} min on 2 cores)..."
  mkdir -p "$TMP_DIR/k8s"
  run_build "${k8s_missing[*]}" "$HERE/k8s" "$LOGS/k8s-build.log" \
    -trimpath -ldflags "$ldflags" \
    -o "$TMP_DIR/k8s/" "${pkgs[@]}"
  for b in "${k8s_missing[@]}"; do mv -f "$TMP_DIR/k8s/$b" "$BIN_DIR/$b"; done
fi

# --- etcd: the main package is the root of go.etcd.io/etcd/server/v3.
if need etcd; then
  say "building etcd $ETCD_VERSION (cold builds take ~${COLD_ETCD_MIN} min)..."
  run_build etcd "$HERE/etcd" "$LOGS/etcd-build.log" \
    -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$ETCD_VERSION" \
    -o "$TMP_DIR/etcd" go.etcd.io/etcd/server/v3
  mv -f "$TMP_DIR/etcd" "$BIN_DIR/etcd"
fi

# --- kwok: its version is a constant in its own source (pkg/consts.Version); stamp it anyway.
if need kwok; then
  say "building kwok $KWOK_VERSION (cold builds take ~${COLD_KWOK_MIN} min)..."
  run_build kwok "$HERE/kwok" "$LOGS/kwok-build.log" \
    -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    -o "$TMP_DIR/kwok" sigs.k8s.io/kwok/cmd/kwok
  mv -f "$TMP_DIR/kwok" "$BIN_DIR/kwok"
fi

say "all binaries present in $BIN_DIR"
echo "$BIN_DIR"
