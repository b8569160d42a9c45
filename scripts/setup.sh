#!/usr/bin/env bash
# setup.sh: make this (Debian) machine ready to build, test, demo and benchmark
# netconnect. Idempotent: installs only the packages that are missing, and runs
# `apt-get update` only when it has something to install. Quiet on success
# (one summary line); on failure one line saying what to do, after apt's log.
#
# Usage: bash scripts/setup.sh        (as root; CI runs it from .ci/run)
set -euo pipefail

PROG=setup.sh

# Runtime and test tools. --no-install-recommends matters: wireguard-tools
# recommends wireguard-dkms / a kernel, which we neither want nor can use
# (the kernel here has no WireGuard module; that is why netconnect exists).
PACKAGES=(
  wireguard-go    # reference userspace implementation: peer in tests and benches
  wireguard-tools # wg: configures netconnect through its UAPI socket
  iperf3          # bench/run.sh throughput tests
  iproute2        # ip netns / veth / addresses; ss
  iptables
  iputils-ping
  procps
  util-linux # setsid, taskset, nsenter
  curl
  busybox-static # tiny static userland for test containers
  python3
  ruby       # ruby -c checks the Homebrew formula (tests/homebrew_formula.rs)
  groff-base # renders the generated man page in tests/ops_e2e.rs
  python3-venv # the venv that holds zig and cargo-zigbuild (macOS builds)
  gcc-aarch64-linux-gnu # links the static arm64 helper (Apple-silicon VMs)
  libc6-dev-arm64-cross
  binutils # readelf: helper-image/iptables-rootfs.sh follows NEEDED entries
  bind9-dnsutils # dig: the names tests ask netconnect's DNS server as a user would
  dnsperf        # bench/dns.sh: queries a second and latency
  dnsmasq-base   # bench/dns.sh: the reference server measured in the same run
  podman         # tests/runtimes_e2e.rs: a second real engine (Docker-compatible API)
  netavark       # Podman's network backend (without it: CNI plugins, not installed)
  aardvark-dns   # netavark's DNS for container names
  docker-compose # tests/compose_e2e.rs: Compose v1 (1.29), containers named project_service_1
)
# helper-image/iptables-rootfs.sh puts Debian's iptables of each helper
# architecture into the image with `apt-get download iptables:ARCH`; dpkg
# must know the foreign one (nothing of it is installed here).
HELPER_ARCHS=(amd64 arm64)

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

((EUID == 0)) || die "must run as root (namespaces, TUN devices, apt): run 'sudo bash scripts/setup.sh'"

# TUN is the one thing no package can give us.
if [[ ! -c /dev/net/tun ]]; then
  die "/dev/net/tun is missing: run 'modprobe tun' on the host (in a container: start it with --device /dev/net/tun --cap-add NET_ADMIN)"
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  die "dpkg/apt-get not found: this script supports Debian/Ubuntu only; install by hand: ${PACKAGES[*]}"
fi

installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done

added_arch=()
for a in "${HELPER_ARCHS[@]}"; do
  [[ $a != "$(dpkg --print-architecture)" ]] || continue
  dpkg --print-foreign-architectures | grep -qx "$a" && continue
  dpkg --add-architecture "$a" || die "dpkg --add-architecture $a failed; run it by hand and re-run"
  added_arch+=("$a")
done

if ((${#missing[@]} + ${#added_arch[@]})); then
  log=$(mktemp /tmp/netconnect-setup.XXXXXX.log)
  apt_opts=(-o DPkg::Lock::Timeout=300 -q)
  export DEBIAN_FRONTEND=noninteractive
  if ! {
    apt-get "${apt_opts[@]}" update &&
      { ((${#missing[@]} == 0)) || apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"; }
  } >"$log" 2>&1; then
    tail -n 20 "$log" | sed 's/^/    | /' >&2
    die "apt-get failed installing ${missing[*]}: see its last lines above (full log: $log); fix that (mirror reachable? package name?) and re-run"
  fi
  rm -f "$log"
  for p in "${missing[@]}"; do
    installed "$p" || die "package '$p' still not installed after apt-get; install it by hand and re-run"
  done
fi

# Tools we call by name, in case a package installed but PATH is odd.
for c in wg wireguard-go iperf3 ip ss ping python3 ruby groff setsid taskset timeout nsenter podman unshare \
  iptables-legacy iptables-nft readelf dpkg-deb docker-compose; do
  command -v "$c" >/dev/null 2>&1 || die "'$c' not on PATH although its package is installed: fix PATH (need /usr/sbin and /usr/bin)"
done

# Cross builds: the two Apple targets (CI checks, lints and links them) and
# arm64 Linux (the helper image for Apple-silicon Macs' Docker VM).
RUST_TARGETS=(aarch64-apple-darwin x86_64-apple-darwin aarch64-unknown-linux-gnu)
if command -v rustup >/dev/null 2>&1; then
  have=$(rustup target list --installed)
  for t in "${RUST_TARGETS[@]}"; do
    grep -qx "$t" <<<"$have" || rustup target add "$t" >/dev/null 2>&1 ||
      die "rustup target add $t failed; run it by hand and re-run"
  done
else
  die "rustup not found: the macOS and arm64 cross builds need 'rustup target add ${RUST_TARGETS[*]}'"
fi

# zig links Mach-O binaries without a macOS SDK, through cargo-zigbuild.
# Pinned, in a venv of their own: Debian's pip refuses system-wide installs.
# scripts/zig-env.sh puts this venv on PATH for the cross builds.
ZIG_VENV=${NETCONNECT_ZIG_VENV:-/opt/netconnect-zig}
ZIG_PINS=(ziglang==0.17.1 cargo-zigbuild==0.24.1)
# The stamp names the pins a venv was made with: a change of pins remakes it.
zig_ok() {
  [[ -x $ZIG_VENV/bin/cargo-zigbuild && $(cat "$ZIG_VENV/.netconnect-pins" 2>/dev/null) == "${ZIG_PINS[*]}" ]]
}
if ! zig_ok; then
  log=$(mktemp /tmp/netconnect-setup-zig.XXXXXX.log)
  if ! { rm -rf "$ZIG_VENV" && python3 -m venv "$ZIG_VENV" && "$ZIG_VENV/bin/pip" install -q "${ZIG_PINS[@]}" &&
    echo "${ZIG_PINS[*]}" >"$ZIG_VENV/.netconnect-pins"; } >"$log" 2>&1; then
    tail -n 20 "$log" | sed 's/^/    | /' >&2
    die "installing ${ZIG_PINS[*]} into $ZIG_VENV failed (full log: $log); is python3-venv installed and PyPI reachable?"
  fi
  rm -f "$log"
  zig_ok || die "$ZIG_VENV lacks ${ZIG_PINS[*]} after pip install; remove $ZIG_VENV and re-run"
fi

if ((${#missing[@]})); then
  echo "$PROG: ok: installed ${missing[*]}; all ${#PACKAGES[@]} packages present, root, /dev/net/tun"
else
  echo "$PROG: ok: all ${#PACKAGES[@]} packages already present, root, /dev/net/tun"
fi
