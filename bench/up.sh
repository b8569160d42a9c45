#!/usr/bin/env bash
# bench/up.sh: how fast `netconnect up` makes a container reachable, and its
# memory after serving traffic. Same topology as scripts/demo-up.sh: the root
# namespace plays the Docker VM, a namespace joined by veth plays the Mac.
#
#   time_to_first_ms  from spawning `up` to the first HTTP answer from a
#                     container by IP (helper image already present), median
#                     of --reps runs
#   rss_kib           VmRSS of `up` after --requests HTTP requests through
#                     the tunnel (and VmHWM, its peak)
#
# Usage: sudo bench/up.sh [--reps N] [--requests N]   (defaults 3, 1000)
# Root, a running Docker engine, the packages of scripts/setup.sh. Traffic
# goes only to the container this script starts.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/mac-ns.sh
. "$ROOT/scripts/lib/mac-ns.sh"
REPS=3 REQUESTS=1000
while (($#)); do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    *) echo "bench/up.sh: error: unknown option $1" >&2; exit 1 ;;
  esac
done
NS=nc-bup-mac VM_VETH=ncbup0 MAC_VETH=ncbup1 VM_IP=10.210.2.1 MAC_IP=10.210.2.2
NET=nc-bup-net SUBNET=10.213.251.0/24 WEB=nc-bup-web VM_IF=ncbupvm0 PORT=51978
IMAGE=netconnect-demo-busybox:1
LOG=$(mktemp /tmp/netconnect-bench-up.XXXXXX.log)
UP_PID=""

stop_up() {
  [[ -n $UP_PID ]] || return 0
  kill -TERM "$UP_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$UP_PID" 2>/dev/null || true
  wait "$UP_PID" 2>/dev/null || true
  UP_PID=""
}
cleanup() {
  set +e
  stop_up
  docker rm -f "$WEB" >/dev/null 2>&1
  remove_vm_side "$VM_IF"
  docker network rm "$NET" >/dev/null 2>&1
  remove_mac_ns "$NS" "$VM_VETH"
  rm -f "$LOG"
}
trap cleanup EXIT
((EUID == 0)) || { echo "bench/up.sh: error: run as root" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "bench/up.sh: error: the Docker engine does not answer" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --quiet)
"$ROOT/helper-image/build.sh" >/dev/null 2>&1
build_busybox_image "$IMAGE"

make_mac_ns "$NS" "$VM_VETH" "$MAC_VETH" "$VM_IP" "$MAC_IP"
docker network create --subnet "$SUBNET" "$NET" >/dev/null
docker run -d --name "$WEB" --network "$NET" "$IMAGE" sh -c 'mkdir -p /www && echo ok > /www/index.html && httpd -f -p 80 -h /www' >/dev/null
web_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$WEB")

times=()
for ((r = 1; r <= REPS; r++)); do
  t0=$(date +%s%N)
  ip netns exec "$NS" "$ROOT/target/release/netconnect" -q up --docker-host unix:///var/run/docker.sock \
    --host-endpoint "$MAC_IP" --listen-port "$PORT" --interface ncbup --vm-interface "$VM_IF" >"$LOG" 2>&1 &
  UP_PID=$!
  ok=0
  for _ in $(seq 600); do
    if ip netns exec "$NS" curl -s -m 1 -o /dev/null "http://$web_ip/"; then ok=1; break; fi
    sleep 0.02
  done
  t1=$(date +%s%N)
  ((ok)) || { cat "$LOG" >&2; echo "bench/up.sh: error: no answer within the limit" >&2; exit 1; }
  ms=$(((t1 - t0) / 1000000))
  times+=("$ms")
  echo "rep $r: first answer after ${ms} ms" >&2
  if ((r == REPS)); then
    ip netns exec "$NS" sh -c "for i in \$(seq $REQUESTS); do curl -s -m 2 -o /dev/null http://$web_ip/ || exit 1; done" ||
      { echo "bench/up.sh: error: a request failed" >&2; exit 1; }
    rss=$(awk '/^VmRSS/{print $2}' "/proc/$UP_PID/status")
    hwm=$(awk '/^VmHWM/{print $2}' "/proc/$UP_PID/status")
  fi
  stop_up
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
echo "up: helper image present, $REPS rep(s); $REQUESTS HTTP requests before the memory reading"
echo "time_to_first_ms=$median (runs: ${times[*]}) rss_kib=$rss hwm_kib=$hwm"
