#!/usr/bin/env bash
# bench/dns.sh: how fast `netconnect up` answers container names (issue 14),
# against dnsmasq serving the same names in the same run. Same topology as
# bench/up-idle.sh: the root namespace plays the Docker VM (dockerd), a
# namespace joined by veth plays the Mac. --containers busybox containers
# (default 20; a quarter of them, at least 2, are Compose replicas of two
# services, by their labels) on a test network; `up` runs in the "Mac"
# against the real engine and serves <container>.docker.internal and
# <service>.<project>.docker.internal on 10.33.33.1:53. dnsmasq runs in the
# same namespace on 10.33.34.1:53 (an address on its lo) with the same
# name -> address pairs in an --addn-hosts file, --local=/docker.internal/
# (unknown names there are NXDOMAIN), no upstream, no query log.
#
# One query file for both: every container name (A), every service name
# (A), every 4th container name as AAAA (NOERROR, no data: the containers
# have IPv4 only) and unknown names under the domain (NXDOMAIN), --unknown
# percent of the lines (default 20). Before measuring, every distinct
# question in it is asked of both servers with dig; a different status or
# address set stops the script. Then, over UDP, --reps rounds (default 2),
# the order alternating (netconnect dnsmasq, dnsmasq netconnect, ...) so
# neither always goes first, each server in turn:
#
#   throughput  dnsperf -l --duration (default 10) -c --clients (1)
#               -q --outstanding (100): as many queries as it can keep in
#               flight. Latency here is mostly queueing (outstanding / qps).
#   latency     dnsperf -Q --rate (default 5000 qps) -l --duration -v: a
#               load both servers keep up with; percentiles from dnsperf's
#               per-answer lines (dnsperf 2.10 has no histogram of its own;
#               -v costs dnsperf time, which is why the throughput pass
#               runs without it).
#
# With 2 or more CPUs (and no --no-pin), dnsperf runs on CPU 0 and each
# server on CPU 1 from its start (taskset -c), so `up`'s tokio runtime
# sizes itself for one CPU as dnsmasq, single-threaded, has one. Output
# (stdout; progress on stderr):
#
#   header lines   date, commit, binary (release/debug), helper image,
#                  dnsperf and dnsmasq versions, CPUs, load average, pinning
#   names          the containers, what the query file holds
#   check          the questions both servers answered alike, and for four
#                  of them what the check does not compare (flags, TTL, the
#                  authority section, the size of a response without EDNS,
#                  as dnsperf asks)
#   throughput     per rep and server: qps, avg/min/max/stddev latency (ms),
#                  lost queries, NOERROR/NXDOMAIN/other response codes, mean
#                  response bytes, srv_cpu_pct (the server's utime+stime over
#                  the run: near 100 % = it was the limit), srv_us_per_q (its
#                  CPU microseconds per answered query, kernel time
#                  included; usr_us_per_q the user-space part of it, the
#                  rest is system time: syscalls, UDP and loopback work),
#                  perf_cpu_pct (dnsperf's own CPU %: near 100 %
#                  = the load generator was the limit)
#   latency        per rep and server: achieved qps, p50/p90/p99/p99.9/max
#                  (ms), lost
#   memory         per server: VmRSS before any load, VmRSS and VmHWM after
#                  all passes (/proc/PID/status; for netconnect the whole `up`
#                  process: tunnel, Docker client and names)
#   summary        per server: medians over the reps; netconnect/dnsmasq
#                  ratios of qps and of CPU a query, per rep; last a
#                  key=value line
#
# The binary: target/release/netconnect (dnsmasq is optimised C), built with
# `cargo build --release` only when missing or older than the sources (5
# minutes here from an empty target/ on 2 shared cores); --debug uses
# target/debug/netconnect (`cargo build` when stale). The helper image
# --helper-image (default netconnect-helper:<version>) as bench/up-idle.sh:
# used as it is when the engine has it, helper-image/build.sh only when
# missing or --build-helper.
#
# Usage: sudo bench/dns.sh [--duration S] [--reps N] [--containers N]
#                          [--unknown PCT] [--rate QPS] [--clients N]
#                          [--outstanding N] [--no-pin] [--debug]
#                          [--helper-image TAG] [--build-helper]
# Root, a running Docker engine, dnsperf, dnsmasq (dnsmasq-base), dig and
# the packages of scripts/setup.sh. Queries go only to the two servers this
# script starts; everything it makes (containers, network, namespace,
# /etc/netns/<ns>, helper) is removed on exit, also on Ctrl-C. Takes about
# 4 x reps x duration + 1 min.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/mac-ns.sh
. "$ROOT/scripts/lib/mac-ns.sh"
# Messages to the stderr the script started with: an interrupt can come
# while a pass has stderr redirected.
exec 3>&2
die() {
  echo "bench/dns.sh: error: $*" >&3
  exit 1
}
log() { echo "dns: $*" >&3; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
DURATION=10 REPS=2 CONTAINERS=20 UNKNOWN=20 RATE=5000 CLIENTS=1 OUTSTANDING=100
PIN=1 DEBUG=0 BUILD_HELPER=0 HELPER_IMAGE="netconnect-helper:$VERSION"
while (($#)); do
  case $1 in
    --duration | --reps | --containers | --unknown | --rate | --clients | --outstanding)
      [[ ${2:-} =~ ^[0-9]+$ ]] || die "$1 needs a whole number"
      case $1 in
        --duration) DURATION=$2 ;;
        --reps) REPS=$2 ;;
        --containers) CONTAINERS=$2 ;;
        --unknown) UNKNOWN=$2 ;;
        --rate) RATE=$2 ;;
        --clients) CLIENTS=$2 ;;
        --outstanding) OUTSTANDING=$2 ;;
      esac
      shift 2
      ;;
    --no-pin) PIN=0; shift ;;
    --debug) DEBUG=1; shift ;;
    --helper-image) [[ -n ${2:-} ]] || die "--helper-image needs a tag"; HELPER_IMAGE=$2; shift 2 ;;
    --build-helper) BUILD_HELPER=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
((DURATION > 0 && REPS > 0 && RATE > 0 && CLIENTS > 0 && OUTSTANDING > 0)) ||
  die "--duration, --reps, --rate, --clients and --outstanding must be > 0"
((CONTAINERS >= 4 && CONTAINERS <= 200)) || die "--containers must be 4-200"
((UNKNOWN < 100)) || die "--unknown is a percentage of the file, below 100"

NS=nc-bdns-mac VM_VETH=ncbdns0 MAC_VETH=ncbdns1 VM_IP=10.210.4.1 MAC_IP=10.210.4.2
NET=nc-bdns-net SUBNET=10.213.253.0/24 VM_IF=ncbdnsvm0 PORT=51980 TUN_IF=ncbdns
IMAGE=netconnect-demo-busybox:1 LABEL=netconnect.bench=dns PROJECT=ncbdns
DOMAIN=docker.internal NC_ADDR=10.33.33.1 REF_ADDR=10.33.34.1
if ((DEBUG)); then BIN=$ROOT/target/debug/netconnect PROFILE=debug; else BIN=$ROOT/target/release/netconnect PROFILE=release; fi
WORK="" UP_PID="" REF_PID=""

remove_containers() {
  local ids
  mapfile -t ids < <(docker ps -aq --filter "label=$LABEL" 2>/dev/null)
  ((${#ids[@]} == 0)) || docker rm -f "${ids[@]}" >/dev/null 2>&1
}
cleanup() {
  set +e
  [[ -n $REF_PID ]] && stop_pid "$REF_PID"
  # `up` removes its helper and resolver file when it stops.
  [[ -n $UP_PID ]] && stop_pid "$UP_PID"
  remove_containers
  remove_vm_side "$VM_IF"
  docker network rm "$NET" >/dev/null 2>&1
  remove_mac_ns "$NS" "$VM_VETH"
  [[ -n $WORK ]] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted; cleaning up"; exit 130' INT
trap 'log "terminated; cleaning up"; exit 143' TERM

((EUID == 0)) || die "run as root (namespaces, TUN, port 53, the helper's firewall rules)"
for c in ip busybox iptables docker dig dnsperf dnsmasq taskset; do
  command -v "$c" >/dev/null || die "'$c' not found: run 'sudo bash scripts/setup.sh' first"
done
docker info >/dev/null 2>&1 || die "the Docker engine does not answer"
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then PATH="${HOME:-/root}/.cargo/bin:$PATH"; fi
CPUS=$(nproc)
((CPUS >= 2)) || PIN=0
if ((PIN)); then CLIENT_PIN=(taskset -c 0) SERVER_PIN=(taskset -c 1); else CLIENT_PIN=() SERVER_PIN=(); fi

# What an interrupted earlier run may have left (the names are this script's).
remove_containers || true
remove_vm_side "$VM_IF" || true
docker network rm "$NET" >/dev/null 2>&1 || true
remove_mac_ns "$NS" "$VM_VETH" || true

if [[ ! -x $BIN ]] || [[ -n $(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$BIN" -print -quit) ]]; then
  if ((DEBUG)); then
    log "building the debug binary (cargo build)"
    (cd "$ROOT" && cargo build --quiet --bin netconnect)
  else
    log "building the release binary (cargo build --release: minutes; --debug avoids it)"
    (cd "$ROOT" && cargo build --quiet --release --bin netconnect)
  fi
fi
if ((BUILD_HELPER)) || ! docker image inspect "$HELPER_IMAGE" >/dev/null 2>&1; then
  log "building the helper image $HELPER_IMAGE (a static release build: minutes)"
  "$ROOT/helper-image/build.sh" "$HELPER_IMAGE" >/dev/null
fi
helper_id=$(docker image inspect -f '{{.Id}}' "$HELPER_IMAGE" | cut -c8-19)
build_busybox_image "$IMAGE" || die "building $IMAGE failed"

WORK=$(mktemp -d /tmp/netconnect-bench-dns.XXXXXX)
printf '[dns]\nresolver_dir = "%s"\n' "$WORK/resolver" >"$WORK/config.toml"
chmod 600 "$WORK/config.toml"
UP_LOG=$WORK/up.log REF_LOG=$WORK/dnsmasq.log HOSTS=$WORK/hosts QFILE=$WORK/queries

make_mac_ns "$NS" "$VM_VETH" "$MAC_VETH" "$VM_IP" "$MAC_IP"
ip -n "$NS" addr add "$REF_ADDR/32" dev lo
# The "Mac"'s resolver asks netconnect, as /etc/resolver/docker.internal
# makes macOS do; the passes below ask each server directly.
mac_resolver "$NS" "$NC_ADDR"

# The containers: plain ones, then Compose replicas of two services, named
# as Compose names them. A quarter are replicas (at least 2, one each).
docker network create --subnet "$SUBNET" "$NET" >/dev/null
n_compose=$((CONTAINERS / 4 < 2 ? 2 : CONTAINERS / 4))
n_plain=$((CONTAINERS - n_compose))
SERVICES=(api worker)
log "starting $CONTAINERS containers on $NET ($n_compose of them Compose replicas)"
names=()
for ((i = 1; i <= n_plain; i++)); do
  names+=("$(printf 'nc-bdns-%02d' "$i")")
  docker run -d --name "${names[-1]}" --network "$NET" --label "$LABEL" "$IMAGE" sleep 86400 >/dev/null
done
for ((i = 0; i < n_compose; i++)); do
  svc=${SERVICES[i % 2]}
  names+=("$PROJECT-$svc-$((i / 2 + 1))")
  docker run -d --name "${names[-1]}" --network "$NET" --label "$LABEL" \
    --label "com.docker.compose.service=$svc" --label "com.docker.compose.project=$PROJECT" \
    "$IMAGE" sleep 86400 >/dev/null
done
# name ip [service]: one line per container.
# shellcheck disable=SC2016 # a Go template, not a shell expansion
docker inspect -f '{{.Name}} {{(index .NetworkSettings.Networks "'"$NET"'").IPAddress}} {{index .Config.Labels "com.docker.compose.service"}}' \
  "${names[@]}" | sed 's#^/##' >"$WORK/containers"
awk -v d="$DOMAIN" -v p="$PROJECT" '
  { print $2, $1 "." d; if ($3 != "") print $2, $3 "." p "." d }' "$WORK/containers" >"$HOSTS"

# The query file: names, service names, some AAAA, then unknown names so
# that they are UNKNOWN percent of the lines.
{
  awk -v d="$DOMAIN" '{ print $1 "." d, "A" }' "$WORK/containers"
  for svc in "${SERVICES[@]}"; do echo "$svc.$PROJECT.$DOMAIN A"; done
  awk -v d="$DOMAIN" 'NR % 4 == 1 { print $1 "." d, "AAAA" }' "$WORK/containers"
} >"$QFILE.known"
n_known=$(wc -l <"$QFILE.known")
n_unknown=$(((n_known * UNKNOWN + (100 - UNKNOWN) / 2) / (100 - UNKNOWN)))
{
  cat "$QFILE.known"
  for ((i = 1; i <= n_unknown; i++)); do
    # Mostly unknown containers, some an unknown service of the project.
    if ((i % 3 == 0)); then echo "nope$i.$PROJECT.$DOMAIN A"; else echo "nope-$i.$DOMAIN A"; fi
  done
} >"$QFILE"
n_aaaa=$(grep -c ' AAAA$' "$QFILE")

log "starting netconnect up in $NS (log: $UP_LOG)"
# Each server in a session of its own (setsid, which execs in place here):
# a Ctrl-C reaches this script, whose cleanup stops them in order, not
# `up` itself, which would shut down on it mid-pass.
NETCONNECT_LOG=info ip netns exec "$NS" setsid "${SERVER_PIN[@]}" "$BIN" --config "$WORK/config.toml" --control-socket "$WORK/control.sock" \
  up --docker-host unix:///var/run/docker.sock --helper-image "$HELPER_IMAGE" --host-endpoint "$MAC_IP" \
  --listen-port "$PORT" --interface "$TUN_IF" --vm-interface "$VM_IF" >"$UP_LOG" 2>&1 &
UP_PID=$!

# ask SERVER NAME TYPE: "STATUS addr,addr" (addresses sorted; "-" for
# none), or "TIMEOUT".
ask() {
  local out status addrs
  out=$(ip netns exec "$NS" dig +tries=1 +time=2 +noall +comments +answer "@$1" "$2" "$3" </dev/null 2>/dev/null) || { echo TIMEOUT; return 0; }
  status=$(sed -n 's/.*status: \([A-Z]*\).*/\1/p' <<<"$out")
  addrs=$(awk '$4 == "A" || $4 == "AAAA" { print $5 }' <<<"$out" | sort | paste -sd, -)
  echo "${status:-TIMEOUT} ${addrs:--}"
}
expect() { # the answer the hosts file gives NAME
  local addrs
  addrs=$(awk -v n="$1" '$2 == n { print $1 }' "$HOSTS" | sort | paste -sd, -)
  if [[ -n $addrs ]]; then echo "NOERROR $addrs"; else echo "NXDOMAIN -"; fi
}
last=$(tail -n 1 "$WORK/containers" | cut -d' ' -f1)
want_last=$(expect "$last.$DOMAIN") want_svc=$(expect "${SERVICES[0]}.$PROJECT.$DOMAIN")
ok=0
for _ in $(seq 120); do
  if [[ $(ask "$NC_ADDR" "$last.$DOMAIN" A) == "$want_last" &&
    $(ask "$NC_ADDR" "${SERVICES[0]}.$PROJECT.$DOMAIN" A) == "$want_svc" ]]; then
    ok=1
    break
  fi
  kill -0 "$UP_PID" 2>/dev/null || break
  sleep 0.5
done
((ok)) || { tail -n 30 "$UP_LOG" >&2; die "$NC_ADDR never answered $last.$DOMAIN with $want_last"; }
[[ $(cat "/proc/$UP_PID/comm" 2>/dev/null) == netconnect ]] || die "pid $UP_PID is not netconnect"
ip netns exec "$NS" getent hosts "$last.$DOMAIN" >/dev/null || log "warning: the Mac's resolver (/etc/netns/$NS/resolv.conf) did not find $last.$DOMAIN"

log "starting dnsmasq on $REF_ADDR:53 in $NS"
ip netns exec "$NS" setsid "${SERVER_PIN[@]}" dnsmasq --keep-in-foreground --no-resolv --no-hosts \
  --addn-hosts="$HOSTS" --local="/$DOMAIN/" --bind-interfaces --listen-address="$REF_ADDR" --port=53 \
  --cache-size=150 --local-ttl=2 --pid-file= --user=root --log-facility="$REF_LOG" >>"$REF_LOG" 2>&1 &
REF_PID=$!
ok=0
for _ in $(seq 50); do
  [[ $(ask "$REF_ADDR" "$last.$DOMAIN" A) == "$want_last" ]] && { ok=1; break; }
  kill -0 "$REF_PID" 2>/dev/null || break
  sleep 0.1
done
((ok)) || { cat "$REF_LOG" >&2; die "dnsmasq never answered $last.$DOMAIN"; }
[[ $(cat "/proc/$REF_PID/comm" 2>/dev/null) == dnsmasq ]] || die "pid $REF_PID is not dnsmasq"

# Every distinct question, both servers, the same answer (and the one the
# hosts file says: both could be wrong alike).
log "asking both servers each of the $(sort -u "$QFILE" | wc -l) distinct questions"
mismatch=0 checked=0
while read -r qname qtype; do
  a=$(ask "$NC_ADDR" "$qname" "$qtype") b=$(ask "$REF_ADDR" "$qname" "$qtype")
  want=$(expect "$qname")
  [[ $qtype == AAAA && $want == NOERROR* ]] && want="NOERROR -"
  checked=$((checked + 1))
  if [[ $a != "$want" || $b != "$want" ]]; then
    mismatch=$((mismatch + 1))
    echo "mismatch: $qname $qtype: netconnect '$a', dnsmasq '$b', expected '$want'" >&2
  fi
done < <(sort -u "$QFILE")
((mismatch == 0)) || die "$mismatch of $checked questions answered differently; not measuring"
# What the check does not compare, for the reader: header flags, TTL and
# the authority section (an NXDOMAIN with or without the zone's SOA), which
# make the responses differ in size.
shape() { # SERVER NAME TYPE: "flags ...; ttl N; authority TYPES; N bytes"
  ip netns exec "$NS" dig +tries=1 +time=2 +noedns +noall +comments +answer +authority +stats "@$1" "$2" "$3" </dev/null 2>/dev/null |
    awk '/;; flags:/ { f = $0; sub(/.*flags: /, "", f); sub(/;.*/, "", f) }
         /MSG SIZE/ { b = $NF }
         /^[^;]/ && NF >= 5 { if ($4 == "A" || $4 == "AAAA") ttl = $2; else auth = auth (auth ? "," : "") $4 }
         END { printf "flags %s; ttl %s; authority %s; %s bytes", f, (ttl == "" ? "-" : ttl), (auth == "" ? "none" : auth), b }'
}
shapes=""
for q in "$last.$DOMAIN A" "${SERVICES[0]}.$PROJECT.$DOMAIN A" "$last.$DOMAIN AAAA" "nope-1.$DOMAIN A"; do
  read -r qname qtype <<<"$q"
  shapes+="  $qname $qtype: netconnect ($(shape "$NC_ADDR" "$qname" "$qtype")), dnsmasq ($(shape "$REF_ADDR" "$qname" "$qtype"))"$'\n'
done

# Per process: "utime stime" in ticks; VmRSS/VmHWM in KiB.
ticks() {
  local st f
  read -r st <"/proc/$1/stat"
  st=${st##*) }
  read -r -a f <<<"$st"
  echo "${f[11]} ${f[12]}"
}
vm() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)
declare -A PID_OF=([netconnect]=$UP_PID [dnsmasq]=$REF_PID) ADDR_OF=([netconnect]=$NC_ADDR [dnsmasq]=$REF_ADDR)
for s in netconnect dnsmasq; do echo "mem $s rss_before $(vm "${PID_OF[$s]}" VmRSS)"; done >"$WORK/results"
tasks=("/proc/$UP_PID/task"/*)
threads_nc=${#tasks[@]}

# pass KIND REP SERVER dnsperf-args...: one pass; appends to results.
pass() {
  local kind=$1 rep=$2 s=$3 pid=${PID_OF[$3]} out=$WORK/$1.$2.$3 t0 t1 rc=0
  shift 3
  t0=$(ticks "$pid")
  TIMEFORMAT='%R %U %S'
  { time ip netns exec "$NS" "${CLIENT_PIN[@]}" dnsperf -s "${ADDR_OF[$s]}" -d "$QFILE" -t 2 "$@" >"$out" 2>"$out.err"; } 2>"$out.time" || rc=$?
  # dnsperf stops on SIGINT and exits 0, so bash runs no INT trap for it.
  if grep -q 'Testing complete (interruption)' "$out"; then log "interrupted; cleaning up"; exit 130; fi
  kill -0 "$pid" 2>/dev/null || { tail -n 20 "$UP_LOG" "$REF_LOG" >&3; die "$s exited during the $kind pass"; }
  t1=$(ticks "$pid")
  ((rc == 0)) || { cat "$out.err" >&3; die "dnsperf failed against $s ($kind pass)"; }
  [[ $kind == warmup ]] && return 0
  awk '/^>/ { print $NF * 1000 }' "$out" | sort -g >"$out.lat"
  awk -v kind="$kind" -v rep="$rep" -v s="$s" -v t0="$t0" -v t1="$t1" -v hz="$HZ" -v tf="$out.time" '
    BEGIN { getline tl < tf; split(tl, tm, " "); split(t0, a, " "); split(t1, b, " ")
            usr = b[1] - a[1]; cpu = usr + b[2] - a[2] }
    FILENAME ~ /\.lat$/ { lat[++n] = $1; next }
    /Queries sent:/ { sent = $3 } /Queries completed:/ { done_ = $3 } /Queries lost:/ { lost = $3 }
    /Response codes:/ { for (i = 3; i <= NF; i += 3) { c = $i; v = $(i + 1); rcs[c] = v } }
    /Average packet size:/ { rq = $5; gsub(/[^0-9]/, "", rq); rs = $7 }
    /Run time \(s\):/ { rt = $4 } /Queries per second:/ { qps = $4 }
    /Average Latency \(s\):/ { avg = $4 * 1000; mn = $6 * 1000; gsub(/[^0-9.]/, "", $8); mx = $8 * 1000 }
    /Latency StdDev \(s\):/ { sd = $4 * 1000 }
    function pct(p,   i) { i = int(p * n + 0.999999); if (i < 1) i = 1; if (i > n) i = n; return lat[i] }
    END {
      o = kind " " rep " " s
      printf "%s qps %.0f\n%s sent %d\n%s completed %d\n%s lost %d\n", o, qps, o, sent, o, done_, o, lost
      printf "%s avg_ms %.3f\n%s min_ms %.3f\n%s max_ms %.3f\n%s sd_ms %.3f\n", o, avg, o, mn, o, mx, o, sd
      printf "%s noerror %d\n%s nxdomain %d\n", o, rcs["NOERROR"] + 0, o, rcs["NXDOMAIN"] + 0
      printf "%s req_B %d\n%s resp_B %d\n", o, rq, o, rs
      other = 0; for (c in rcs) if (c != "NOERROR" && c != "NXDOMAIN") other += rcs[c]
      printf "%s other_rc %d\n", o, other
      printf "%s srv_cpu_pct %.0f\n", o, (rt > 0 ? 100 * cpu / hz / rt : 0)
      printf "%s srv_us_per_q %.1f\n", o, (done_ > 0 ? 1e6 * cpu / hz / done_ : 0)
      printf "%s usr_us_per_q %.1f\n", o, (done_ > 0 ? 1e6 * usr / hz / done_ : 0)
      printf "%s perf_cpu_pct %.0f\n", o, (tm[1] > 0 ? 100 * (tm[2] + tm[3]) / tm[1] : 0)
      if (n) {
        printf "%s p50_ms %.3f\n%s p90_ms %.3f\n%s p99_ms %.3f\n%s p999_ms %.3f\n", o, pct(0.5), o, pct(0.9), o, pct(0.99), o, pct(0.999)
      }
    }' "$out" "$out.lat" >>"$WORK/results"
  grep -h '^\[\(Warning\|Error\)\]' "$out" "$out.err" 2>/dev/null | sort | uniq -c | head -n 5 |
    sed "s/^/dns: dnsperf ($kind, $s): /" >&2 || true
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
for s in netconnect dnsmasq; do pass warmup 0 "$s" -l 1 -c "$CLIENTS" -q "$OUTSTANDING"; done
order=(netconnect dnsmasq)
for ((rep = 1; rep <= REPS; rep++)); do
  for s in "${order[@]}"; do
    log "rep $rep $s: throughput (${DURATION}s), then latency at $RATE qps (${DURATION}s)"
    pass throughput "$rep" "$s" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING"
    pass latency "$rep" "$s" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -Q "$RATE" -v
  done
  order=("${order[1]}" "${order[0]}")
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)
for s in netconnect dnsmasq; do
  echo "mem $s rss_after $(vm "${PID_OF[$s]}" VmRSS)"
  echo "mem $s hwm_after $(vm "${PID_OF[$s]}" VmHWM)"
done >>"$WORK/results"

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || commit+="+dirty"
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "dns-bench: $(date -u +%Y-%m-%dT%H:%MZ), commit $commit, ${BIN#"$ROOT"/} ($PROFILE), helper $HELPER_IMAGE ($helper_id)"
echo "tools: $(dnsperf -h 2>&1 | sed -n 's/^Version /dnsperf /p'), $(dnsmasq --version | sed -n '1s/ *Copyright.*//p' | sed 's/ version / /')"
echo "machine: $CPUS CPUs ($cpu_model), Linux $(uname -r); load average before $load0, after $load1"
if ((PIN)); then echo "pinning: dnsperf on CPU 0, each server on CPU 1 from its start (netconnect up: $threads_nc threads)"; else echo "pinning: none (netconnect up: $threads_nc threads)"; fi
echo "names: $CONTAINERS containers ($n_compose Compose replicas of ${SERVICES[*]} in project $PROJECT) on $SUBNET; netconnect $NC_ADDR:53, dnsmasq $REF_ADDR:53"
echo "query file: $(wc -l <"$QFILE") lines: $((n_plain + n_compose)) container A, ${#SERVICES[@]} service A, $n_aaaa AAAA (no data), $n_unknown unknown A (NXDOMAIN)"
echo "check: $checked distinct questions, same status and addresses from both servers, as the hosts file says; not compared:"
printf '%s' "$shapes"

table() { # KIND KEYS...: one row per rep and server
  local kind=$1
  shift
  awk -v kind="$kind" -v keys="$*" '
    $1 == kind { v[$2 " " $3, $4] = $5; if (!(($2 " " $3) in seen)) { seen[$2 " " $3] = 1; row[++n] = $2 " " $3 } }
    END {
      k = split(keys, K, " ")
      printf "  %-3s %-10s", "rep", "server"; for (i = 1; i <= k; i++) printf " %11s", K[i]; printf "\n"
      for (r = 1; r <= n; r++) {
        split(row[r], rs, " "); printf "  %-3s %-10s", rs[1], rs[2]
        for (i = 1; i <= k; i++) printf " %11s", v[row[r], K[i]]; printf "\n"
      }
    }' "$WORK/results"
}
echo "throughput: dnsperf -l $DURATION -c $CLIENTS -q $OUTSTANDING (UDP)"
table throughput qps avg_ms min_ms max_ms sd_ms lost noerror nxdomain other_rc resp_B srv_cpu_pct srv_us_per_q usr_us_per_q perf_cpu_pct
echo "latency: dnsperf -Q $RATE -l $DURATION -c $CLIENTS -q $OUTSTANDING -v (UDP)"
table latency qps p50_ms p90_ms p99_ms p999_ms max_ms lost
echo "memory (KiB):"
awk '$1 == "mem" { v[$2, $3] = $4 } END {
  split("netconnect dnsmasq", S, " ")
  for (i = 1; i <= 2; i++) printf "  %-10s VmRSS before load %d, after %d; VmHWM %d\n", S[i], v[S[i], "rss_before"], v[S[i], "rss_after"], v[S[i], "hwm_after"]
}' "$WORK/results"

# Medians over reps, per server, and the key=value line.
awk '
  function med(s, key,   a, n, r, t, x) {
    n = 0; for (r = 1; r <= reps; r++) if ((s, key, r) in v) a[++n] = v[s, key, r]
    if (!n) return ""
    for (r = 2; r <= n; r++) for (t = r; t > 1 && a[t - 1] > a[t]; t--) { x = a[t]; a[t] = a[t - 1]; a[t - 1] = x }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  $1 == "throughput" || $1 == "latency" { v[$3, $1 "_" $4, $2] = $5; if ($2 > reps) reps = $2 }
  $1 == "mem" { m[$2, $3] = $4 }
  END {
    split("netconnect dnsmasq", S, " ")
    print "summary (medians over " reps " reps):"
    for (i = 1; i <= 2; i++) {
      s = S[i]
      printf "  %-10s qps %.0f, avg %.3f ms (at saturation); at the fixed rate p50 %.3f, p99 %.3f ms; lost %d; CPU %.1f us a query; VmHWM %d KiB\n", s,
        med(s, "throughput_qps"), med(s, "throughput_avg_ms"), med(s, "latency_p50_ms"), med(s, "latency_p99_ms"),
        med(s, "throughput_lost") + med(s, "latency_lost"), med(s, "throughput_srv_us_per_q"), m[s, "hwm_after"]
    }
    nq = med("netconnect", "throughput_qps"); dq = med("dnsmasq", "throughput_qps")
    printf "  qps netconnect/dnsmasq by rep:"
    for (r = 1; r <= reps; r++) if (v["dnsmasq", "throughput_qps", r] > 0)
      printf " %.2f", v["netconnect", "throughput_qps", r] / v["dnsmasq", "throughput_qps", r]
    printf "; CPU a query netconnect/dnsmasq:"
    for (r = 1; r <= reps; r++) if (v["dnsmasq", "throughput_srv_us_per_q", r] > 0)
      printf " %.2f", v["netconnect", "throughput_srv_us_per_q", r] / v["dnsmasq", "throughput_srv_us_per_q", r]
    printf "\n"
    printf "nc_qps=%.0f dnsmasq_qps=%.0f qps_ratio=%.2f nc_p50_ms=%.3f dnsmasq_p50_ms=%.3f nc_p99_ms=%.3f dnsmasq_p99_ms=%.3f nc_us_per_q=%.1f dnsmasq_us_per_q=%.1f nc_hwm_kib=%d dnsmasq_hwm_kib=%d\n",
      nq, dq, (dq > 0 ? nq / dq : 0), med("netconnect", "latency_p50_ms"), med("dnsmasq", "latency_p50_ms"),
      med("netconnect", "latency_p99_ms"), med("dnsmasq", "latency_p99_ms"),
      med("netconnect", "throughput_srv_us_per_q"), med("dnsmasq", "throughput_srv_us_per_q"),
      m["netconnect", "hwm_after"], m["dnsmasq", "hwm_after"]
  }' "$WORK/results"
