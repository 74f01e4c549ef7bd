#!/bin/sh
# Lays out the operator image's whole root filesystem in an empty directory. Both ways of
# building the image use it, so they hold the same files with the same modes:
#   - Containerfile (its build stage runs this, then the final stage copies the directory);
#   - deploy/image/build.sh (tars the directory into the image's one layer, without an engine).
#
# Usage: deploy/image/rootfs.sh <rewind binary> <CA bundle (PEM)> <empty output directory>
#
# Result (everything owned by whoever runs this; the layer maps it to 0:0):
#   /rewind                              0755  the static operator binary (ENTRYPOINT), without
#                                              its debug info (the release profile's line tables
#                                              and the musl std's DWARF: ~100 MB of 125 MB); the
#                                              symbols stay, so a panic's backtrace names functions
#   /etc/ssl/certs/ca-certificates.crt   0644  CA bundle, where rustls-native-certs looks
#   /etc/passwd, /etc/group              0644  root and nonroot (65532), the image's USER
# No shell and no other binary: the image runs only /rewind.
# POSIX sh on purpose: the Containerfile's build stage (Alpine) has only busybox sh. Needs
# objcopy (binutils).
set -eu

[ $# -eq 3 ] || { echo "usage: $0 <rewind binary> <CA bundle> <empty output dir>" >&2; exit 2; }
bin=$1 ca=$2 out=$3
[ -f "$bin" ] || { echo "rootfs.sh: no binary at $bin" >&2; exit 1; }
command -v objcopy >/dev/null || { echo "rootfs.sh: objcopy is missing (binutils)" >&2; exit 1; }
[ -s "$ca" ] || { echo "rootfs.sh: no CA bundle at $ca (install the ca-certificates package)" >&2; exit 1; }
grep -q 'BEGIN CERTIFICATE' "$ca" || { echo "rootfs.sh: $ca holds no PEM certificate" >&2; exit 1; }
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "rootfs.sh: $out is not empty" >&2
  exit 1
fi

mkdir -p "$out/etc/ssl/certs"
chmod 0755 "$out" "$out/etc" "$out/etc/ssl" "$out/etc/ssl/certs"
objcopy --strip-debug "$bin" "$out/rewind"
chmod 0755 "$out/rewind"
cp "$ca" "$out/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$out/etc/ssl/certs/ca-certificates.crt"
printf '%s\n' 'root:x:0:0:root:/:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/:/sbin/nologin' \
  >"$out/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$out/etc/group"
chmod 0644 "$out/etc/passwd" "$out/etc/group"
