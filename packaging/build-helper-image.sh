#!/usr/bin/env bash
# packaging/build-helper-image.sh [--arch amd64|arm64] [OUTPUT]: the VM-side
# helper image as an archive, so that netconnect ships it without a
# registry. The release tarball puts it in share/netconnect/ as
# netconnect-helper-linux-<arch>.tar.gz (Homebrew's pkgshare); `netconnect
# up` loads the one for the engine's architecture when the image is missing
# (--helper-archive names another one). scripts/release.sh calls this once
# per architecture.
#
# The image (tag netconnect-helper:<version>, what `up` looks for) is built
# by helper-image/build.sh (a static netconnect and Debian's iptables, both
# backends, in a FROM-scratch image),
# then `docker save | gzip`. Default architecture: this machine's; a Mac's
# Docker VM is linux/arm64 on Apple Silicon, linux/amd64 on Intel. Both
# build on an x86_64 Linux machine (scripts/setup.sh installs the arm64
# cross linker). Default OUTPUT:
# target/netconnect-helper-<version>-linux-<arch>.tar.gz. Prints OUTPUT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=helper-image/static-build.sh
. "$ROOT/helper-image/static-build.sh"
PROG=build-helper-image.sh
[[ $(uname -s) == Linux ]] || {
  echo "$PROG: error: run this on Linux; the image holds a Linux binary" >&2
  exit 1
}
HOST=$(host_arch) || { echo "$PROG: error: unsupported build machine $(uname -m); use an x86_64 or arm64 Linux machine" >&2; exit 1; }
ARCH=$HOST
if [[ ${1:-} == --arch ]]; then
  [[ $# -ge 2 ]] || { echo "$PROG: error: --arch needs a value: amd64 or arm64" >&2; exit 1; }
  ARCH=$2
  shift 2
fi
helper_target "$ARCH" >/dev/null || { echo "$PROG: error: unknown architecture '$ARCH'; use amd64 or arm64" >&2; exit 1; }
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
OUT=${1:-$ROOT/target/netconnect-helper-$VERSION-linux-$ARCH.tar.gz}
TAG=netconnect-helper:$VERSION

# An image of another architecture must not stay under the tag `up` uses
# on this machine (its helper would not start here): put back whatever the
# tag named before.
before=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
built=
restore() {
  [[ $ARCH != "$HOST" && -n $built && $built != "$before" ]] || return 0
  if [[ -n $before ]]; then
    docker tag "$before" "$TAG" >/dev/null 2>&1 || true
  else
    docker rmi "$TAG" >/dev/null 2>&1 || true
  fi
  docker rmi "$built" >/dev/null 2>&1 || true
}
trap restore EXIT

bash "$ROOT/helper-image/build.sh" --arch "$ARCH" "$TAG" >/dev/null
built=$(docker image inspect --format '{{.Id}}' "$TAG")
mkdir -p "$(dirname "$OUT")"
# Written aside and renamed: a half-written archive must never be loadable.
docker save "$TAG" | gzip -9 >"$OUT.partial"
mv "$OUT.partial" "$OUT"
echo "$PROG: $TAG (linux/$ARCH) -> $OUT" >&2
echo "$OUT"
