#!/usr/bin/env bash
# helper-image/build.sh [TAG]: build the VM-side helper image locally, with no
# registry: a static Linux build of netconnect in a FROM-scratch image.
# Default TAG: netconnect-helper:<version in Cargo.toml>. Needs cargo and a
# running Docker engine (the legacy builder is enough).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
TAG=${1:-netconnect-helper:$VERSION}
case $(uname -m) in
  x86_64) TARGET=x86_64-unknown-linux-gnu ;;
  aarch64 | arm64) TARGET=aarch64-unknown-linux-gnu ;;
  *) echo "build.sh: error: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

command -v docker >/dev/null || { echo "build.sh: error: docker not found" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build.sh: error: the Docker engine does not answer (is dockerd running?)" >&2; exit 1; }

# A static glibc build: the image has no libc. The helper resolves names from
# /etc/hosts itself, so it needs no NSS modules either.
echo "build.sh: building a static netconnect for $TARGET" >&2
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --locked --target "$TARGET"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "target/$TARGET/release/netconnect" "$ctx/netconnect"
cp helper-image/Dockerfile "$ctx/Dockerfile"
echo "build.sh: docker build -t $TAG" >&2
DOCKER_BUILDKIT=0 docker build --quiet -t "$TAG" "$ctx" >/dev/null
echo "$TAG"
