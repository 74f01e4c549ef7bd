#!/usr/bin/env bash
# Shows whether each component of the local test cluster runs and answers its health check
# (the registries: GET /v2/, the auth one with the credentials from registry.env; Prometheus:
# /-/ready; the metrics exporter: /metrics), the fake nodes, and whether Prometheus scrapes the
# exporter. Exit status 0 only if everything is up and healthy.
set -uo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

health_url() {
  case $1 in
    etcd) echo "http://127.0.0.1:$ETCD_PORT/health" ;;
    kube-apiserver) echo "https://127.0.0.1:$APISERVER_PORT/readyz" ;;
    kube-controller-manager) echo "https://127.0.0.1:$KCM_PORT/healthz" ;;
    kube-scheduler) echo "https://127.0.0.1:$SCHEDULER_PORT/healthz" ;;
    kwok) echo "http://127.0.0.1:$KWOK_PORT/healthz" ;;
    registry) echo "http://127.0.0.1:$REGISTRY_PORT/v2/" ;;
    registry-auth) echo "http://127.0.0.1:$REGISTRY_AUTH_PORT/v2/" ;;
    metrics-exporter) echo "http://127.0.0.1:$METRICS_EXPORTER_PORT/metrics" ;;
    prometheus) echo "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" ;;
  esac
}

ok=0
printf '%-24s %-8s %-9s %-8s %s\n' COMPONENT PID HEALTH RSS LOG
for comp in "${COMPONENTS[@]}"; do
  if pid=$(running_pid "$comp"); then
    rss=$(awk '/^VmRSS:/ { printf "%dMi", $2 / 1024 }' "/proc/$pid/status")
    if [[ $comp == kube-apiserver ]]; then
      apiserver_ready && h=ok || h=failing
    elif [[ $comp == registry || $comp == registry-auth ]]; then
      registry_healthy "$comp" && h=ok || h=failing
    else
      curl -skf --max-time 2 "$(health_url "$comp")" >/dev/null 2>&1 && h=ok || h=failing
    fi
  else
    pid=- rss=- h=down
  fi
  [[ $h == ok ]] || ok=1
  printf '%-24s %-8s %-9s %-8s %s\n' "$comp" "$pid" "$h" "$rss" "$(log_file "$comp")"
done

if [[ $ok -eq 0 ]]; then
  BIN=$("$CLUSTER_SCRIPTS/build.sh" --print-bin-dir)
  echo
  "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" get nodes -o wide 2>&1 || ok=1
  echo
  echo "registries (from $REGISTRY_ENV_FILE):"
  grep -v '^REWIND_TEST_REGISTRY_PASSWORD=' "$REGISTRY_ENV_FILE" | sed 's/^/  /'
  echo
  echo "prometheus (from $PROMETHEUS_ENV_FILE):"
  sed 's/^/  /' "$PROMETHEUS_ENV_FILE" || ok=1
  if prometheus_scrapes; then
    echo "  scraping the exporter every 1s: ok ($(find "$SERIES_DIR" -maxdepth 1 -name '*.prom' | wc -l) series file(s))"
  else
    echo "  scraping the exporter: FAILING (see http://127.0.0.1:$PROMETHEUS_PORT/api/v1/targets)"
    ok=1
  fi
  echo
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
fi
exit $ok
