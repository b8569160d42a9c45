#!/usr/bin/env bash
# bench/up-idle.sh: what `netconnect up` costs while nothing flows (issue
# 13). Same topology as bench/up.sh and scripts/demo-up.sh: the root
# namespace plays the Docker VM, a namespace joined by veth plays the Mac; a
# container network with one busybox web server. `up` runs in the "Mac"
# against the engine through a counting proxy (bench/lib/count-proxy.py).
# Once a curl through the tunnel answers, the script waits --settle seconds
# (default 15: more than WireGuard's 10 s passive keepalive, which the curl's
# last packets may owe) and then measures a quiet window of --window seconds
# (default 60), sending nothing itself. One line per figure:
#
#   wakeups_per_s    voluntary + involuntary context switches of all of the
#                    process's threads (/proc/PID/task/*/status), per
#                    second; then the same per thread name
#                    (/proc/PID/task/TID/comm), so each source shows
#   cpu_ticks        utime + stime of the process (/proc/PID/stat)
#   underlay_packets rx + tx packets of the Mac's veth (its statistics in
#                    sysfs), and the WireGuard UDP datagrams among them by
#                    kind, from iptables counters in the Mac namespace
#                    (keepalive, handshake, probe-sized data, other data)
#   tunnel_packets   rx + tx packets of the TUN in the Mac namespace
#   docker_requests  HTTP requests `up` sent to the engine in the window,
#                    per path, the long-lived event stream (/events) apart
#
# Idle counts do not depend on optimisation (they count timers, packets and
# requests, not how fast each runs), so this uses the debug build:
# target/debug/netconnect when it is newer than the sources, else
# `cargo build` (not --release, which costs ~10 CPU-minutes on 2 cores). The
# helper image --helper-image (default netconnect-helper:<version>) is used
# as it is when the engine has it; helper-image/build.sh (a static release
# build) runs only when it is missing or with --build-helper. There is no
# --compare: no reference implementation of `up` exists to measure against.
#
# Usage: sudo bench/up-idle.sh [--window S] [--settle S] [--timeline]
#                              [--helper-image TAG] [--build-helper]
#   --timeline  also print, on stderr, one line per second of the window
#               (wakeups per thread name, veth packets, Docker requests)
# Root, a running Docker engine, python3, iptables and the packages of
# scripts/setup.sh. Traffic goes only to what this script creates; all of
# it is removed on exit, also on Ctrl-C. Takes about window + settle + 15 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/mac-ns.sh
. "$ROOT/scripts/lib/mac-ns.sh"
die() {
  echo "bench/up-idle.sh: error: $*" >&2
  exit 1
}
log() { echo "up-idle: $*" >&2; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
WINDOW=60 SETTLE=15 TIMELINE=0 BUILD_HELPER=0 HELPER_IMAGE="netconnect-helper:$VERSION"
while (($#)); do
  case $1 in
    --window | --settle)
      [[ ${2:-} =~ ^[0-9]+$ ]] || die "$1 needs a whole number of seconds"
      if [[ $1 == --window ]]; then WINDOW=$2; else SETTLE=$2; fi
      shift 2
      ;;
    --timeline) TIMELINE=1; shift ;;
    --helper-image) [[ -n ${2:-} ]] || die "--helper-image needs a tag"; HELPER_IMAGE=$2; shift 2 ;;
    --build-helper) BUILD_HELPER=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
((WINDOW > 0)) || die "--window must be > 0"

NS=nc-bidle-mac VM_VETH=ncbidl0 MAC_VETH=ncbidl1 VM_IP=10.210.3.1 MAC_IP=10.210.3.2
NET=nc-bidle-net SUBNET=10.213.252.0/24 WEB=nc-bidle-web VM_IF=ncbidlvm0 PORT=51979
TUN_IF=ncbidl IMAGE=netconnect-demo-busybox:1
BIN=$ROOT/target/debug/netconnect
WORK="" UP_PID="" PROXY_PID=""

cleanup() {
  set +e
  # `up` first, while the proxy still carries its helper removal.
  [[ -n $UP_PID ]] && stop_pid "$UP_PID"
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
  docker rm -f "$WEB" >/dev/null 2>&1
  remove_vm_side "$VM_IF"
  docker network rm "$NET" >/dev/null 2>&1
  remove_mac_ns "$NS" "$VM_VETH"
  [[ -n $WORK ]] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted; cleaning up"; exit 130' INT
trap 'log "terminated; cleaning up"; exit 143' TERM

((EUID == 0)) || die "run as root (namespaces, TUN, the helper's firewall rules)"
for c in ip curl busybox python3 iptables docker; do
  command -v "$c" >/dev/null || die "'$c' not found: run 'sudo bash scripts/setup.sh' first"
done
docker info >/dev/null 2>&1 || die "the Docker engine does not answer"
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then PATH="${HOME:-/root}/.cargo/bin:$PATH"; fi

# What an interrupted earlier run may have left (the names are this script's).
docker rm -f "$WEB" >/dev/null 2>&1 || true
remove_vm_side "$VM_IF" || true
docker network rm "$NET" >/dev/null 2>&1 || true
remove_mac_ns "$NS" "$VM_VETH" || true

if [[ ! -x $BIN ]] || [[ -n $(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$BIN" -print -quit) ]]; then
  log "building the debug binary (cargo build)"
  (cd "$ROOT" && cargo build --quiet --bin netconnect)
fi
if ((BUILD_HELPER)) || ! docker image inspect "$HELPER_IMAGE" >/dev/null 2>&1; then
  log "building the helper image $HELPER_IMAGE (a static release build: minutes)"
  "$ROOT/helper-image/build.sh" "$HELPER_IMAGE" >/dev/null
fi
helper_id=$(docker image inspect -f '{{.Id}}' "$HELPER_IMAGE" | cut -c8-19)
helper_made=$(docker image inspect -f '{{.Created}}' "$HELPER_IMAGE" | cut -c1-16)
build_busybox_image "$IMAGE" || die "building $IMAGE failed"

WORK=$(mktemp -d /tmp/netconnect-bench-idle.XXXXXX)
: >"$WORK/config.toml"
chmod 600 "$WORK/config.toml"
PROXY_SOCK=$WORK/docker.sock PROXY_LOG=$WORK/requests.log UP_LOG=$WORK/up.log
: >"$PROXY_LOG"
python3 "$ROOT/bench/lib/count-proxy.py" "$PROXY_SOCK" /var/run/docker.sock "$PROXY_LOG" &
PROXY_PID=$!
for _ in $(seq 50); do [[ -S $PROXY_SOCK ]] && break; sleep 0.1; done
[[ -S $PROXY_SOCK ]] || die "the counting proxy did not start"

make_mac_ns "$NS" "$VM_VETH" "$MAC_VETH" "$VM_IP" "$MAC_IP"
# WireGuard datagrams by size (IPv4 + UDP headers: 28 bytes): keepalive 32
# bytes of payload, handshake initiation 148 and response 92, cookie reply
# 64; an encrypted 36-byte packet (up's ICMP echo probe and its reply) 68
# from boringtun, which does not pad, or 80 padded as the kernel's does.
ipt() { ip netns exec "$NS" iptables -w 5 "$@"; }
wg_counters_setup() {
  local chain
  ipt -N ncb-in && ipt -N ncb-out &&
    ipt -A INPUT -p udp --dport "$PORT" -j ncb-in &&
    ipt -A OUTPUT -p udp --sport "$PORT" -j ncb-out || return 1
  for chain in ncb-in ncb-out; do
    ipt -A "$chain" -m length --length 60 -m comment --comment keepalive -j RETURN &&
      ipt -A "$chain" -m length --length 176 -m comment --comment handshake -j RETURN &&
      ipt -A "$chain" -m length --length 120 -m comment --comment handshake -j RETURN &&
      ipt -A "$chain" -m length --length 92 -m comment --comment cookie -j RETURN &&
      ipt -A "$chain" -m length --length 96 -m comment --comment probe-sized -j RETURN &&
      ipt -A "$chain" -m length --length 108 -m comment --comment probe-sized -j RETURN &&
      ipt -A "$chain" -m comment --comment other-data -j RETURN || return 1
  done
}
WG_COUNTERS=1
wg_counters_setup >/dev/null 2>&1 || { WG_COUNTERS=0; log "iptables counters in $NS failed; no breakdown of the WireGuard datagrams"; }
docker network create --subnet "$SUBNET" "$NET" >/dev/null
docker run -d --name "$WEB" --network "$NET" "$IMAGE" sh -c 'mkdir -p /www && echo ok > /www/index.html && httpd -f -p 80 -h /www' >/dev/null
web_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$WEB")

log "starting netconnect up in $NS (log: $UP_LOG)"
NETCONNECT_LOG=info ip netns exec "$NS" "$BIN" --config "$WORK/config.toml" --control-socket "$WORK/control.sock" \
  up --docker-host "unix://$PROXY_SOCK" --helper-image "$HELPER_IMAGE" --host-endpoint "$MAC_IP" \
  --listen-port "$PORT" --interface "$TUN_IF" --vm-interface "$VM_IF" >"$UP_LOG" 2>&1 &
UP_PID=$!
ok=0
for _ in $(seq 120); do
  if ip netns exec "$NS" curl -s -m 1 -o /dev/null "http://$web_ip/"; then ok=1; break; fi
  kill -0 "$UP_PID" 2>/dev/null || break
  sleep 0.5
done
((ok)) || { cat "$UP_LOG" >&2; die "no answer from $web_ip through the tunnel"; }
[[ $(cat "/proc/$UP_PID/comm" 2>/dev/null) == netconnect ]] || die "pid $UP_PID is not netconnect"
for _ in $(seq 50); do grep -q "ready: traffic can flow" "$UP_LOG" && break; sleep 0.2; done
grep -q "ready: traffic can flow" "$UP_LOG" || log "warning: up has not said 'ready' (its 200 ms announce timer still runs)"
mode=$(grep -o 'mode="\{0,1\}[a-z]*' "$UP_LOG" | tail -n 1 | sed 's/.*=//; s/"//g')
log "answered; ${SETTLE}s settle, then ${WINDOW}s measured"
sleep "$SETTLE"
kill -0 "$UP_PID" 2>/dev/null || { cat "$UP_LOG" >&2; die "up exited while settling"; }

# snap N: time, process ticks, per-thread counters, interface counters.
snap() {
  local out=$WORK/snap.$1 t tid name cs k v st f
  {
    echo "time $(date +%s.%N)"
    read -r st <"/proc/$UP_PID/stat"
    st=${st##*) }
    read -r -a f <<<"$st"
    echo "proc_ticks $((f[11] + f[12]))"
    for t in /proc/"$UP_PID"/task/*; do
      tid=${t##*/} name="" cs=0
      while read -r k v _; do
        case $k in
          Name:) name=$v ;;
          voluntary_ctxt_switches: | nonvoluntary_ctxt_switches:) cs=$((cs + v)) ;;
        esac
      done 2>/dev/null <"$t/status" || continue
      { read -r st <"$t/stat"; } 2>/dev/null || continue
      st=${st##*) }
      read -r -a f <<<"$st"
      echo "task $tid $name $cs $((f[11] + f[12]))"
    done
    echo "net $(ip netns exec "$NS" cat /sys/class/net/{"$MAC_VETH","$TUN_IF"}/statistics/{rx,tx}_packets | tr '\n' ' ')"
  } >"$out"
}
# wg_counts: "in KIND=N ... out KIND=N ..." from the iptables counters.
wg_counts() {
  ((WG_COUNTERS)) || return 0
  local chain
  for chain in ncb-in ncb-out; do
    ipt -nvxL "$chain" | awk -v dir="${chain#ncb-}" '
      { for (i = 1; i < NF; i++) if ($i == "/*") n[$(i + 1)] += $1 }
      END { printf "%s keepalive=%d handshake=%d cookie=%d probe-sized=%d other-data=%d\n", dir,
              n["keepalive"], n["handshake"], n["cookie"], n["probe-sized"], n["other-data"] }'
  done
}

lines0=$(wc -l <"$UP_LOG")
wg_counts >"$WORK/wg.0"
snap 0
t0_ns=$(date +%s%N)
for ((i = 1; i <= WINDOW; i++)); do
  # To the second after the start, not 1 s after the last sample: a sample
  # takes ~30 ms, which would stretch a 60 s window to 62 s.
  left_ns=$((t0_ns + i * 1000000000 - $(date +%s%N)))
  ((left_ns <= 0)) || sleep "$((left_ns / 1000000000)).$(printf '%09d' $((left_ns % 1000000000)))"
  kill -0 "$UP_PID" 2>/dev/null || { cat "$UP_LOG" >&2; die "up exited during the window"; }
  snap "$i"
done
wg_counts >"$WORK/wg.1"
lines1=$(wc -l <"$UP_LOG")

# delta A B: per-thread-name and total figures between two snapshots.
delta() {
  awk -v P="$PROXY_LOG" '
    FNR == 1 { f++ }
    $1 == "time" { t[f] = $2 }
    $1 == "proc_ticks" { pt[f] = $2 }
    $1 == "task" { cs[f, $2] = $4; tk[f, $2] = $5; name[$2] = $3; seen[f, $2] = 1 }
    $1 == "net" { for (i = 2; i <= 5; i++) net[f, i] = $i }
    END {
      secs = t[2] - t[1]
      for (id in name) {
        n = name[id]
        if (seen[1, id] && seen[2, id]) { d = cs[2, id] - cs[1, id]; dt = tk[2, id] - tk[1, id] }
        else if (seen[2, id]) { d = cs[2, id]; dt = tk[2, id]; note = note " +" n "(" id ")" }
        else { d = 0; dt = 0; note = note " -" n "(" id ")" }
        if (seen[2, id]) threads[n]++
        w[n] += d; tt[n] += dt; total += d
        tids[n] = tids[n] sprintf(" %s=%d", id, d)
      }
      req = 0; ev = 0
      while ((getline line < P) > 0) {
        split(line, r, " ")
        if (r[1] + 0 >= t[1] && r[1] + 0 < t[2]) { if (r[3] ~ /\/events$/) ev++; else req++ }
      }
      printf "secs %.2f\ntotal %d\nticks %d\n", secs, total, pt[2] - pt[1]
      for (n in w) printf "thread %s %d %d %d%s\n", n, threads[n], w[n], tt[n], tids[n]
      printf "net %d %d %d %d\n", net[2, 2] - net[1, 2], net[2, 3] - net[1, 3], net[2, 4] - net[1, 4], net[2, 5] - net[1, 5]
      printf "docker %d %d\nthreads_changed%s\n", req, ev, note
    }' "$WORK/snap.$1" "$WORK/snap.$2"
}

if ((TIMELINE)); then
  echo "timeline: second, wakeups (per thread name), veth rx/tx packets, Docker requests" >&2
  for ((i = 1; i <= WINDOW; i++)); do
    delta $((i - 1)) "$i" | awk -v s="$i" '
      $1 == "total" { tot = $2 } $1 == "thread" && $4 > 0 { th = th sprintf(" %s=%d", $2, $4) }
      $1 == "net" { net = $2 "/" $3 } $1 == "docker" { d = $2 + $3 }
      END { printf "  t=%-3d wakeups=%-3d [%s ] veth=%s docker=%d\n", s, tot, th, net, d }' >&2
  done
fi

delta 0 "$WINDOW" >"$WORK/result"
r() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print }' "$WORK/result"; }
secs=$(r secs)
per_s() { awk -v c="$1" -v s="$secs" 'BEGIN { printf "%.2f", c / s }'; }
per_min() { awk -v c="$1" -v s="$secs" 'BEGIN { printf "%.1f", c * 60 / s }'; }
read -r n_rx n_tx t_rx t_tx <<<"$(r net)"
read -r d_req d_ev <<<"$(r docker)"
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || commit+="+dirty"

echo "up-idle: $(date -u +%Y-%m-%dT%H:%MZ), commit $commit, $BIN (debug), helper $HELPER_IMAGE ($helper_id, built $helper_made) in ${mode:-?} mode"
echo "window ${secs}s after ${SETTLE}s of settle; nothing sent by the script meanwhile"
echo "wakeups_per_s=$(per_s "$(r total)") (voluntary+involuntary context switches of all threads: $(r total) in the window)"
r thread | sort -k3,3nr | while read -r name threads cs ticks tids; do
  # Per thread too when several share a name (tokio's workers).
  echo "  wakeups_per_s[$name]=$(per_s "$cs") threads=$threads cpu_ticks=$ticks$( ((threads > 1)) && echo " (switches by tid:${tids:+ $tids})")"
done
changed=$(r threads_changed)
[[ -z $changed ]] || echo "  threads_changed:$changed (+ started, - ended in the window; their counts are approximate)"
echo "cpu_ticks=$(r ticks) (utime+stime of the process, 1/$(getconf CLK_TCK) s)"
echo "underlay_packets=$((n_rx + n_tx)) (rx $n_rx, tx $n_tx on $MAC_VETH; $(per_min $((n_rx + n_tx))) a minute)"
if ((WG_COUNTERS)); then
  paste -d' ' "$WORK/wg.0" "$WORK/wg.1" | awk '{
      printf "  wireguard_udp_%s", $1
      for (i = 2; i <= 6; i++) { split($i, a, "="); split($(i + 6), b, "="); printf " %s=%d", a[1], b[2] - a[2] }
      printf "\n" }'
fi
echo "tunnel_packets=$((t_rx + t_tx)) (rx $t_rx, tx $t_tx on $TUN_IF)"
echo "docker_requests=$d_req ($(per_min "$d_req") a minute; besides the event stream, of which $d_ev opened in the window)"
awk -v t0="$(awk '$1 == "time" { print $2 }' "$WORK/snap.0")" -v t1="$(awk '$1 == "time" { print $2 }' "$WORK/snap.$WINDOW")" '
  $1 + 0 >= t0 && $1 + 0 < t1 && $3 !~ /\/events$/ {
    p = $3; sub(/^\/v[0-9.]+\//, "/", p)
    k = split(p, seg, "/"); p = ""
    for (i = 2; i <= k; i++) p = p "/" ((length(seg[i]) == 64 && seg[i] ~ /^[0-9a-f]+$/) ? "{id}" : seg[i])
    n[$2 " " p]++ }
  END { for (k in n) printf "  %s %d\n", k, n[k] }' "$PROXY_LOG" | sort
echo "log_lines_in_window=$((lines1 - lines0))"
if ((lines1 > lines0)); then sed -n "$((lines0 + 1)),${lines1}p" "$UP_LOG" | head -n 5 | sed 's/^/  | /'; fi
