#!/usr/bin/env bash
# The Rewind demo (make run): release 1.0.0 of a Deployment on the local cluster, then a bad
# 2.0.0 whose pods never become Ready, and Rewind putting 1.0.0's exact digests back.
# DEMO_KEEP=1 leaves the operator running at the end (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/../.."
NS=rewind-demo
BIN_DIR=$(tests/cluster/build.sh --print-bin-dir)
export KUBECONFIG=$PWD/target/cluster/kubeconfig
k() { "$BIN_DIR/kubectl" -n "$NS" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# show_until <seconds> <jsonpath phase value>: print the Release every 2 s until its phase is
# the given one, or fail after the timeout.
show_until() {
  local limit=$1 want=$2 start=$SECONDS phase=""
  while :; do
    k get rls shop --no-headers -o wide 2>/dev/null | sed "s/^/[$((SECONDS - start))s] /" || true
    phase=$(k get rls shop -o jsonpath='{.status.phase}' 2>/dev/null || true)
    [ "$phase" = "$want" ] && return 0
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      echo "the Release did not reach $want within ${limit}s; operator log: target/demo-operator.log" >&2
      return 1
    fi
    sleep 2
  done
}

say "installing the CRDs and a fresh namespace $NS"
target/debug/rewind crds | "$BIN_DIR/kubectl" apply --server-side --force-conflicts -f - >/dev/null
"$BIN_DIR/kubectl" delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
"$BIN_DIR/kubectl" create namespace "$NS" >/dev/null

REGISTRY=$(sed -n 's/^REWIND_TEST_REGISTRY=//p' target/cluster/registry.env)
say "pushing the demo images to the local registry $REGISTRY"
# 2.0.0 lives under a path with the word 'unready': the simulated kubelet keeps its pods
# NotReady even once the image is pinned to a digest.
for ref in demo/shop-api:0.9.0 demo/shop-api:1.0.0 demo/unready/shop-api:2.0.0; do
  echo "  $REGISTRY/$ref -> $(tests/cluster/registry/push.sh "${ref%:*}" "${ref##*:}")"
done

say "starting the operator (log: target/demo-operator.log)"
target/debug/rewind run --namespace "$NS" --metrics-addr 127.0.0.1:0 --insecure-registry "$REGISTRY" \
  2>target/demo-operator.log &
OPERATOR=$!
[ "${DEMO_KEEP:-0}" = 1 ] || trap 'kill $OPERATOR 2>/dev/null || true' EXIT

say "applying the Deployment (running 0.9.0), a RollbackPolicy and Release 1.0.0"
sed "s|REGISTRY|$REGISTRY|g" deploy/demo/shop.yaml | k apply -f -
k get rls shop -o wide --no-headers >/dev/null 2>&1 || true
show_until 90 Healthy
echo "Deployment image now: $(k get deploy shop -o jsonpath='{.spec.template.spec.containers[0].image}')"
k get rls shop -o jsonpath='{range .status.history[*]}  revision {.revision}: {.version} {.images[0].image} digest {.images[0].digest} ({.outcome}){"\n"}{end}'

say "shipping 2.0.0, whose pods never become Ready (readiness timeout 15s in the demo policy)"
k patch rls shop --type merge -p "{\"spec\":{\"version\":\"2.0.0\",\"images\":[{\"container\":\"api\",\"image\":\"$REGISTRY/demo/unready/shop-api:2.0.0\"}]}}"
show_until 90 RolledBack

echo "Deployment image now: $(k get deploy shop -o jsonpath='{.spec.template.spec.containers[0].image}')"

say "what Rewind recorded: the Events on the Release"
k get events --field-selector involvedObject.kind=Release,involvedObject.name=shop --sort-by=.metadata.creationTimestamp \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message --no-headers 2>/dev/null \
  || k get events --sort-by=.metadata.creationTimestamp

say "what Rewind recorded: kubectl rewind status shop"
target/debug/kubectl-rewind -n "$NS" status shop

say "the revisions: kubectl rewind history shop"
target/debug/kubectl-rewind -n "$NS" history shop

say "done"
echo "2.0.0 stays blocked until spec.version changes or: target/debug/kubectl-rewind -n $NS retry shop"
echo "roll back by hand: target/debug/kubectl-rewind -n $NS rollback shop --to <version> --wait"
echo "(make install-plugin puts kubectl-rewind on PATH: then 'kubectl rewind …')"
[ "${DEMO_KEEP:-0}" = 1 ] && { echo "operator still running (pid $OPERATOR); KUBECONFIG=$KUBECONFIG"; wait $OPERATOR; }
exit 0
