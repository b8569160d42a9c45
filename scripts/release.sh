#!/usr/bin/env bash
# scripts/release.sh [DIR]: everything a release ships, in one command, into
# DIR (default: $NETCONNECT_DIST, else dist/ in the source tree):
#
#   netconnect-<v>-macos-arm64.tar.gz    Apple Silicon: the universal binary
#   netconnect-<v>-macos-x86_64.tar.gz   Intel: the same binary
#       each laid out as the Homebrew formula installs it: bin/netconnect
#       (arm64 + x86_64, macOS 11 or newer), share/netconnect/ with the
#       helper image archive of that Mac's Docker VM
#       (netconnect-helper-linux-arm64.tar.gz or -amd64), man pages, and
#       bash/zsh/fish completions
#   netconnect-helper-<v>-linux-{arm64,amd64}.tar.gz   the helper image
#       archives alone, for `netconnect up --helper-archive` (a VM of the
#       other architecture, e.g. an emulated one)
#   SHA256SUMS                           of the four files above
#   netconnect.rb                        the Homebrew formula, that is
#       packaging/homebrew/netconnect.rb with each sha256 set to the one of
#       the file its url names (copy it to the tap)
#
# Runs on an x86_64 (or arm64) Linux machine prepared by scripts/setup.sh:
# cargo-zigbuild and zig link the macOS binary without a macOS SDK, Debian's
# aarch64 gcc links the static arm64 helper, and a Docker engine (legacy
# builder) builds the FROM-scratch images of both architectures.
set -euo pipefail

PROG=release.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}
T0=$SECONDS
step() { printf '%s: [%3ds] %s\n' "$PROG" $((SECONDS - T0)) "$*" >&2; }

OUT=${1:-${NETCONNECT_DIST:-$ROOT/dist}}
[[ $(uname -s) == Linux ]] || die "run this on Linux (x86_64 or arm64) prepared by scripts/setup.sh"
# shellcheck source=helper-image/static-build.sh
. "$ROOT/helper-image/static-build.sh"
HOST=$(host_arch) || die "unsupported build machine $(uname -m); use an x86_64 or arm64 Linux machine"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[[ -n $VERSION ]] || die "no version in Cargo.toml"
FORMULA=packaging/homebrew/netconnect.rb

# Prerequisites, each with the one thing to do.
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup and put ~/.cargo/bin on PATH"
for t in aarch64-apple-darwin x86_64-apple-darwin; do
  rustup target list --installed 2>/dev/null | grep -qx "$t" || die "Rust target $t is missing; run 'sudo bash scripts/setup.sh'"
done
[[ -x ${NETCONNECT_ZIG_VENV:-/opt/netconnect-zig}/bin/cargo-zigbuild ]] ||
  die "no cargo-zigbuild in ${NETCONNECT_ZIG_VENV:-/opt/netconnect-zig} (zig links the macOS binary); run 'sudo bash scripts/setup.sh'"
# shellcheck source=scripts/zig-env.sh
. "$ROOT/scripts/zig-env.sh"
command -v docker >/dev/null || die "docker not found; install the Docker engine (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running? are you root or in the docker group?)"
command -v sha256sum >/dev/null || die "sha256sum not found; install coreutils"
grep -q "releases/download/v$VERSION/" "$FORMULA" ||
  die "$FORMULA does not download v$VERSION (Cargo.toml's version); update its urls"

# A fresh directory: never a mix of two builds, never a half-written one.
if [[ -e $OUT ]]; then
  [[ -d $OUT ]] || die "$OUT exists and is not a directory; remove it or name another"
  if [[ -n $(ls -A "$OUT") && ! -e $OUT/SHA256SUMS ]]; then
    die "$OUT is not empty and holds no SHA256SUMS (not a release made by this script); remove it or name another"
  fi
fi
mkdir -p "$(dirname "$OUT")"
NEW=$(mktemp -d "$(dirname "$OUT")/.release.XXXXXX")
chmod 755 "$NEW" # mktemp makes it private; a release is for everyone to read
trap 'rm -rf "$NEW"' EXIT

# 1. The static Linux helpers, both architectures in one cargo run (the two
# final links share the cores); build-helper-image.sh then finds them built.
step "static netconnect for linux/amd64 and linux/arm64"
static_build "$PROG" amd64 arm64

# 2. The macOS binary: cargo-zigbuild builds both Apple targets in one cargo
# run and joins them into one fat Mach-O. zig-env.sh set
# MACOSX_DEPLOYMENT_TARGET=11.0; without it the binary would need macOS 15.
step "universal macOS netconnect (arm64 + x86_64, macOS $MACOSX_DEPLOYMENT_TARGET+)"
cargo zigbuild --quiet --release --locked --target universal2-apple-darwin
MAC_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/universal2-apple-darwin/release/netconnect
[[ -f $MAC_BIN ]] || die "cargo zigbuild made no $MAC_BIN; run 'cargo zigbuild --release --target universal2-apple-darwin' to see why"

# 3. The helper images, `docker save | gzip`. The host's architecture last:
# the tag netconnect-helper:<v> stays on the image this engine can run.
for arch in arm64 amd64; do
  [[ $arch != "$HOST" ]] || continue
  step "helper image archive, linux/$arch"
  bash packaging/build-helper-image.sh --arch "$arch" "$NEW/netconnect-helper-$VERSION-linux-$arch.tar.gz" >/dev/null
done
step "helper image archive, linux/$HOST"
bash packaging/build-helper-image.sh --arch "$HOST" "$NEW/netconnect-helper-$VERSION-linux-$HOST.tar.gz" >/dev/null

# 4. Man pages and completions come from the command line's definition,
# the same on every OS: the host's static build writes them.
step "man pages and completions"
HOST_BIN=$(static_binary "$HOST")
share=$(mktemp -d)
trap 'rm -rf "$NEW" "$share"' EXIT
mkdir -p "$share/share/man/man8" "$share/etc/bash_completion.d" \
  "$share/share/zsh/site-functions" "$share/share/fish/vendor_completions.d"
"$HOST_BIN" man --dir "$share/share/man/man8" >/dev/null
"$HOST_BIN" completions bash >"$share/etc/bash_completion.d/netconnect"
"$HOST_BIN" completions zsh >"$share/share/zsh/site-functions/_netconnect"
"$HOST_BIN" completions fish >"$share/share/fish/vendor_completions.d/netconnect.fish"

# 5. One tarball per Mac architecture, differing only by the helper archive
# (the VM's architecture is the Mac's). Reproducible given the same inputs:
# sorted, root-owned, dated by the last commit, gzip without a timestamp.
EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
for pair in arm64:arm64 x86_64:amd64; do
  mac=${pair%%:*} vm=${pair##*:}
  step "netconnect-$VERSION-macos-$mac.tar.gz (helper linux/$vm)"
  top=$(mktemp -d)
  d=$top/netconnect-$VERSION
  mkdir -p "$d/bin" "$d/share/netconnect"
  cp -R "$share/." "$d/"
  install -m 0755 "$MAC_BIN" "$d/bin/netconnect"
  cp "$NEW/netconnect-helper-$VERSION-linux-$vm.tar.gz" "$d/share/netconnect/netconnect-helper-linux-$vm.tar.gz"
  chmod -R u=rwX,go=rX "$d"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" \
    -C "$top" -cf - "netconnect-$VERSION" | gzip -9 -n >"$NEW/netconnect-$VERSION-macos-$mac.tar.gz"
  rm -rf "$top"
done

# 6. Checksums, then the formula filled in from them: each sha256 line
# takes the checksum of the file named by the url line above it.
step "SHA256SUMS and the Homebrew formula"
(cd "$NEW" && sha256sum -- *.tar.gz >SHA256SUMS)
awk -v sums="$NEW/SHA256SUMS" '
  BEGIN { while ((getline line < sums) > 0) { split(line, f, /  /); sum[f[2]] = f[1] } }
  /^[[:space:]]*url "/ { u = $0; sub(/^[^"]*"/, "", u); sub(/".*/, "", u); n = split(u, p, "/"); file = p[n] }
  /^[[:space:]]*sha256 "/ {
    if (!(file in sum)) { print "no artifact named " file " (url above line " NR ")" > "/dev/stderr"; exit 1 }
    sub(/"[0-9a-f]*"/, "\"" sum[file] "\"")
    file = ""
  }
  { print }
' "$FORMULA" >"$NEW/netconnect.rb" || die "$FORMULA names a file this release does not make (see above); fix its urls"
if command -v ruby >/dev/null; then
  ruby -c "$NEW/netconnect.rb" >/dev/null || die "the generated formula does not parse (ruby -c $NEW/netconnect.rb)"
fi

rm -rf "$OUT"
mv "$NEW" "$OUT"
trap 'rm -rf "$share"' EXIT
step "done: $OUT"
(cd "$OUT" && ls -l --block-size=K -- * | awk '{ printf "  %8s  %s\n", $5, $9 }') >&2
echo "$OUT"
