# shellcheck shell=bash
# scripts/lib/mac-ns.sh: shared by scripts/demo-up.sh and bench/up.sh (source
# it). The root network namespace plays the Docker VM; a namespace joined by
# veth plays the Mac.

# make_mac_ns NS VM_VETH MAC_VETH VM_IP MAC_IP: the "Mac" and its cable.
make_mac_ns() {
  local ns=$1 vm_veth=$2 mac_veth=$3 vm_ip=$4 mac_ip=$5
  ip netns add "$ns"
  ip link add "$vm_veth" type veth peer name "$mac_veth" netns "$ns"
  ip addr add "$vm_ip/24" dev "$vm_veth" && ip link set "$vm_veth" up
  ip -n "$ns" addr add "$mac_ip/24" dev "$mac_veth"
  # No IPv6 router solicitations from the "Mac" side (there is no router):
  # a quiet link stays quiet, as bench/up-idle.sh needs.
  ip netns exec "$ns" sh -c "echo 0 > /proc/sys/net/ipv6/conf/$mac_veth/router_solicitations" 2>/dev/null || true
  ip -n "$ns" link set "$mac_veth" up
  ip -n "$ns" link set lo up
}

# build_busybox_image TAG: a web server image with no registry (Debian's
# static busybox in a FROM scratch image).
build_busybox_image() {
  local ctx
  ctx=$(mktemp -d)
  cp "$(command -v busybox)" "$ctx/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build --quiet -t "$1" "$ctx" >/dev/null 2>&1
  local rc=$?
  rm -rf "$ctx"
  return $rc
}

# remove_vm_side VM_IF: the helper container and the firewall rules it made
# for VM_IF (until `netconnect down` exists).
remove_vm_side() {
  local vm_if=$1 t table chain rule
  docker rm -f "netconnect-helper-$vm_if" >/dev/null 2>&1
  for t in "raw PREROUTING" "filter DOCKER-USER"; do
    read -r table chain <<<"$t"
    iptables -t "$table" -S "$chain" 2>/dev/null | grep -F -- "$vm_if" | grep -F netconnect |
      sed 's/^-A/-D/' | while read -r rule; do eval "iptables -t $table $rule"; done
  done
}

# remove_mac_ns NS VM_VETH
remove_mac_ns() {
  ip link del "$2" 2>/dev/null
  ip netns del "$1" 2>/dev/null
  rm -rf "/etc/netns/$1"
}

# mac_resolver NS SERVER: the "Mac"'s resolver asks SERVER, as
# /etc/resolver/docker.internal makes a Mac's do for that domain: `ip netns
# exec` binds /etc/netns/NS/resolv.conf over /etc/resolv.conf.
mac_resolver() {
  mkdir -p "/etc/netns/$1"
  printf 'nameserver %s\noptions timeout:1 attempts:2\n' "$2" >"/etc/netns/$1/resolv.conf"
}

# stop_pid PID: SIGTERM, up to 5 s to exit, then SIGKILL; reaped if ours.
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
