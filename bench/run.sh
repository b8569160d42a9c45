#!/usr/bin/env bash
# bench/run.sh: benchmark netconnect against wireguard-go. See bench/README.md.
#
#   bench/run.sh [host] [wg-bench options]  netconnect (host side) vs wireguard-go,
#                                           both against a wireguard-go peer (interop)
#   bench/run.sh pair [wg-bench options]    netconnect<->netconnect vs
#                                           wireguard-go<->wireguard-go (0.0.20250522)
#   bench/run.sh idle [--window S] [--settle S]
#                                           idle CPU, wakeups and RSS with a peer
#
# host/pair run the shared harness wg-bench.sh (WG_BENCH overrides its path)
# after `cargo build --release`; extra options go to it (--reps 1, --time 3,
# --tests tcp,udp, --csv FILE, ...; later options win). NC_IMPL overrides the
# implementation under test (a wg-bench IMPL: a command template with {IFACE},
# or wireguard-go / boringtun), e.g. NC_IMPL='wireguard-go -f {IFACE}' to try
# this script before netconnect works; the build is then skipped unless
# NC_BUILD=1. Root only; all traffic stays inside namespaces created here.
set -euo pipefail

PROG=bench/run.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WG_BENCH=${WG_BENCH:-$ROOT/../shared/bench/wg-bench.sh}
NC_DEFAULT="$ROOT/target/release/netconnect device {IFACE}"
# The reference: upstream wireguard-go 0.0.20250522 (TUN TSO/GRO, UDP
# GSO/GRO), not Debian's 2022 build. WG_REF overrides the binary.
WG_REF=${WG_REF:-$ROOT/../shared/bench/wireguard-go-0.0.20250522/wireguard-go}
REF="$WG_REF -f {IFACE}"
if [[ -n ${NC_IMPL:-} ]]; then
  NC=$NC_IMPL
  NC_BUILD=${NC_BUILD:-0}
else
  NC=$NC_DEFAULT
  NC_BUILD=${NC_BUILD:-1}
fi

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

build() {
  ((NC_BUILD)) || return 0
  if ! command -v cargo >/dev/null 2>&1; then
    [[ -x ${HOME:-/root}/.cargo/bin/cargo ]] || die "cargo not found: install the Rust toolchain (rustup)"
    PATH="${HOME:-/root}/.cargo/bin:$PATH"
  fi
  log "building: cargo build --release"
  (cd "$ROOT" && cargo build --release) || die "cargo build --release failed (see above)"
  [[ -x $ROOT/target/release/netconnect ]] || die "build succeeded but $ROOT/target/release/netconnect is missing"
}

run_wg_bench() {
  [[ -f $WG_BENCH ]] || die "wg-bench.sh not found at $WG_BENCH: set WG_BENCH=/path/to/shared/bench/wg-bench.sh"
  [[ -x $WG_REF ]] || die "the reference wireguard-go is not at $WG_REF: set WG_REF=/path/to/wireguard-go-0.0.20250522/wireguard-go"
  build
  log "running: bash $(printf '%q ' "$WG_BENCH" "$@")"
  exec bash "$WG_BENCH" "$@"
}

# ---------------------------------------------------------------------------
# idle mode: our own small harness (wg-bench has no idle test).

UAPI_DIR=/var/run/wireguard
NS_A="ncidle-a-$$" NS_B="ncidle-b-$$"
A_UL=10.201.0.1 B_UL=10.201.0.2   # veth (underlay)
A_TUN=10.33.33.1 B_TUN=10.33.33.2 # tunnel
A_PORT=51820 B_PORT=51821
START_TIMEOUT=10 CTL_TIMEOUT=10 UP_TIMEOUT=10 STOP_GRACE=3
WINDOW=10 # idle seconds sampled
# Seconds of silence before sampling. > 10 s on purpose: a peer that received
# data and sent nothing back owes a passive keepalive after 10 s (WireGuard's
# Keepalive-Timeout); that one is protocol, not idle overhead.
SETTLE=12

WORK="" NAP_PID="" NS_MADE=0 CREATED_UAPI_DIR=0 CLEANED=0
PGIDS=() SOCKS=()
HZ=$(getconf CLK_TCK)

alive() {
  local s
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  s=${s##*) }
  [[ ${s:0:1} != Z ]]
}

# stop_group PID: TERM the process group, KILL after a grace; sets STOP_HOW.
stop_group() {
  local pid=$1 i
  STOP_HOW='gone'
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  STOP_HOW='term'
  for ((i = 0; i < STOP_GRACE * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    STOP_HOW='kill'
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  ((CLEANED)) && return 0
  CLEANED=1
  local p s
  [[ -n $NAP_PID ]] && kill "$NAP_PID" 2>/dev/null
  for p in "${PGIDS[@]}"; do stop_group "$p"; done
  if ((NS_MADE)); then
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
  fi
  for s in "${SOCKS[@]}"; do rm -f "$s"; done
  if ((CREATED_UAPI_DIR)); then rmdir "$UAPI_DIR" 2>/dev/null || true; fi
  [[ -n $WORK ]] && rm -rf "$WORK"
  return 0
}

# nap S: sleep that a signal interrupts at once (bash runs traps only between
# foreground commands, so a plain 12 s sleep would delay Ctrl-C's cleanup).
nap() {
  sleep "$1" &
  NAP_PID=$!
  wait "$NAP_PID"
  NAP_PID=""
}

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found: run 'bash scripts/setup.sh'"; }

resolve_impl() {
  case $1 in
    wireguard-go) echo 'wireguard-go -f {IFACE}' ;;
    boringtun | boringtun-cli) echo 'boringtun-cli -f --disable-drop-privileges {IFACE}' ;;
    *'{IFACE}'*) echo "$1" ;;
    *) die "implementation '$1' is neither wireguard-go, boringtun nor a template containing {IFACE}" ;;
  esac
}

fail_with_log() {
  if [[ -s $2 ]]; then
    log "last output of the implementation:"
    tail -n 20 "$2" | sed 's/^/    | /' >&2
  fi
  die "$1"
}

# start_impl NS TEMPLATE IFACE LOG WHO: start in its own process group, wait
# for the UAPI socket; sets IMPL_PID (the socket's owner) and IMPL_LAUNCH.
start_impl() {
  local ns=$1 tmpl=$2 iface=$3 out=$4 who=$5 cmd sock pid rc=0 owner deadline
  cmd=${tmpl//\{IFACE\}/$iface}
  sock="$UAPI_DIR/$iface.sock"
  SOCKS+=("$sock")
  rm -f "$sock"
  ip netns exec "$ns" setsid bash -c "$cmd" </dev/null >"$out" 2>&1 &
  pid=$!
  PGIDS+=("$pid")
  deadline=$((SECONDS + START_TIMEOUT))
  while [[ ! -S $sock ]]; do
    if ! alive "$pid"; then
      wait "$pid" || rc=$?
      ((rc == 0)) || fail_with_log "$who '$cmd' exited (status $rc) before creating $sock" "$out"
    fi
    ((SECONDS < deadline)) || fail_with_log "$who '$cmd' did not create $sock within ${START_TIMEOUT}s" "$out"
    sleep 0.1
  done
  owner=$(ip netns exec "$ns" ss -xlpn 2>/dev/null | grep -F " $sock " | grep -o 'pid=[0-9]*' | head -n 1 || true)
  IMPL_PID=${owner#pid=}
  [[ -n $IMPL_PID ]] || IMPL_PID=$pid
  [[ $IMPL_PID == "$pid" ]] || PGIDS+=("$IMPL_PID")
  IMPL_LAUNCH=$pid
}

# configure NS IFACE KEY PORT PEER_PUB PEER_UL PEER_PORT LOCAL_TUN PEER_TUN
# No persistent-keepalive: off is WireGuard's default.
configure() {
  local ns=$1 iface=$2 key=$3 port=$4 ppub=$5 pul=$6 pport=$7 ltun=$8 ptun=$9 rc=0
  timeout -k 2 "$CTL_TIMEOUT" ip netns exec "$ns" wg set "$iface" listen-port "$port" \
    private-key "$key" peer "$ppub" endpoint "$pul:$pport" allowed-ips "$ptun/32" 2>"$WORK/err" || rc=$?
  ((rc == 0)) || { CONF_ERR="'wg set $iface' failed (status $rc): $(tr '\n' ' ' <"$WORK/err")"; return 1; }
  if ! ip -n "$ns" addr add "$ltun" peer "$ptun" dev "$iface" 2>"$WORK/err" ||
    ! ip -n "$ns" link set dev "$iface" mtu 1420 up 2>>"$WORK/err"; then
    CONF_ERR="ip setup of $iface failed: $(tr '\n' ' ' <"$WORK/err")"
    return 1
  fi
}

# sample PID: "cpu_ticks ctx_switches threads rss_kib" of the whole process.
# Context switches are per thread in /proc, so they are summed over tasks.
sample() {
  local pid=$1 s f t cs=0 n=0 rss
  read -r s <"/proc/$pid/stat"
  s=${s##*) }
  read -r -a f <<<"$s"
  for t in /proc/"$pid"/task/*/status; do
    local v
    v=$(awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {s += $2} END {print s + 0}' "$t" 2>/dev/null) || continue
    cs=$((cs + v))
    n=$((n + 1))
  done
  rss=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$pid/status")
  echo "$((f[11] + f[12])) $cs $n $rss"
}

tasks_of() {
  local t out=""
  for t in /proc/"$1"/task/*; do out+="${t##*/} "; done
  echo "$out"
}

# idle_one LABEL TEMPLATE N: one measurement; appends a result line.
idle_one() {
  local label=$1 tmpl=$2 n=$3 aif="nci$$a$3" bif="nci$$b$3"
  ((${#aif} <= 15)) || die "interface name $aif too long"
  log "$label: starting ('$tmpl') with a wireguard-go peer"
  start_impl "$NS_B" "wireguard-go -f {IFACE}" "$bif" "$WORK/peer$n.log" "peer wireguard-go"
  local bpid=$IMPL_PID blaunch=$IMPL_LAUNCH
  start_impl "$NS_A" "$tmpl" "$aif" "$WORK/impl$n.log" "$label"
  local apid=$IMPL_PID alaunch=$IMPL_LAUNCH
  configure "$NS_B" "$bif" "$WORK/b.key" "$B_PORT" "$A_PUB" "$A_UL" "$A_PORT" "$B_TUN" "$A_TUN" ||
    fail_with_log "peer: $CONF_ERR" "$WORK/peer$n.log"
  configure "$NS_A" "$aif" "$WORK/a.key" "$A_PORT" "$B_PUB" "$B_UL" "$B_PORT" "$A_TUN" "$B_TUN" ||
    fail_with_log "$label: $CONF_ERR" "$WORK/impl$n.log"

  # One ping does the handshake (retried while the handshake completes).
  local deadline=$((SECONDS + UP_TIMEOUT))
  until timeout -k 1 3 ip netns exec "$NS_A" ping -n -q -c 1 -W 1 "$B_TUN" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail_with_log "$label: tunnel $A_TUN -> $B_TUN not up within ${UP_TIMEOUT}s" "$WORK/impl$n.log"
    sleep 0.2
  done
  log "$label: handshake done (pid $apid); ${SETTLE}s settle, then ${WINDOW}s sampled"
  nap "$SETTLE"
  alive "$apid" || fail_with_log "$label died while idle" "$WORK/impl$n.log"
  local s0 s1 tk0 tk1
  tk0=$(tasks_of "$apid")
  read -r -a s0 <<<"$(sample "$apid")"
  nap "$WINDOW"
  alive "$apid" || fail_with_log "$label died while idle" "$WORK/impl$n.log"
  read -r -a s1 <<<"$(sample "$apid")"
  tk1=$(tasks_of "$apid")
  local ticks=$((s1[0] - s0[0])) cs=$((s1[1] - s0[1])) note=""
  [[ $tk0 == "$tk1" ]] || note="threads_changed(${s0[2]}->${s1[2]};wakeups_approx)"
  local wps
  wps=$(awk -v c="$cs" -v w="$WINDOW" 'BEGIN {printf "%.1f", c / w}')
  RESULTS+=("$(printf '%-13s idle_cpu_ticks=%d idle_wakeups_per_s=%s idle_rss_kib=%d threads=%d%s' \
    "$label" "$ticks" "$wps" "${s1[3]}" "${s1[2]}" "${note:+ $note}")")
  [[ $n == 1 ]] && { NC_TICKS=$ticks NC_RSS=${s1[3]} NC_WPS=$wps; }
  [[ $n == 2 ]] && WG_WPS=$wps

  # Stop the measured side first and check it cleans up after itself.
  local sock="$UAPI_DIR/$aif.sock"
  stop_group "$alaunch"
  [[ $apid == "$alaunch" ]] || stop_group "$apid"
  local how=$STOP_HOW
  case $how in
    kill) NOTES+=("$label: did not exit within ${STOP_GRACE}s of SIGTERM (killed)") ;;
    *)
      [[ -e $sock ]] && NOTES+=("$label: left $sock behind after SIGTERM")
      ip -n "$NS_A" link show "$aif" >/dev/null 2>&1 && NOTES+=("$label: left TUN $aif behind after SIGTERM")
      ;;
  esac
  stop_group "$blaunch"
  [[ $bpid == "$blaunch" ]] || stop_group "$bpid"
  rm -f "$sock" "$UAPI_DIR/$bif.sock"
  ip -n "$NS_A" link del "$aif" 2>/dev/null || true
  ip -n "$NS_B" link del "$bif" 2>/dev/null || true
}

run_idle() {
  while (($#)); do
    case $1 in
      -h | --help) usage; exit 0 ;;
      --window | --settle)
        if (($# < 2)) || [[ ! $2 =~ ^[0-9]+$ ]]; then die "$1 needs a number of seconds"; fi
        if [[ $1 == --window ]]; then WINDOW=$2; else SETTLE=$2; fi
        shift 2
        ;;
      *) die "idle: unknown option '$1' (idle takes --window S, --settle S)" ;;
    esac
  done
  ((WINDOW > 0)) || die "--window must be > 0"
  ((EUID == 0)) || die "must run as root (namespaces, TUN devices)"
  [[ -c /dev/net/tun ]] || die "/dev/net/tun missing: TUN support is required"
  local c
  for c in ip ss wg wireguard-go ping timeout setsid awk; do need "$c"; done
  local tmpl
  tmpl=$(resolve_impl "$NC")
  build
  RESULTS=() NOTES=()

  trap cleanup EXIT
  trap 'log "interrupted; cleaning up"; exit 130' INT
  trap 'log "terminated; cleaning up"; exit 143' TERM
  WORK=$(mktemp -d /tmp/nc-idle.XXXXXX)
  if [[ ! -d $UAPI_DIR ]]; then
    mkdir -p "$UAPI_DIR"
    CREATED_UAPI_DIR=1
  fi
  (
    umask 077
    wg genkey >"$WORK/a.key"
    wg genkey >"$WORK/b.key"
  )
  A_PUB=$(wg pubkey <"$WORK/a.key")
  B_PUB=$(wg pubkey <"$WORK/b.key")

  NS_MADE=1
  if ! {
    ip netns add "$NS_A" && ip netns add "$NS_B" &&
      ip -n "$NS_A" link add veth0 type veth peer name veth0 netns "$NS_B" &&
      ip -n "$NS_A" addr add "$A_UL/24" dev veth0 &&
      ip -n "$NS_B" addr add "$B_UL/24" dev veth0 &&
      ip -n "$NS_A" link set veth0 up && ip -n "$NS_B" link set veth0 up &&
      ip -n "$NS_A" link set lo up && ip -n "$NS_B" link set lo up
  }; then
    die "cannot build namespaces $NS_A/$NS_B joined by veth"
  fi

  local label=netconnect
  [[ $NC == "$NC_DEFAULT" ]] || label="nc(override)"
  idle_one "$label" "$tmpl" 1
  idle_one wireguard-go 'wireguard-go -f {IFACE}' 2

  echo
  echo "idle: ${WINDOW}s sampled after ${SETTLE}s of silence; peer wireguard-go, keepalive off"
  echo "  A: $tmpl"
  echo "  B: wireguard-go -f {IFACE}"
  echo "(ticks are 1/${HZ} s of utime+stime; wakeups = voluntary+nonvoluntary context switches of all threads / s)"
  local r n
  for r in "${RESULTS[@]}"; do echo "$r"; done
  for n in "${NOTES[@]}"; do echo "note: $n"; done
  local ok_cpu=ok ok_rss=ok ok_wake=ok
  ((NC_TICKS == 0)) || ok_cpu=MISSED
  ((NC_RSS <= 8192)) || ok_rss=MISSED
  awk -v a="$NC_WPS" -v b="$WG_WPS" 'BEGIN {exit !(a <= b)}' || ok_wake=MISSED
  echo "targets ($label): cpu_ticks == 0: $ok_cpu; rss <= 8192 KiB: $ok_rss; wakeups <= wireguard-go's: $ok_wake"
}

# ---------------------------------------------------------------------------

mode=host
case ${1:-} in
  host | pair | idle) mode=$1; shift ;;
  -h | --help | help) usage; exit 0 ;;
  -*) ;; # options for the default mode
  "") ;;
  *) die "unknown mode '$1' (host, pair or idle; see --help)" ;;
esac

case $mode in
  host) run_wg_bench --host "$NC" --peer "$REF" --compare "$REF" --pin --reps 3 "$@" ;;
  pair) run_wg_bench --host "$NC" --peer "$NC" --compare "$REF" --compare-peer "$REF" --pin --reps 3 "$@" ;;
  idle) run_idle "$@" ;;
esac
