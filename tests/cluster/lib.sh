# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared settings and helpers for up.sh, down.sh and status.sh (sourced, not run).
# Every path and port can be overridden from the environment; see docs/test-cluster.md.

CLUSTER_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLUSTER_SCRIPTS/../.." && pwd)
STATE_DIR=${REWIND_CLUSTER_STATE:-$REPO_ROOT/target/cluster}
LOG_DIR=$STATE_DIR/logs
PID_DIR=$STATE_DIR/pids
PKI_DIR=$STATE_DIR/pki
KUBECONFIG_FILE=$STATE_DIR/kubeconfig

ETCD_PORT=${REWIND_ETCD_PORT:-12379}
ETCD_PEER_PORT=${REWIND_ETCD_PEER_PORT:-12380}
APISERVER_PORT=${REWIND_APISERVER_PORT:-16443}
KCM_PORT=${REWIND_KCM_PORT:-16257}
SCHEDULER_PORT=${REWIND_SCHEDULER_PORT:-16259}
KWOK_PORT=${REWIND_KWOK_PORT:-16247}
REGISTRY_PORT=${REWIND_REGISTRY_PORT:-15000}
REGISTRY_AUTH_PORT=${REWIND_REGISTRY_AUTH_PORT:-15001}
PROMETHEUS_PORT=${REWIND_PROMETHEUS_PORT:-19090}
METRICS_EXPORTER_PORT=${REWIND_METRICS_EXPORTER_PORT:-19100}

# The two OCI registries (Debian's docker-registry, distribution 2.8): `registry` is open,
# `registry-auth` wants HTTP basic auth (htpasswd, bcrypt). Both plain HTTP on 127.0.0.1.
# Their configs, htpasswd file and storage live in $REGISTRY_DIR; addresses and credentials for
# the tests go to $REGISTRY_ENV_FILE.
REGISTRY_BIN=${REWIND_REGISTRY_BIN:-/usr/bin/docker-registry}
REGISTRY_DIR=$STATE_DIR/registry
REGISTRY_ENV_FILE=$STATE_DIR/registry.env
REGISTRY_USER=rewind

# Prometheus (Debian's prometheus, 2.42) scrapes every second one exporter, Debian's
# prometheus-node-exporter with only its textfile collector: it serves the samples of every
# *.prom file in $SERIES_DIR, one file per test (tests/support/prometheus.rs). Both plain HTTP on
# 127.0.0.1. Config and TSDB live in $PROMETHEUS_DIR; the addresses for the tests go to
# $PROMETHEUS_ENV_FILE.
PROMETHEUS_BIN=${REWIND_PROMETHEUS_BIN:-/usr/bin/prometheus}
METRICS_EXPORTER_BIN=${REWIND_METRICS_EXPORTER_BIN:-/usr/bin/prometheus-node-exporter}
PROMETHEUS_DIR=$STATE_DIR/prometheus
SERIES_DIR=$PROMETHEUS_DIR/series
PROMETHEUS_ENV_FILE=$STATE_DIR/prometheus.env
PROMETHEUS_JOB=rewind-test

# Start order; down.sh stops in reverse. The first five are built by build.sh; the registries
# run Debian's docker-registry ($REGISTRY_BIN), the last two Debian's Prometheus packages.
BUILT_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
COMPONENTS=("${BUILT_COMPONENTS[@]}" registry registry-auth metrics-exporter prometheus)
STOP_GRACE_SECONDS=${REWIND_CLUSTER_STOP_GRACE:-10}

ME=$(basename "$0")
say() { printf '%s: %s\n' "$ME" "$*" >&2; }

# ports_of <component>: the TCP ports it listens on (with the env var that sets each).
ports_of() {
  case $1 in
    etcd) echo "$ETCD_PORT:REWIND_ETCD_PORT $ETCD_PEER_PORT:REWIND_ETCD_PEER_PORT" ;;
    kube-apiserver) echo "$APISERVER_PORT:REWIND_APISERVER_PORT" ;;
    kube-controller-manager) echo "$KCM_PORT:REWIND_KCM_PORT" ;;
    kube-scheduler) echo "$SCHEDULER_PORT:REWIND_SCHEDULER_PORT" ;;
    kwok) echo "$KWOK_PORT:REWIND_KWOK_PORT" ;;
    registry) echo "$REGISTRY_PORT:REWIND_REGISTRY_PORT" ;;
    registry-auth) echo "$REGISTRY_AUTH_PORT:REWIND_REGISTRY_AUTH_PORT" ;;
    metrics-exporter) echo "$METRICS_EXPORTER_PORT:REWIND_METRICS_EXPORTER_PORT" ;;
    prometheus) echo "$PROMETHEUS_PORT:REWIND_PROMETHEUS_PORT" ;;
  esac
}

# registry_config <component>: the config file the registry runs with (also what identifies the
# process as ours: both registries run the same binary).
registry_config() {
  case $1 in
    registry) echo "$REGISTRY_DIR/open.yml" ;;
    registry-auth) echo "$REGISTRY_DIR/auth.yml" ;;
  esac
}

# registry_healthy <component>: GET /v2/ answers 200 (registry-auth: with the credentials from
# the env file; the password is passed to curl on stdin, not on its command line).
registry_healthy() {
  case $1 in
    registry) curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/v2/" 2>/dev/null ;;
    registry-auth)
      local pw
      pw=$(sed -n 's/^REWIND_TEST_REGISTRY_PASSWORD=//p' "$REGISTRY_ENV_FILE" 2>/dev/null) || return 1
      [[ -n $pw ]] || return 1
      printf 'user = "%s:%s"\n' "$REGISTRY_USER" "$pw" |
        curl -sf --max-time 2 -o /dev/null -K - "http://127.0.0.1:$REGISTRY_AUTH_PORT/v2/" 2>/dev/null
      ;;
  esac
}

pid_file() { echo "$PID_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }

# alive <pid>: the process exists and is not a zombie.
alive() {
  local st
  [[ -r /proc/$1/stat ]] || return 1
  st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z && $st != X ]]
}

# is_ours <pid> <component>: the process runs the component's binary (by the name of its
# executable, /proc/<pid>/exe, or of its argv[0]: the exe link follows the file if the binary is
# renamed while running) and its command line points into this checkout's state dir (for the
# registries: at that registry's own config file). A recycled PID fails these checks.
is_ours() {
  local pid=$1 comp=$2 exe cmdline argv0 n
  local -a names=("$comp")
  # Debian's binaries, or whatever REWIND_*_BIN named when up.sh started them (recorded in a
  # file, so down.sh finds them without that variable).
  case $comp in
    registry | registry-auth)
      # Both run docker-registry.
      names=(docker-registry "${REGISTRY_BIN##*/}")
      [[ -r $REGISTRY_DIR/binary ]] && names+=("$(basename -- "$(<"$REGISTRY_DIR/binary")")")
      ;;
    prometheus) names=(prometheus "${PROMETHEUS_BIN##*/}") ;;
    metrics-exporter) names=(prometheus-node-exporter "${METRICS_EXPORTER_BIN##*/}") ;;
  esac
  case $comp in
    prometheus | metrics-exporter)
      [[ -r $PROMETHEUS_DIR/$comp.binary ]] && names+=("$(basename -- "$(<"$PROMETHEUS_DIR/$comp.binary")")")
      ;;
  esac
  alive "$pid" || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  cmdline=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  argv0=${cmdline%%$'\n'*}
  for n in "${names[@]}"; do
    [[ ${exe##*/} == "$n" || ${argv0##*/} == "$n" ]] || continue
    # Explicit statuses: a bare `return` in a function run from up.sh's EXIT trap would return
    # the status that triggered the trap, not this grep's.
    case $comp in
      registry | registry-auth) grep -qxF -- "$(registry_config "$comp")" <<<"$cmdline" && return 0 ;;
      *) grep -qF -- "$STATE_DIR/" <<<"$cmdline" && return 0 ;;
    esac
    return 1
  done
  return 1
}

# running_pid <component>: print the recorded PID if that process is alive and ours.
running_pid() {
  local f pid
  f=$(pid_file "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  is_ours "$pid" "$1" || return 1
  echo "$pid"
}

# describe_pid <pid>: "name (pid N)" for messages.
describe_pid() {
  local name
  name=$(cat "/proc/$1/comm" 2>/dev/null || echo '?')
  echo "$name (pid $1)"
}

# stop_component <component>: TERM the recorded process if it is ours, KILL after the grace
# period, and remove the PID file. Never touches a process it did not record.
stop_component() {
  local comp=$1 f pid i
  f=$(pid_file "$comp")
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  if ! [[ $pid =~ ^[0-9]+$ ]] || ! is_ours "$pid" "$comp"; then
    rm -f "$f"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_GRACE_SECONDS * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    say "$comp (pid $pid) did not stop within ${STOP_GRACE_SECONDS}s after TERM; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
  fi
  rm -f "$f"
}

# port_holder <port>: describe who listens on 127.0.0.1/any:<port>; empty if free.
port_holder() {
  local port=$1 line users
  if command -v ss >/dev/null 2>&1; then
    line=$(ss -Hltnp "( sport = :$port )" 2>/dev/null | head -1)
    [[ -n $line ]] || return 0
    users=$(grep -o 'users:(([^)]*))' <<<"$line" | sed -E 's/users:\(\("([^"]*)",pid=([0-9]+).*/\1 (pid \2)/')
    echo "${users:-an unknown process} on $(awk '{print $4}' <<<"$line")"
  elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "an unknown process"
  fi
}

apiserver_ready() {
  curl -sf --max-time 3 --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null 2>&1
}

# healthy <component>: its health check passes now.
healthy() {
  case $1 in
    etcd) curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"' ;;
    kube-apiserver) apiserver_ready ;;
    kube-controller-manager) curl -skf --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz" >/dev/null 2>&1 ;;
    kube-scheduler) curl -skf --max-time 2 "https://127.0.0.1:$SCHEDULER_PORT/healthz" >/dev/null 2>&1 ;;
    kwok) curl -sf --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz" >/dev/null 2>&1 ;;
    registry | registry-auth) registry_healthy "$1" ;;
    metrics-exporter) curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$METRICS_EXPORTER_PORT/metrics" 2>/dev/null ;;
    prometheus) curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 2>/dev/null ;;
  esac
}

# prometheus_scrapes: Prometheus has scraped the exporter successfully (up == 1 for its job).
prometheus_scrapes() {
  curl -sf --max-time 2 "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query" \
    --data-urlencode "query=up{job=\"$PROMETHEUS_JOB\"} == 1" 2>/dev/null | grep -q '"value":\['
}
