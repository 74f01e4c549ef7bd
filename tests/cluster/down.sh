#!/usr/bin/env bash
# Stops Rewind's local test cluster started by up.sh (control plane, kwok, the two registries,
# Prometheus and its exporter) and removes its state (target/cluster, including the registries'
# storage, registry.env, Prometheus's TSDB, the tests' series files and prometheus.env).
# Only processes whose PIDs up.sh recorded are signalled, and only after checking that the PID
# still runs that component's binary for this checkout (/proc/<pid>/exe and cmdline):
# TERM first, KILL after REWIND_CLUSTER_STOP_GRACE seconds (default 10).
#
# REWIND_CLUSTER_KEEP_LOGS=1 keeps target/cluster/logs; everything else is removed.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

T0=$SECONDS
if [[ ! -d $STATE_DIR ]]; then
  say "no cluster state in $STATE_DIR; nothing to stop"
  exit 0
fi

stopped=()
for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
  comp=${COMPONENTS[i]}
  f=$(pid_file "$comp")
  [[ -f $f ]] || continue
  if pid=$(running_pid "$comp"); then
    stop_component "$comp"
    stopped+=("$comp($pid)")
  else
    pid=$(<"$f")
    say "not signalling pid ${pid:-?} from $f: it is not running this cluster's $comp (stale PID file)"
    rm -f "$f"
  fi
done

# Processes of this cluster that have no PID file (e.g. the file was deleted by hand) are not
# touched, only reported.
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  for comp in "${COMPONENTS[@]}"; do
    if is_ours "$pid" "$comp"; then
      say "WARNING: $comp (pid $pid) uses $STATE_DIR but was not recorded in a PID file; not stopping it"
    fi
  done
done

if [[ ${REWIND_CLUSTER_KEEP_LOGS:-0} == 1 ]]; then
  find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
  kept=" (logs kept in $LOG_DIR)"
else
  rm -rf "$STATE_DIR"
  kept=""
fi
if [[ ${#stopped[@]} -gt 0 ]]; then
  say "stopped ${stopped[*]} and removed $STATE_DIR$kept in $((SECONDS - T0))s"
else
  say "nothing was running; removed $STATE_DIR$kept"
fi
