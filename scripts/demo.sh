#!/usr/bin/env bash
# demo.sh: netconnect end to end on one Linux machine, in a minute.
#
# Two network namespaces stand in for the Mac and the Docker VM, joined by a
# veth "cable" (10.210.0.1 <-> 10.210.0.2). netconnect runs on both sides
# (nc0 on the "mac", ncvm0 on the "vm"), is configured with `wg set` through
# its UAPI socket, and the mac pings the vm's tunnel address 10.33.33.2.
# Everything is removed on exit. Root; needs scripts/setup.sh's packages.
#
# Usage: sudo scripts/demo.sh
#   NC_IMPL='wireguard-go -f {IFACE}' scripts/demo.sh   # other implementation
#                                                        # (skips the build)
set -euo pipefail

PROG=demo.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NC_DEFAULT="$ROOT/target/release/netconnect device {IFACE}"
NC=${NC_IMPL:-$NC_DEFAULT}

NS_MAC=nc-demo-mac NS_VM=nc-demo-vm
MAC_UL=10.210.0.1 VM_UL=10.210.0.2
MAC_TUN=10.33.33.1 VM_TUN=10.33.33.2
MAC_IF=nc0 VM_IF=ncvm0
MAC_PORT=51820 VM_PORT=51821
UAPI_DIR=/var/run/wireguard
START_TIMEOUT=10 # seconds for the UAPI socket to appear

KEYS="" PIDS=() CLEANED=0 CREATED_UAPI_DIR=0

step() { printf '==> %s\n' "$*"; }
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

alive() {
  local s
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  s=${s##*) }
  [[ ${s:0:1} != Z ]]
}

# stop PID: SIGTERM its process group, SIGKILL after 3 s; true if TERM sufficed.
stop() {
  local pid=$1 i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}

cleanup() {
  local rc=$?
  ((CLEANED)) && return 0
  CLEANED=1
  set +e
  if ((${#PIDS[@]})); then
    step "tearing down: stopping both daemons (SIGTERM), deleting namespaces"
    local p
    for p in "${PIDS[@]}"; do
      stop "$p" || echo "    warning: pid $p ignored SIGTERM for 3 s and was killed"
    done
    # netconnect promises to remove its socket and TUN on SIGTERM: check.
    local s
    for s in "$UAPI_DIR/$MAC_IF.sock" "$UAPI_DIR/$VM_IF.sock"; do
      [[ -e $s ]] && echo "    warning: $s was left behind after SIGTERM" && rm -f "$s"
    done
  fi
  ip netns del "$NS_MAC" 2>/dev/null
  ip netns del "$NS_VM" 2>/dev/null
  ((CREATED_UAPI_DIR)) && rmdir "$UAPI_DIR" 2>/dev/null
  [[ -n $KEYS ]] && rm -rf "$KEYS"
  if ((rc == 0)); then step "done: everything removed"; else step "cleaned up after the failure"; fi
  return 0
}

show_log() {
  [[ -s $1 ]] || return 0
  echo "    last output of $2:"
  tail -n 15 "$1" | sed 's/^/    | /'
}

# start NS IFACE: start the implementation in NS, wait for its UAPI socket.
start() {
  local ns=$1 iface=$2 cmd sock pid deadline
  cmd=${NC//\{IFACE\}/$iface}
  sock="$UAPI_DIR/$iface.sock"
  rm -f "$sock"
  ip netns exec "$ns" setsid bash -c "$cmd" </dev/null >"$KEYS/$iface.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  deadline=$((SECONDS + START_TIMEOUT))
  until [[ -S $sock ]]; do
    if ! alive "$pid"; then
      local rc=0
      wait "$pid" || rc=$?
      show_log "$KEYS/$iface.log" "'$cmd'"
      die "'$cmd' exited (status $rc) without creating $sock"
    fi
    if ((SECONDS >= deadline)); then
      show_log "$KEYS/$iface.log" "'$cmd'"
      die "'$cmd' did not create $sock within ${START_TIMEOUT}s"
    fi
    sleep 0.1
  done
}

# configure NS IFACE KEY PORT PEER_PUB PEER_ENDPOINT LOCAL_TUN PEER_TUN
configure() {
  local ns=$1 iface=$2 key=$3 port=$4 ppub=$5 pend=$6 ltun=$7 ptun=$8
  # The private key goes as a file path, never on a command line.
  timeout 10 ip netns exec "$ns" wg set "$iface" private-key "$key" listen-port "$port" \
    peer "$ppub" endpoint "$pend" allowed-ips "$ptun/32" ||
    { show_log "$KEYS/$iface.log" "$iface's daemon"; die "'wg set $iface' failed"; }
  ip -n "$ns" addr add "$ltun" peer "$ptun" dev "$iface"
  ip -n "$ns" link set "$iface" up
}

main() {
  ((EUID == 0)) || die "must run as root (namespaces, TUN devices): sudo $0"
  [[ -c /dev/net/tun ]] || die "/dev/net/tun is missing: run 'modprobe tun' (or see scripts/setup.sh)"
  local c
  for c in ip wg ping timeout setsid; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found: run 'sudo bash scripts/setup.sh' first"
  done

  if [[ $NC == "$NC_DEFAULT" ]]; then
    step "building netconnect (cargo build --release)"
    if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
      PATH="${HOME:-/root}/.cargo/bin:$PATH"
    fi
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed (see above)"
  else
    step "using NC_IMPL='$NC' instead of netconnect (no build)"
  fi

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # Left over from an interrupted run? These names belong to this demo.
  ip netns del "$NS_MAC" 2>/dev/null || true
  ip netns del "$NS_VM" 2>/dev/null || true

  step "creating namespaces '$NS_MAC' ($MAC_UL) and '$NS_VM' ($VM_UL), joined by veth"
  ip netns add "$NS_MAC"
  ip netns add "$NS_VM"
  ip -n "$NS_MAC" link add veth-mac type veth peer name veth-vm netns "$NS_VM"
  ip -n "$NS_MAC" addr add "$MAC_UL/24" dev veth-mac
  ip -n "$NS_VM" addr add "$VM_UL/24" dev veth-vm
  ip -n "$NS_MAC" link set veth-mac up
  ip -n "$NS_VM" link set veth-vm up
  ip -n "$NS_MAC" link set lo up
  ip -n "$NS_VM" link set lo up

  KEYS=$(mktemp -d /tmp/nc-demo.XXXXXX) # 0700: only root can read the keys
  step "generating fresh key pairs for both sides in $KEYS (mode 0700)"
  (
    umask 077
    wg genkey >"$KEYS/mac.key"
    wg genkey >"$KEYS/vm.key"
  )
  local mac_pub vm_pub
  mac_pub=$(wg pubkey <"$KEYS/mac.key")
  vm_pub=$(wg pubkey <"$KEYS/vm.key")

  if [[ ! -d $UAPI_DIR ]]; then
    mkdir -p "$UAPI_DIR"
    CREATED_UAPI_DIR=1
  fi
  step "starting '${NC//\{IFACE\}/$MAC_IF}' in $NS_MAC"
  start "$NS_MAC" "$MAC_IF"
  step "starting '${NC//\{IFACE\}/$VM_IF}' in $NS_VM"
  start "$NS_VM" "$VM_IF"

  step "configuring $MAC_IF: $MAC_TUN, peer $VM_TUN at $VM_UL:$VM_PORT (wg set, key from file)"
  configure "$NS_MAC" "$MAC_IF" "$KEYS/mac.key" "$MAC_PORT" "$vm_pub" "$VM_UL:$VM_PORT" "$MAC_TUN" "$VM_TUN"
  step "configuring $VM_IF: $VM_TUN, peer $MAC_TUN at $MAC_UL:$MAC_PORT"
  configure "$NS_VM" "$VM_IF" "$KEYS/vm.key" "$VM_PORT" "$mac_pub" "$MAC_UL:$MAC_PORT" "$VM_TUN" "$MAC_TUN"

  step "pinging $VM_TUN from the mac side through the tunnel (3 pings)"
  local rc=0
  timeout 20 ip netns exec "$NS_MAC" ping -n -c 3 -W 2 "$VM_TUN" || rc=$?

  step "wg show $MAC_IF (mac side)"
  timeout 10 ip netns exec "$NS_MAC" wg show "$MAC_IF" || echo "    warning: 'wg show $MAC_IF' failed"

  if ((rc != 0)); then
    show_log "$KEYS/$MAC_IF.log" "the mac side"
    show_log "$KEYS/$VM_IF.log" "the vm side"
    die "ping through the tunnel failed (status $rc)"
  fi
  step "the tunnel works: $MAC_TUN -> $VM_TUN"
}

main "$@"
