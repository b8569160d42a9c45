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
)

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

if ((${#missing[@]})); then
  log=$(mktemp /tmp/netconnect-setup.XXXXXX.log)
  apt_opts=(-o DPkg::Lock::Timeout=300 -q)
  export DEBIAN_FRONTEND=noninteractive
  if ! {
    apt-get "${apt_opts[@]}" update &&
      apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
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
for c in wg wireguard-go iperf3 ip ss ping python3 ruby groff setsid taskset timeout; do
  command -v "$c" >/dev/null 2>&1 || die "'$c' not on PATH although its package is installed: fix PATH (need /usr/sbin and /usr/bin)"
done

if ((${#missing[@]})); then
  echo "$PROG: ok: installed ${missing[*]}; all ${#PACKAGES[@]} packages present, root, /dev/net/tun"
else
  echo "$PROG: ok: all ${#PACKAGES[@]} packages already present, root, /dev/net/tun"
fi
