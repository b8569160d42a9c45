#!/usr/bin/env bash
# helper-image/build.sh [--arch amd64|arm64] [TAG]: build the VM-side helper
# image locally, with no registry: a static Linux build of netconnect and
# Debian's iptables for ARCH (both backends; helper-image/iptables-rootfs.sh,
# which caches the packages under target/) in a FROM-scratch image. Default TAG: netconnect-helper:<version in Cargo.toml>;
# default architecture: this machine's. A Mac's Docker VM is linux/arm64 on
# Apple Silicon, linux/amd64 on Intel. Needs cargo and a running Docker
# engine (the legacy builder is enough: FROM scratch needs no emulation,
# even for another architecture). Prints TAG.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=helper-image/static-build.sh
. "$ROOT/helper-image/static-build.sh"
ARCH=
if [[ ${1:-} == --arch ]]; then
  [[ $# -ge 2 ]] || { echo "build.sh: error: --arch needs a value: amd64 or arm64" >&2; exit 1; }
  ARCH=$2
  shift 2
fi
[[ -n $ARCH ]] || ARCH=$(host_arch) || { echo "build.sh: error: unsupported architecture $(uname -m); pass --arch amd64 or --arch arm64" >&2; exit 1; }
helper_target "$ARCH" >/dev/null || { echo "build.sh: error: unknown architecture '$ARCH'; use amd64 or arm64" >&2; exit 1; }
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
TAG=${1:-netconnect-helper:$VERSION}

command -v docker >/dev/null || { echo "build.sh: error: docker not found; install the Docker engine (apt-get install docker.io)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build.sh: error: the Docker engine does not answer (is dockerd running?)" >&2; exit 1; }

echo "build.sh: building a static netconnect for linux/$ARCH" >&2
static_build build.sh "$ARCH"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$(static_binary "$ARCH")" "$ctx/netconnect"
echo "build.sh: Debian's iptables for linux/$ARCH" >&2
bash "$ROOT/helper-image/iptables-rootfs.sh" "$ARCH" "$ctx/rootfs"
cp helper-image/Dockerfile "$ctx/Dockerfile"
echo "build.sh: docker build --platform linux/$ARCH -t $TAG" >&2
DOCKER_BUILDKIT=0 docker build --quiet --platform "linux/$ARCH" -t "$TAG" "$ctx" >/dev/null
echo "$TAG"
