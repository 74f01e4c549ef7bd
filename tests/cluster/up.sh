#!/usr/bin/env bash
# Starts Rewind's local test cluster as plain processes bound to 127.0.0.1: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler (all real, built from Go modules by build.sh) and
# kwok, which plays the kubelets of N fake nodes; plus two OCI registries (Debian's
# docker-registry): an open one and one with htpasswd basic auth; plus Prometheus (Debian's
# prometheus) scraping every second a file-based exporter (Debian's prometheus-node-exporter,
# textfile collector only) whose series the tests write. State lives in target/cluster/ of this
# checkout; the admin kubeconfig is target/cluster/kubeconfig, the registries' addresses and
# credentials are in target/cluster/registry.env, Prometheus's in target/cluster/prometheus.env.
#
# Idempotent: if the cluster is already up and healthy it says so and exits 0. Stale PID files
# from a killed run are cleaned up. Any component that exits or does not become healthy in time
# is named with its log, and everything this run started is stopped again.
#
# Environment (all optional):
#   REWIND_CLUSTER_NODES=3          number of fake nodes
#   REWIND_CLUSTER_AUDIT=1          API server audit log (Metadata level) in logs/audit.log; 0: off
#   REWIND_CLUSTER_TIMEOUT=120      seconds to wait for each component / step
#   REWIND_ETCD_PORT=12379 REWIND_ETCD_PEER_PORT=12380 REWIND_APISERVER_PORT=16443
#   REWIND_KCM_PORT=16257 REWIND_SCHEDULER_PORT=16259 REWIND_KWOK_PORT=16247
#   REWIND_REGISTRY_PORT=15000 REWIND_REGISTRY_AUTH_PORT=15001
#   REWIND_PROMETHEUS_PORT=19090 REWIND_METRICS_EXPORTER_PORT=19100
#   REWIND_REGISTRY_BIN=/usr/bin/docker-registry   the registry binary (distribution 2.8)
#   REWIND_PROMETHEUS_BIN=/usr/bin/prometheus
#   REWIND_METRICS_EXPORTER_BIN=/usr/bin/prometheus-node-exporter
#   REWIND_ETCD_ARGS, REWIND_APISERVER_ARGS, REWIND_KCM_ARGS, REWIND_SCHEDULER_ARGS,
#   REWIND_KWOK_ARGS, REWIND_REGISTRY_ARGS (both registries), REWIND_PROMETHEUS_ARGS,
#   REWIND_METRICS_EXPORTER_ARGS
#                                   extra flags appended to a component's command line
#   REWIND_CLUSTER_STATE            state dir (default <repo>/target/cluster)
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

NODES=${REWIND_CLUSTER_NODES:-3}
AUDIT=${REWIND_CLUSTER_AUDIT:-1}
TIMEOUT=${REWIND_CLUSTER_TIMEOUT:-120}
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.0.0.1/16
T0=$SECONDS

[[ $NODES =~ ^[1-9][0-9]*$ ]] || { say "REWIND_CLUSTER_NODES must be a positive number (got '$NODES')"; exit 2; }

missing_tools=()
for t in openssl curl setsid flock base64 sha256sum awk; do
  command -v "$t" >/dev/null 2>&1 || missing_tools+=("$t")
done
if [[ ${#missing_tools[@]} -gt 0 ]]; then
  say "ERROR: missing tools: ${missing_tools[*]} (Debian: apt-get install openssl curl util-linux coreutils gawk)"
  exit 1
fi
# The registries: Debian's docker-registry and htpasswd (apache2-utils). Not installed from here.
missing_pkgs=()
if [[ ! -x $REGISTRY_BIN ]]; then
  missing_pkgs+=(docker-registry)
  say "ERROR: $REGISTRY_BIN is missing: the test registries run it; it comes with the Debian package docker-registry"
  [[ -n ${REWIND_REGISTRY_BIN:-} ]] && say "       (that path is from REWIND_REGISTRY_BIN; unset it to use /usr/bin/docker-registry)"
fi
if ! command -v htpasswd >/dev/null 2>&1; then
  missing_pkgs+=(apache2-utils)
  say "ERROR: htpasswd is not on PATH: it writes the auth registry's password file; it comes with the Debian package apache2-utils"
fi
# Prometheus and the exporter the tests write series for: Debian's prometheus and
# prometheus-node-exporter. Not installed from here either (.ci/run does, without their services).
if [[ ! -x $PROMETHEUS_BIN ]]; then
  missing_pkgs+=(prometheus)
  say "ERROR: $PROMETHEUS_BIN is missing: the test cluster's Prometheus runs it; it comes with the Debian package prometheus"
  [[ -n ${REWIND_PROMETHEUS_BIN:-} ]] && say "       (that path is from REWIND_PROMETHEUS_BIN; unset it to use /usr/bin/prometheus)"
fi
if [[ ! -x $METRICS_EXPORTER_BIN ]]; then
  missing_pkgs+=(prometheus-node-exporter)
  say "ERROR: $METRICS_EXPORTER_BIN is missing: it serves the tests' series to Prometheus; it comes with the Debian package prometheus-node-exporter"
  [[ -n ${REWIND_METRICS_EXPORTER_BIN:-} ]] && say "       (that path is from REWIND_METRICS_EXPORTER_BIN; unset it to use /usr/bin/prometheus-node-exporter)"
fi
if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
  say "       Install with: apt-get install ${missing_pkgs[*]}   (nothing was started)"
  exit 1
fi
command -v ss >/dev/null 2>&1 || say "note: 'ss' (iproute2) not found; port checks cannot name the process holding a port"

# ---------------------------------------------------------------- what is already running?
mkdir -p "$PID_DIR" "$LOG_DIR"
# One up.sh at a time per state dir; a second one waits and then finds the cluster up.
exec 8>"$PID_DIR/.up.lock"
if ! flock -n 8; then
  say "another up.sh is starting this cluster; waiting for it"
  flock 8
fi
running=()
for comp in "${COMPONENTS[@]}"; do
  f=$(pid_file "$comp")
  [[ -f $f ]] || continue
  pid=$(<"$f")
  if [[ $pid =~ ^[0-9]+$ ]] && is_ours "$pid" "$comp"; then
    running+=("$comp")
  else
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then
      why="pid $pid is now $(describe_pid "$pid"), not this cluster's $comp"
    else
      why="pid ${pid:-?} is not running"
    fi
    say "removing stale PID file $f ($why)"
    rm -f "$f"
  fi
done

if [[ ${#running[@]} -eq ${#COMPONENTS[@]} && -f $KUBECONFIG_FILE && -f $REGISTRY_ENV_FILE && -f $PROMETHEUS_ENV_FILE ]] &&
  apiserver_ready && registry_healthy registry && registry_healthy registry-auth &&
  healthy metrics-exporter && healthy prometheus; then
  say "cluster already up and healthy ($STATE_DIR); nothing to do"
  say "registries: 127.0.0.1:$REGISTRY_PORT (open), 127.0.0.1:$REGISTRY_AUTH_PORT (basic auth); see $REGISTRY_ENV_FILE"
  say "prometheus: http://127.0.0.1:$PROMETHEUS_PORT; see $PROMETHEUS_ENV_FILE"
  echo "export KUBECONFIG=$KUBECONFIG_FILE"
  exit 0
fi
if [[ ${#running[@]} -gt 0 ]]; then
  say "cluster is only partly up or unhealthy (running: ${running[*]}); stopping it and starting afresh"
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop_component "${COMPONENTS[i]}"; done
fi

# ---------------------------------------------------------------- ports free?
check_ports() {
  local comp spec port var holder bad=0
  for comp in "${COMPONENTS[@]}"; do
    for spec in $(ports_of "$comp"); do
      port=${spec%%:*} var=${spec#*:}
      holder=$(port_holder "$port")
      if [[ -n $holder ]]; then
        say "ERROR: port $port, needed by $comp, is already in use by $holder."
        say "       Stop that process, or choose another port: $var=<port> $0"
        bad=1
      fi
    done
  done
  return $bad
}
check_ports || exit 1

# ---------------------------------------------------------------- binaries
if ! BIN=$("$CLUSTER_SCRIPTS/build.sh" | tail -n 1); then
  say "ERROR: cannot start the cluster: building its binaries failed (see above); nothing was started"
  exit 1
fi
for comp in "${BUILT_COMPONENTS[@]}" kubectl; do
  [[ -x $BIN/$comp ]] || { say "ERROR: build.sh did not produce $BIN/$comp"; exit 1; }
done
kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# A build can take long; check again right before starting.
check_ports || exit 1

# ---------------------------------------------------------------- fresh state
# Whatever a previous run left (etcd data, PKI) is discarded; logs are overwritten per component.
find "$STATE_DIR" -mindepth 1 -maxdepth 1 ! -name logs ! -name pids -exec rm -rf {} +
rm -f "$LOG_DIR"/*.log "$LOG_DIR"/audit*.log
mkdir -p "$PKI_DIR" "$STATE_DIR/etcd" "$STATE_DIR/kubeconfigs"
chmod 700 "$STATE_DIR/etcd"

STARTED=()
DONE=0
cleanup_on_failure() {
  [[ $DONE -eq 1 ]] && return 0
  if [[ ${#STARTED[@]} -gt 0 ]]; then
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_component "${STARTED[i]}"; done
    say "stopped everything this run started (${STARTED[*]}); logs kept in $LOG_DIR"
  fi
  # Its password belongs to a registry that no longer runs; Prometheus no longer runs either.
  rm -f "$REGISTRY_ENV_FILE" "$PROMETHEUS_ENV_FILE"
}
trap cleanup_on_failure EXIT
trap 'say "interrupted"; exit 130' INT TERM

# fail <component> <what happened>: name it, show its log, stop everything, exit 1.
fail() {
  local comp=$1 log
  log=$(log_file "$comp")
  say "ERROR: $comp $2"
  say "log file: $log (last 20 lines below)"
  if [[ -s $log ]]; then tail -n 20 "$log" | sed 's/^/    | /' >&2; else say "    (log is empty)"; fi
  exit 1
}

# ---------------------------------------------------------------- PKI (openssl, EC P-256)
openssl_quiet() { openssl "$@" 2>"$PKI_DIR/openssl.err" || { cat "$PKI_DIR/openssl.err" >&2; say "ERROR: openssl $1 failed"; exit 1; }; }
newkey() { openssl_quiet genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI_DIR/$1.key"; }
# sign <name> <subject> <extensions>
sign() {
  newkey "$1"
  openssl_quiet req -new -key "$PKI_DIR/$1.key" -subj "$2" -out "$PKI_DIR/$1.csr"
  printf '%s\n' "$3" >"$PKI_DIR/$1.ext"
  openssl_quiet x509 -req -in "$PKI_DIR/$1.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 365 -sha256 -extfile "$PKI_DIR/$1.ext" -out "$PKI_DIR/$1.crt"
  rm -f "$PKI_DIR/$1.csr" "$PKI_DIR/$1.ext"
}
newkey ca
openssl_quiet req -x509 -new -key "$PKI_DIR/ca.key" -subj "/CN=rewind-test-cluster-ca" -days 3650 -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -out "$PKI_DIR/ca.crt"
CLIENT_EXT=$'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth'
sign apiserver "/CN=kube-apiserver" "$(printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
  'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' \
  'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local')"
sign admin "/O=system:masters/CN=rewind-admin" "$CLIENT_EXT"
sign kube-controller-manager "/CN=system:kube-controller-manager" "$CLIENT_EXT"
sign kube-scheduler "/CN=system:kube-scheduler" "$CLIENT_EXT"
sign kwok "/O=system:masters/CN=kwok-controller" "$CLIENT_EXT"
# Front-proxy (request-header) client, as kubeadm sets up; without it kube-controller-manager
# and kube-scheduler log errors about the missing requestheader CA every few seconds.
sign front-proxy-client "/CN=front-proxy-client" "$CLIENT_EXT"
newkey sa
openssl_quiet pkey -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub"
rm -f "$PKI_DIR/openssl.err" "$PKI_DIR/ca.srl"
chmod 600 "$PKI_DIR"/*.key

# write_kubeconfig <file> <cert name> <user>
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rewind-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $(base64 -w0 "$PKI_DIR/$2.crt")
    client-key-data: $(base64 -w0 "$PKI_DIR/$2.key")
contexts:
- name: rewind-test
  context:
    cluster: rewind-test
    user: $3
current-context: rewind-test
EOF
  chmod 600 "$1"
}
KC_DIR=$STATE_DIR/kubeconfigs
write_kubeconfig "$KC_DIR/kube-controller-manager.kubeconfig" kube-controller-manager system:kube-controller-manager
write_kubeconfig "$KC_DIR/kube-scheduler.kubeconfig" kube-scheduler system:kube-scheduler
write_kubeconfig "$KC_DIR/kwok.kubeconfig" kwok kwok-controller
# The admin kubeconfig is written last (below), once the API answers: its presence means "up".

# ---------------------------------------------------------------- registries (config, htpasswd)
# Generated per start: a fresh password for the auth registry (bcrypt in htpasswd) and a fresh
# http.secret for each registry; nothing secret is committed. Storage starts empty.
mkdir -p "$REGISTRY_DIR/open" "$REGISTRY_DIR/auth"
chmod 700 "$REGISTRY_DIR"
echo "$REGISTRY_BIN" >"$REGISTRY_DIR/binary"
REGISTRY_PASSWORD=$(openssl rand -hex 16)
if ! out=$(printf '%s\n' "$REGISTRY_PASSWORD" | htpasswd -iBc "$REGISTRY_DIR/htpasswd" "$REGISTRY_USER" 2>&1); then
  say "ERROR: htpasswd -B failed: $out"
  exit 1
fi
# registry_yaml <storage dir> <port> [auth block]
registry_yaml() {
  cat <<EOF
# Generated by tests/cluster/up.sh for the local test cluster; regenerated on every start.
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $1
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$2
  secret: $(openssl rand -hex 16)
  headers:
    X-Content-Type-Options: [nosniff]
${3:-}
EOF
}
registry_yaml "$REGISTRY_DIR/open" "$REGISTRY_PORT" >"$REGISTRY_DIR/open.yml"
registry_yaml "$REGISTRY_DIR/auth" "$REGISTRY_AUTH_PORT" "$(printf '%s\n' 'auth:' '  htpasswd:' \
  '    realm: rewind-test-registry' "    path: $REGISTRY_DIR/htpasswd")" >"$REGISTRY_DIR/auth.yml"
chmod 600 "$REGISTRY_DIR"/*.yml "$REGISTRY_DIR/htpasswd"
# Written before the registries start: the auth registry's health check reads the password here.
cat >"$REGISTRY_ENV_FILE" <<EOF
REWIND_TEST_REGISTRY=127.0.0.1:$REGISTRY_PORT
REWIND_TEST_REGISTRY_AUTH=127.0.0.1:$REGISTRY_AUTH_PORT
REWIND_TEST_REGISTRY_USER=$REGISTRY_USER
REWIND_TEST_REGISTRY_PASSWORD=$REGISTRY_PASSWORD
EOF
chmod 600 "$REGISTRY_ENV_FILE"

# ---------------------------------------------------------------- prometheus (config)
# One scrape job, every second, of the exporter: it serves the samples of every *.prom file in
# $SERIES_DIR (one per test), so a test changes its series by rewriting its own file and no test
# touches another's. honor_labels: the tests' labels (namespace, release, even job) are kept as
# written. The TSDB starts empty and keeps an hour at most.
mkdir -p "$PROMETHEUS_DIR/data" "$SERIES_DIR"
echo "$PROMETHEUS_BIN" >"$PROMETHEUS_DIR/prometheus.binary"
echo "$METRICS_EXPORTER_BIN" >"$PROMETHEUS_DIR/metrics-exporter.binary"
cat >"$PROMETHEUS_DIR/prometheus.yml" <<EOF
# Generated by tests/cluster/up.sh for the local test cluster; regenerated on every start.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: $PROMETHEUS_JOB
  honor_labels: true
  static_configs:
  - targets: ['127.0.0.1:$METRICS_EXPORTER_PORT']
EOF
cat >"$PROMETHEUS_ENV_FILE" <<EOF
REWIND_TEST_PROMETHEUS=http://127.0.0.1:$PROMETHEUS_PORT
REWIND_TEST_METRICS_EXPORTER=http://127.0.0.1:$METRICS_EXPORTER_PORT
REWIND_TEST_PROMETHEUS_SERIES_DIR=$SERIES_DIR
EOF

# ---------------------------------------------------------------- processes
# start <component> <args...>: run it in its own session, log to logs/<component>.log.
start() {
  local comp=$1 extra_var="" pid bin=$BIN/$1 v
  shift
  local -a extra=() envcmd=()
  case $comp in
    etcd) extra_var=REWIND_ETCD_ARGS ;;
    kube-apiserver) extra_var=REWIND_APISERVER_ARGS ;;
    kube-controller-manager) extra_var=REWIND_KCM_ARGS ;;
    kube-scheduler) extra_var=REWIND_SCHEDULER_ARGS ;;
    kwok) extra_var=REWIND_KWOK_ARGS ;;
    prometheus) extra_var=REWIND_PROMETHEUS_ARGS bin=$PROMETHEUS_BIN ;;
    metrics-exporter) extra_var=REWIND_METRICS_EXPORTER_ARGS bin=$METRICS_EXPORTER_BIN ;;
    registry | registry-auth)
      extra_var=REWIND_REGISTRY_ARGS
      bin=$REGISTRY_BIN
      # distribution lets REGISTRY_* variables override any config key (REGISTRY_HTTP_ADDR...);
      # the generated config must be all there is.
      envcmd=(env)
      for v in $(compgen -e); do [[ $v == REGISTRY_* ]] && envcmd+=(-u "$v"); done
      ;;
  esac
  [[ -n $extra_var ]] && read -r -a extra <<<"${!extra_var:-}"
  say "starting $comp (log: $(log_file "$comp"))"
  # 8>&-: the component must not inherit (and so keep holding) up.sh's lock.
  setsid "${envcmd[@]}" "$bin" "$@" "${extra[@]}" >"$(log_file "$comp")" 2>&1 </dev/null 8>&- &
  pid=$!
  echo "$pid" >"$(pid_file "$comp")"
  STARTED+=("$comp")
}

# check_alive <component>: fail if its process is gone.
check_alive() {
  local pid rc
  pid=$(<"$(pid_file "$1")")
  if ! alive "$pid"; then
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    rm -f "$(pid_file "$1")"
    fail "$1" "exited during start-up (exit status $rc)"
  fi
}

wait_healthy() {
  local comp=$1 deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    check_alive "$comp"
    if healthy "$comp"; then
      say "$comp is healthy ($((SECONDS - T0))s)"
      return 0
    fi
    sleep 0.3
  done
  check_alive "$comp"
  fail "$comp" "did not become healthy within ${TIMEOUT}s (REWIND_CLUSTER_TIMEOUT)"
}

# Prometheus and its exporter first: Prometheus is ready in ~0.1 s, but scrapes for the first
# time only ~6 s after its start (its discovery manager hands targets to the scrapers at most
# every 5 s); the control plane's start covers that. Both are checked after everything else.
# The exporter runs only the textfile collector: nothing of this machine is exported, only the
# tests' files.
start metrics-exporter \
  --collector.disable-defaults \
  --collector.textfile \
  --collector.textfile.directory="$SERIES_DIR" \
  --web.listen-address="127.0.0.1:$METRICS_EXPORTER_PORT" \
  --web.disable-exporter-metrics
start prometheus \
  --config.file="$PROMETHEUS_DIR/prometheus.yml" \
  --storage.tsdb.path="$PROMETHEUS_DIR/data" \
  --storage.tsdb.retention.time=1h \
  --storage.tsdb.retention.size=256MB \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"

start etcd \
  --name=rewind-test \
  --data-dir="$STATE_DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="rewind-test=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync \
  --log-level=warn
wait_healthy etcd

audit_args=()
if [[ $AUDIT == 1 ]]; then
  cat >"$STATE_DIR/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
- level: Metadata
EOF
  audit_args=(--audit-policy-file="$STATE_DIR/audit-policy.yaml" --audit-log-path="$LOG_DIR/audit.log"
    --audit-log-format=json --audit-log-mode=batch --audit-log-batch-max-wait=1s
    --audit-log-maxsize=200 --audit-log-maxbackup=1)
fi

start kube-apiserver \
  --bind-address=127.0.0.1 \
  --secure-port="$APISERVER_PORT" \
  --advertise-address=127.0.0.1 \
  --endpoint-reconciler-type=none \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --tls-cert-file="$PKI_DIR/apiserver.crt" \
  --tls-private-key-file="$PKI_DIR/apiserver.key" \
  --client-ca-file="$PKI_DIR/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI_DIR/sa.pub" \
  --service-account-signing-key-file="$PKI_DIR/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --authorization-mode=Node,RBAC \
  --requestheader-client-ca-file="$PKI_DIR/ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI_DIR/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI_DIR/front-proxy-client.key" \
  --profiling=false \
  "${audit_args[@]}"
wait_healthy kube-apiserver

start kube-controller-manager \
  --kubeconfig="$KC_DIR/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$KC_DIR/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$KC_DIR/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --leader-elect=false \
  --root-ca-file="$PKI_DIR/ca.crt" \
  --service-account-private-key-file="$PKI_DIR/sa.key" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file="$PKI_DIR/ca.crt" \
  --cluster-signing-key-file="$PKI_DIR/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --profiling=false

start kube-scheduler \
  --kubeconfig="$KC_DIR/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$KC_DIR/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$KC_DIR/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$SCHEDULER_PORT" \
  --leader-elect=false \
  --profiling=false

start kwok \
  --kubeconfig="$KC_DIR/kwok.kubeconfig" \
  --config="$CLUSTER_SCRIPTS/kwok/stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds=40 \
  --cidr="$POD_CIDR" \
  --node-ip=10.255.0.1 \
  --server-address="127.0.0.1:$KWOK_PORT"

start registry serve "$(registry_config registry)"
start registry-auth serve "$(registry_config registry-auth)"

wait_healthy kube-controller-manager
wait_healthy kube-scheduler
wait_healthy kwok
wait_healthy registry
wait_healthy registry-auth
wait_healthy metrics-exporter
wait_healthy prometheus

write_kubeconfig "$KUBECONFIG_FILE.tmp" admin rewind-admin
mv -f "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"

# ---------------------------------------------------------------- nodes
nodes_yaml() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
spec: {}
EOF
  done
}
if ! out=$(nodes_yaml | kubectl apply -f - 2>&1); then
  say "ERROR: creating the fake nodes failed: $out"
  fail kube-apiserver "rejected the fake nodes"
fi

# wait_for <component to blame> <description> <command...>: poll until the command succeeds.
wait_for() {
  local comp=$1 what=$2 deadline=$((SECONDS + TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    for c in "${COMPONENTS[@]}"; do check_alive "$c"; done
    ((SECONDS < deadline)) || fail "$comp" "did not make $what within ${TIMEOUT}s"
    sleep 0.5
  done
}
nodes_ready_untainted() {
  # one line per node: "<Ready status> <taints>"; all must be "True" with no taints.
  local lines
  lines=$(kubectl get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.spec.taints}{"\n"}{end}')
  [[ $(grep -c '^True $' <<<"$lines") -ge $NODES ]]
}
wait_for kwok "$NODES fake node(s) Ready" \
  kubectl wait --for=condition=Ready node -l type=kwok --timeout=2s
wait_for kube-controller-manager "the nodes schedulable (not-ready taints removed)" nodes_ready_untainted
wait_for kube-controller-manager "the default ServiceAccount in namespace default" \
  kubectl -n default get serviceaccount default
# Checked last: by now Prometheus has had several seconds for its first scrape.
wait_for prometheus "a successful scrape of the exporter (up{job=\"$PROMETHEUS_JOB\"} == 1)" prometheus_scrapes

DONE=1
say "cluster is up: Kubernetes $("$BIN/kube-apiserver" --version | awk '{print $2}'), $NODES KWOK node(s), in $((SECONDS - T0))s"
say "registries: 127.0.0.1:$REGISTRY_PORT (open), 127.0.0.1:$REGISTRY_AUTH_PORT (basic auth, user $REGISTRY_USER); addresses and password in $REGISTRY_ENV_FILE"
say "prometheus: http://127.0.0.1:$PROMETHEUS_PORT, scraping every 1s the exporter at 127.0.0.1:$METRICS_EXPORTER_PORT (series files in $SERIES_DIR); see $PROMETHEUS_ENV_FILE"
say "logs: $LOG_DIR   stop: tests/cluster/down.sh (make cluster-down)"
echo "export KUBECONFIG=$KUBECONFIG_FILE"
