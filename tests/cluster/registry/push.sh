#!/usr/bin/env bash
# Pushes a tiny one-layer OCI image to one of the test cluster's registries with plain curl, and
# prints its manifest digest (Docker-Content-Digest, checked against sha256 of the manifest).
#
#   tests/cluster/registry/push.sh [--auth] <repository> <tag> [seed]
#
# --auth uses the basic-auth registry with the credentials from target/cluster/registry.env.
# The layer is a tar holding one file `seed.txt` with <seed> (default: the tag) in it, made
# reproducibly, so the same seed gives the same digest. Pushing another seed under the same tag
# moves the tag. Needs a running cluster (make cluster-up).
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"

use_auth=0
if [[ ${1:-} == --auth ]]; then use_auth=1; shift; fi
if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $ME [--auth] <repository> <tag> [seed]" >&2
  exit 2
fi
REPO=$1 TAG=$2 SEED=${3:-$2}
[[ -r $REGISTRY_ENV_FILE ]] || { say "no $REGISTRY_ENV_FILE: start the cluster first (make cluster-up)"; exit 1; }
env_value() { sed -n "s/^$1=//p" "$REGISTRY_ENV_FILE"; }
R=$(env_value REWIND_TEST_REGISTRY)
curl_cfg=""
if [[ $use_auth == 1 ]]; then
  R=$(env_value REWIND_TEST_REGISTRY_AUTH)
  # Credentials go to curl through a config on stdin, not on its command line.
  curl_cfg="user = \"$(env_value REWIND_TEST_REGISTRY_USER):$(env_value REWIND_TEST_REGISTRY_PASSWORD)\""
fi
reg_curl() { printf '%s\n' "$curl_cfg" | curl -sS --fail-with-body -K - "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%s' "$SEED" >"$work/seed.txt"
tar --create --file="$work/layer.tar" --directory="$work" --mtime=@0 --owner=0 --group=0 \
  --numeric-owner --mode=0644 --format=ustar seed.txt
sha() { sha256sum <"$1" | cut -d' ' -f1; }
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$(sha "$work/layer.tar")" >"$work/config.json"

# push_blob <file>: POST opens an upload, PUT to its Location with ?digest= completes it.
push_blob() {
  local digest location
  digest=sha256:$(sha "$1")
  location=$(reg_curl -X POST -D - -o /dev/null "http://$R/v2/$REPO/blobs/uploads/" |
    tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  [[ -n $location ]] || { say "the registry at $R gave no upload location"; exit 1; }
  reg_curl -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$1" \
    -o /dev/null "$location&digest=$digest"
  echo "$digest"
}
layer=$(push_blob "$work/layer.tar")
config=$(push_blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
  "$config" "$(stat -c %s "$work/config.json")" "$layer" "$(stat -c %s "$work/layer.tar")" >"$work/manifest.json"
reported=$(reg_curl -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary @"$work/manifest.json" -D - -o /dev/null "http://$R/v2/$REPO/manifests/$TAG" |
  tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')
expected=sha256:$(sha "$work/manifest.json")
if [[ $reported != "$expected" ]]; then
  say "the registry reported digest '$reported' for a manifest whose sha256 is $expected"
  exit 1
fi
say "pushed $R/$REPO:$TAG"
echo "$reported"
