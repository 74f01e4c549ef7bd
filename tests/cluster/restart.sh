#!/usr/bin/env bash
# Restarts one component of the running local cluster, keeping etcd's data (up.sh on a partly-up
# cluster starts afresh from an empty etcd; this does not). The component is started again with
# exactly the command line it ran with (read from /proc before it is stopped), its log appended.
#
#   tests/cluster/restart.sh <component>                 stop it, start it again, wait until healthy
#   tests/cluster/restart.sh <component> --down-for N    stop it, wait N seconds, start it again
#   tests/cluster/restart.sh <component> --stop          stop it (its command line is kept)
#   tests/cluster/restart.sh <component> --start         start it again after --stop
#
# Components: etcd kube-apiserver kube-controller-manager kube-scheduler kwok registry
# registry-auth metrics-exporter prometheus. The same environment as up.sh (ports, REWIND_CLUSTER_STATE) applies.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

usage() {
  say "usage: $ME <component> [--down-for SECONDS | --stop | --start]"
  say "components: ${COMPONENTS[*]}"
  exit 2
}
[[ $# -ge 1 ]] || usage
COMP=$1
shift
MODE=restart DOWN_FOR=0
case ${1:-} in
  "") ;;
  --down-for)
    [[ ${2:-} =~ ^[0-9]+$ ]] || { say "--down-for needs a number of seconds"; exit 2; }
    MODE=restart DOWN_FOR=$2 ;;
  --stop) MODE=stop ;;
  --start) MODE=start ;;
  *) usage ;;
esac
known=0
for c in "${COMPONENTS[@]}"; do [[ $c == "$COMP" ]] && known=1; done
[[ $known == 1 ]] || { say "unknown component '$COMP'"; usage; }
TIMEOUT=${REWIND_CLUSTER_TIMEOUT:-120}
ARGV_FILE=$PID_DIR/$COMP.argv

do_stop() {
  local pid
  if ! pid=$(running_pid "$COMP"); then
    say "ERROR: $COMP is not running in $STATE_DIR (start the cluster with tests/cluster/up.sh)"
    exit 1
  fi
  # Keep the exact command line, NUL-separated, to start it again the same way.
  cp "/proc/$pid/cmdline" "$ARGV_FILE.tmp" && mv -f "$ARGV_FILE.tmp" "$ARGV_FILE"
  say "stopping $COMP (pid $pid)"
  stop_component "$COMP"
}

do_start() {
  local pid deadline
  [[ -s $ARGV_FILE ]] || { say "ERROR: no saved command line for $COMP ($ARGV_FILE): stop it with $ME $COMP --stop first"; exit 1; }
  if pid=$(running_pid "$COMP"); then
    say "$COMP is already running (pid $pid)"
    exit 0
  fi
  local -a argv envcmd=()
  mapfile -d '' -t argv <"$ARGV_FILE"
  if [[ $COMP == registry || $COMP == registry-auth ]]; then
    # As up.sh: REGISTRY_* variables would override the generated config.
    envcmd=(env)
    for v in $(compgen -e); do [[ $v == REGISTRY_* ]] && envcmd+=(-u "$v"); done
  fi
  say "starting $COMP again (log appended: $(log_file "$COMP"))"
  setsid "${envcmd[@]}" "${argv[@]}" >>"$(log_file "$COMP")" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$(pid_file "$COMP")"
  deadline=$((SECONDS + TIMEOUT))
  until healthy "$COMP"; do
    if ! alive "$pid"; then
      rm -f "$(pid_file "$COMP")"
      say "ERROR: $COMP exited while starting again; see $(log_file "$COMP")"
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      say "ERROR: $COMP did not become healthy within ${TIMEOUT}s (REWIND_CLUSTER_TIMEOUT); see $(log_file "$COMP")"
      exit 1
    fi
    sleep 0.2
  done
  say "$COMP is healthy again (pid $pid)"
}

case $MODE in
  stop) do_stop ;;
  start) do_start ;;
  restart)
    do_stop
    if ((DOWN_FOR > 0)); then
      say "$COMP stays down for ${DOWN_FOR}s"
      sleep "$DOWN_FOR"
    fi
    do_start
    ;;
esac
