#!/usr/bin/env bash
# packaging/build-helper-image.sh [OUTPUT]: the VM-side helper image as an
# archive, so that netconnect ships it without a registry. Homebrew installs
# it as share/netconnect/netconnect-helper.tar.gz (pkgshare); `netconnect up`
# loads it into the engine when the image is missing (--helper-archive names
# another one).
#
# The image is built for this machine's architecture by helper-image/build.sh
# (a static netconnect in a FROM-scratch image), then `docker save | gzip`.
# Default OUTPUT: target/netconnect-helper-<version>-linux-<arch>.tar.gz.
#
# Which architecture a Mac needs is the one of its Docker VM:
#   - Apple Silicon (Docker Desktop, Colima, OrbStack): linux/arm64. Run this
#     script on an arm64 Linux machine (a CI runner, or a Linux VM on the Mac).
#   - Intel Macs: linux/amd64. Run it on an x86_64 Linux machine.
# A cross build would need a static cross toolchain for ring's C code; one
# native build per architecture is simpler and is what the release uses.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
case $(uname -m) in
  x86_64) ARCH=amd64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) echo "build-helper-image.sh: error: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
[[ $(uname -s) == Linux ]] || {
  echo "build-helper-image.sh: error: run this on Linux (linux/$ARCH); the image holds a Linux binary" >&2
  exit 1
}
OUT=${1:-$ROOT/target/netconnect-helper-$VERSION-linux-$ARCH.tar.gz}
TAG=netconnect-helper:$VERSION

bash "$ROOT/helper-image/build.sh" "$TAG" >/dev/null
mkdir -p "$(dirname "$OUT")"
# Written aside and renamed: a half-written archive must never be loadable.
docker save "$TAG" | gzip -9 >"$OUT.partial"
mv "$OUT.partial" "$OUT"
echo "build-helper-image.sh: $TAG (linux/$ARCH) -> $OUT" >&2
echo "$OUT"
