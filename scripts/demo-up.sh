#!/usr/bin/env bash
# demo-up.sh: `netconnect up` end to end on one Linux machine.
#
# The root network namespace plays the Docker VM (dockerd runs there); a
# network namespace joined by veth plays the Mac, which cannot reach
# container addresses. netconnect up runs in the "Mac", starts its helper
# container in the "VM", and the "Mac" then curls a container by its IP,
# and by its name (web.docker.internal) through its resolver.
# Everything it makes is removed on exit. Root; needs a running Docker engine
# and the packages of scripts/setup.sh.
#
# Usage: sudo bash scripts/demo-up.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/mac-ns.sh
. "$ROOT/scripts/lib/mac-ns.sh"
NS=nc-demo-mac
VM_VETH=ncdemo0 MAC_VETH=ncdemo1
VM_IP=10.210.1.1 MAC_IP=10.210.1.2
NET=nc-demo-net SUBNET=10.213.250.0/24 WEB=nc-demo-web
VM_IF=ncdemovm0 PORT=51977
IMAGE=netconnect-demo-busybox:1
SOCK=/run/netconnect-demo-up.sock
HELPER_TAG=""
LOG=$(mktemp /tmp/netconnect-demo-up.XXXXXX.log)
UP_PID=""

step() { printf '==> %s\n' "$*"; }
die() {
  printf 'demo-up.sh: error: %s\n' "$*" >&2
  exit 1
}

# The helper image's static build serves the "Mac" too: one release build.
# shellcheck source=../helper-image/static-build.sh
. "$ROOT/helper-image/static-build.sh"
NC_BIN=""
mac_nc() { ip netns exec "$NS" "$NC_BIN" --control-socket "$SOCK" "$@"; }

cleanup() {
  set +e
  if [[ -n $UP_PID ]]; then
    step "netconnect down: stops up, removes its routes and interface here and its rules in the 'VM'"
    mac_nc down --docker-host unix:///var/run/docker.sock --vm-interface "$VM_IF" --helper-image "$HELPER_TAG" |
      sed 's/^/    /'
    for _ in $(seq 50); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$UP_PID" 2>/dev/null
    wait "$UP_PID" 2>/dev/null
  fi
  docker rm -f "$WEB" >/dev/null 2>&1
  # Only needed if down did not run or failed: rules and helper of this demo.
  remove_vm_side "$VM_IF"
  docker network rm "$NET" >/dev/null 2>&1
  remove_mac_ns "$NS" "$VM_VETH"
  rm -f "$LOG"
}
trap cleanup EXIT

((EUID == 0)) || die "must run as root: sudo bash $0"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer: start dockerd first"
for c in ip curl busybox dig; do command -v "$c" >/dev/null || die "'$c' not found: run 'sudo bash scripts/setup.sh' first"; done
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then PATH="${HOME:-/root}/.cargo/bin:$PATH"; fi

# What an interrupted earlier run may have left (names are this demo's own).
docker rm -f "$WEB" >/dev/null 2>&1 || true
remove_vm_side "$VM_IF" || true
docker network rm "$NET" >/dev/null 2>&1 || true
remove_mac_ns "$NS" "$VM_VETH" || true

step "building netconnect and the helper image (first time: a few minutes)"
HELPER_TAG=$("$ROOT/helper-image/build.sh" 2>/dev/null) || die "helper-image/build.sh failed"
NC_BIN=$(static_binary "$(host_arch)")
[[ -x $NC_BIN ]] || die "$NC_BIN is missing after helper-image/build.sh"
echo "    helper image: $HELPER_TAG"

step "building a tiny web server image (busybox, no registry needed)"
build_busybox_image "$IMAGE" || die "building $IMAGE failed"

step "making the 'Mac': namespace $NS ($MAC_IP) joined to the 'VM' ($VM_IP)"
make_mac_ns "$NS" "$VM_VETH" "$MAC_VETH" "$VM_IP" "$MAC_IP"

step "starting a web server container on a new network $SUBNET"
docker network create --subnet "$SUBNET" "$NET" >/dev/null
docker run -d --name "$WEB" --network "$NET" "$IMAGE" sh -c 'mkdir -p /www && echo "hello from $(hostname), reached by IP" > /www/index.html && httpd -f -p 80 -h /www' >/dev/null
web_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$WEB")
echo "    container $WEB has address $web_ip"

step "before: the 'Mac' cannot reach $web_ip"
if ip netns exec "$NS" curl -s -m 2 "http://$web_ip/" >/dev/null; then echo "    (unexpectedly reachable)"; else echo "    curl http://$web_ip/ -> no route, as on a Mac"; fi

mac_resolver "$NS" 10.33.33.1

step "netconnect up (in the 'Mac'; log: $LOG)"
mac_nc up --docker-host unix:///var/run/docker.sock --helper-image "$HELPER_TAG" \
  --host-endpoint "$MAC_IP" --listen-port "$PORT" --interface ncdemo --vm-interface "$VM_IF" >"$LOG" 2>&1 &
UP_PID=$!
for _ in $(seq 60); do
  if ip netns exec "$NS" curl -s -m 1 "http://$web_ip/" >/dev/null 2>&1; then break; fi
  kill -0 "$UP_PID" 2>/dev/null || { cat "$LOG" >&2; die "netconnect up exited"; }
  sleep 0.5
done
# The first handshake follows the first answer by a moment.
for _ in $(seq 20); do grep -q "ready: traffic can flow" "$LOG" && break; sleep 0.2; done
sed 's/^/    | /' "$LOG"

step "after: curl http://$web_ip/ from the 'Mac'"
ip netns exec "$NS" curl -sS -m 3 "http://$web_ip/" | sed 's/^/    /' || { cat "$LOG" >&2; die "curl through the tunnel failed"; }
step "by name, through the 'Mac''s resolver: curl http://$WEB.docker.internal/"
ip netns exec "$NS" curl -sS -m 3 "http://$WEB.docker.internal/" | sed 's/^/    /' || { cat "$LOG" >&2; die "curl by name failed"; }
step "the name server: dig $WEB.docker.internal (and a name it does not know)"
ip netns exec "$NS" dig +noall +answer "$WEB.docker.internal" | sed 's/^/    /'
ip netns exec "$NS" dig "nope.docker.internal" | grep -o 'status: [A-Z]*' | sed 's/^/    nope.docker.internal: /'
step "routes in the 'Mac':"
ip -n "$NS" route | sed 's/^/    /'
step "netconnect status"
mac_nc status | sed 's/^/    /'
step "netconnect doctor"
mac_nc doctor | sed 's/^/    /'
step "done; tearing down"
