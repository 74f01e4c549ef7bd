#!/usr/bin/env bash
# Builds the operator's image WITHOUT a container engine and pushes it to a registry: the
# engine-less twin of the Containerfile (the same files, laid out by deploy/image/rootfs.sh, and
# the same config). `make image` runs it; tests/image.rs runs it and checks what it pushed.
#
#   deploy/image/build.sh                                  # 127.0.0.1:15000/rewind/rewind:<version>
#   IMAGE=registry.example/rewind/rewind:0.1.0 deploy/image/build.sh
#
# 1. cargo build --release --locked --target x86_64-unknown-linux-musl --bin rewind, in a target
#    dir of its own (target/image) so it never waits for the lock of a running `cargo test`;
#    checks that the binary is static and that `rewind --version` says the Cargo.toml version.
# 2. deploy/image/rootfs.sh lays out the root filesystem (the binary without its debug info);
#    GNU tar packs it into the image's one layer, reproducibly (sorted names, mtime 0, owner and
#    group 0, numeric ids).
# 3. crane (built by tests/tools/build.sh from tests/tools/crane/go.mod) pushes that layer on an
#    empty base (OCI media types), then sets the config: platform linux/amd64, user
#    65532:65532, entrypoint /rewind, cmd run, workdir /, env, OCI labels.
# Progress and a summary (digest, sizes, build time) go to stderr; stdout gets one line, the
# pushed image by digest (<repository>@sha256:...).
#
# Environment:
#   IMAGE                    where to push; a tag is required (default
#                            127.0.0.1:${REWIND_REGISTRY_PORT:-15000}/rewind/rewind:<version>,
#                            the local test cluster's open registry)
#   REWIND_IMAGE_INSECURE    1: plain HTTP (or unverified TLS) to the registry; default 1 when the
#                            registry is 127.0.0.1 or localhost, else 0
#   REWIND_IMAGE_SOURCE      the org.opencontainers.image.source label (default empty, as in
#                            the Containerfile)
#   REWIND_IMAGE_TARGET_DIR  cargo's target dir for this build (default <repo>/target/image)
#   REWIND_IMAGE_CA_BUNDLE   the CA bundle to ship (PEM). Default: the Mozilla roots of Debian's
#                            ca-certificates (/usr/share/ca-certificates/mozilla/*.crt), not the
#                            host's /etc/ssl/certs/ca-certificates.crt, which also holds whatever
#                            CAs this machine added locally (a company proxy's, ...)
# Needs: cargo with the x86_64-unknown-linux-musl target, a musl C compiler (Debian musl-tools:
# ring compiles C), GNU tar, readelf and objcopy (binutils), Go (to build crane the first time).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
say() { printf 'image/build.sh: %s\n' "$*" >&2; }
die() { printf 'image/build.sh: error: %s\n' "$*" >&2; exit 1; }

TARGET=x86_64-unknown-linux-musl
TARGET_DIR=${REWIND_IMAGE_TARGET_DIR:-$ROOT/target/image}
CA_BUNDLE=${REWIND_IMAGE_CA_BUNDLE:-}
MOZILLA_CAS=/usr/share/ca-certificates/mozilla

# [package] fields of Cargo.toml (simple `key = "value"` lines).
package_field() {
  awk -v key="$1" '/^\[/ { p = ($0 == "[package]"); next }
    p && $1 == key && $2 == "=" { sub(/^[^"]*"/, ""); sub(/"[^"]*$/, ""); print; exit }' \
    "$ROOT/Cargo.toml"
}
VERSION=$(package_field version)
DESCRIPTION=$(package_field description)
[[ -n $VERSION && -n $DESCRIPTION ]] || die "cannot read version and description from $ROOT/Cargo.toml"

IMAGE=${IMAGE:-127.0.0.1:${REWIND_REGISTRY_PORT:-15000}/rewind/rewind:$VERSION}
last=${IMAGE##*/}
[[ $IMAGE == */* && $last == *:* && $IMAGE != *@* ]] ||
  die "IMAGE=$IMAGE: give <registry>/<repository>:<tag> (a tag, not a digest)"
REPOSITORY=${IMAGE%:*}
REGISTRY=${IMAGE%%/*}
case $REGISTRY in
  127.0.0.1:* | 127.0.0.1 | localhost:* | localhost) insecure_default=1 ;;
  *) insecure_default=0 ;;
esac
crane_flags=()
[[ ${REWIND_IMAGE_INSECURE:-$insecure_default} == 1 ]] && crane_flags+=(--insecure)

# Everything missing is named at once, before the (long) build.
missing=()
command -v cargo >/dev/null || missing+=("cargo (Rust)")
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
  missing+=("the Rust target $TARGET (rustup target add $TARGET)")
fi
command -v x86_64-linux-musl-gcc >/dev/null || command -v musl-gcc >/dev/null ||
  missing+=("a musl C compiler for ring (apt-get install musl-tools)")
tar --version 2>/dev/null | grep -q 'GNU tar' || missing+=("GNU tar")
command -v readelf >/dev/null && command -v objcopy >/dev/null ||
  missing+=("readelf and objcopy (apt-get install binutils)")
if [[ -n $CA_BUNDLE ]]; then
  [[ -s $CA_BUNDLE ]] || missing+=("the CA bundle REWIND_IMAGE_CA_BUNDLE=$CA_BUNDLE")
else
  compgen -G "$MOZILLA_CAS/*.crt" >/dev/null ||
    missing+=("the Mozilla CA certificates in $MOZILLA_CAS (apt-get install ca-certificates)")
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  die "cannot build the image; missing: $(printf '%s; ' "${missing[@]}")"
fi

CRANE=$("$ROOT/tests/tools/build.sh" crane) || die "could not build crane (see above)"

# Run from `cargo test` (tests/image.rs), this script inherits the test crate's CARGO_PKG_*,
# CARGO_MANIFEST_* and the like. Build scripts watch some of them (ring's: rerun-if-env-changed),
# so the release build would start over each time it runs from a test after `make image` and
# the other way round: drop them (cargo sets them for its own children anyway).
for var in $(compgen -e); do
  case $var in
    CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_BIN_EXE_* | CARGO_CRATE_NAME | CARGO_BIN_NAME | \
      CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | OUT_DIR) unset "$var" ;;
  esac
done
say "building the release binary for $TARGET in $TARGET_DIR ..."
start=$SECONDS
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --locked --target "$TARGET" --bin rewind) ||
  die "cargo build failed"
build_secs=$((SECONDS - start))
BIN=$TARGET_DIR/$TARGET/release/rewind

if readelf -lW "$BIN" | grep -q 'INTERP'; then
  die "$BIN is dynamically linked (it has an ELF interpreter); the image has no libc"
fi
got=$("$BIN" --version) || die "$BIN --version failed"
[[ $got == "rewind $VERSION" ]] || die "$BIN --version says '$got', expected 'rewind $VERSION'"

WORK=$(mktemp -d "$TARGET_DIR/image-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [[ -z $CA_BUNDLE ]]; then
  CA_BUNDLE=$WORK/ca-certificates.crt
  # In name order, each ending in a newline, as update-ca-certificates joins them.
  LC_ALL=C awk 1 "$MOZILLA_CAS"/*.crt >"$CA_BUNDLE"
fi
"$ROOT/deploy/image/rootfs.sh" "$BIN" "$CA_BUNDLE" "$WORK/rootfs"
LAYER=$WORK/layer.tar
(cd "$WORK/rootfs" && tar --create --file="$LAYER" --format=gnu --sort=name --mtime=@0 \
  --owner=0 --group=0 --numeric-owner etc rewind)

say "pushing $IMAGE with $CRANE ..."
"$CRANE" append "${crane_flags[@]}" --oci-empty-base --new_layer "$LAYER" --new_tag "$IMAGE" >/dev/null ||
  die "crane append (push of the layer to $IMAGE) failed"
# Keep this config in step with the Containerfile's final stage (tests/image.rs compares them).
"$CRANE" mutate "${crane_flags[@]}" "$IMAGE" --tag "$IMAGE" \
  --set-platform linux/amd64 \
  --user 65532:65532 \
  --entrypoint /rewind \
  --cmd run \
  --workdir / \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label org.opencontainers.image.title=rewind \
  --label "org.opencontainers.image.description=$DESCRIPTION" \
  --label "org.opencontainers.image.version=$VERSION" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label "org.opencontainers.image.source=${REWIND_IMAGE_SOURCE:-}" >/dev/null ||
  die "crane mutate (the image config of $IMAGE) failed"

DIGEST=$("$CRANE" digest "${crane_flags[@]}" "$IMAGE") || die "crane digest $IMAGE failed"
MANIFEST=$("$CRANE" manifest "${crane_flags[@]}" "$IMAGE") || die "crane manifest $IMAGE failed"
# One layer: its descriptor is the one object in "layers" (the config's comes before it).
layer_size=$(sed -E 's/.*"layers":\[\{[^}]*"size":([0-9]+).*/\1/' <<<"$MANIFEST")
config_size=$(sed -E 's/.*"config":\{[^}]*"size":([0-9]+).*/\1/' <<<"$MANIFEST")
[[ $layer_size =~ ^[0-9]+$ && $config_size =~ ^[0-9]+$ ]] || die "unexpected manifest: $MANIFEST"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

say "pushed $IMAGE"
say "  digest:  $DIGEST"
say "  size:    $(mib $((layer_size + config_size))) to pull (gzipped layer $layer_size bytes + config $config_size bytes);" \
  "$(mib "$(stat -c %s "$LAYER")") unpacked, of which the binary $(mib "$(stat -c %s "$WORK/rootfs/rewind")")" \
  "($(mib "$(stat -c %s "$BIN")") before its debug info was stripped)"
say "  release build: ${build_secs}s (cargo; 0-2s when nothing changed)"
echo "$REPOSITORY@$DIGEST"
