# shellcheck shell=bash
# helper-image/static-build.sh: source it. static_build ARCH...: one
# `cargo build --release` of a static netconnect for each ARCH (amd64,
# arm64) in a single cargo run, so the two final links share the cores.
# helper-image/build.sh builds one architecture; scripts/release.sh builds
# both at once first. Same target, same flags, same environment: cargo's
# cache is shared between them and with the e2e tests, so whichever runs
# second compiles nothing.
#
# A static glibc build: the image has no libc. The helper resolves names
# from /etc/hosts itself, so it needs no NSS modules either. arm64 from an
# x86_64 host links with Debian's gcc-aarch64-linux-gnu, which is also the C
# compiler of ring (zig cannot link glibc statically).

# helper_target ARCH: the Rust target of a linux/ARCH helper.
helper_target() {
  case $1 in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    *) return 1 ;;
  esac
}

# host_arch: this machine's architecture, in Docker's words.
host_arch() {
  case $(uname -m) in
    x86_64 | amd64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) return 1 ;;
  esac
}

# static_build PROG ARCH...: PROG names the caller in error lines.
static_build() {
  local prog=$1 arch target host
  shift
  host=$(host_arch) || { echo "$prog: error: unsupported build machine $(uname -m); use an x86_64 or arm64 Linux machine" >&2; return 1; }
  local args=()
  for arch in "$@"; do
    target=$(helper_target "$arch") || { echo "$prog: error: unknown architecture '$arch'; use amd64 or arm64" >&2; return 1; }
    rustup target list --installed 2>/dev/null | grep -qx "$target" ||
      { echo "$prog: error: Rust target $target is missing; run 'sudo bash scripts/setup.sh' (or 'rustup target add $target')" >&2; return 1; }
    if [[ $arch == arm64 && $host != arm64 ]]; then
      command -v aarch64-linux-gnu-gcc >/dev/null ||
        { echo "$prog: error: aarch64-linux-gnu-gcc not found (cross linker for linux/arm64); run 'sudo bash scripts/setup.sh'" >&2; return 1; }
    fi
    args+=(--target "$target")
  done
  # Set whatever the architectures asked: these variables only touch the
  # aarch64 target, so an amd64-only build keeps its cache either way.
  if [[ $host != arm64 ]]; then
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  fi
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --locked "${args[@]}"
}

# static_binary ARCH: where static_build put it.
static_binary() {
  echo "${CARGO_TARGET_DIR:-$ROOT/target}/$(helper_target "$1")/release/netconnect"
}
