#!/usr/bin/env bash
# tests/images/node/rootfs.sh DIR: what the stand-in Kubernetes node image
# (tests/kube_e2e.rs) adds to the busybox test image, copied from this
# machine: iptables (nft backend, as kube-proxy's iptables mode writes
# rules, and its extensions) and dnsmasq (standing for CoreDNS), each with
# the shared libraries `ldd` names and the dynamic loader; a passwd and
# group for dnsmasq's user. Debian: iptables, dnsmasq-base (scripts/setup.sh).
set -euo pipefail
die() {
  printf 'rootfs.sh: error: %s\n' "$*" >&2
  exit 1
}
[[ $# -eq 1 ]] || die "usage: rootfs.sh DIR"
OUT=$1
TRIPLET=$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
NFT=/usr/sbin/xtables-nft-multi
DNSMASQ=/usr/sbin/dnsmasq
for f in $NFT $DNSMASQ; do
  [[ -x $f ]] || die "$f missing; run 'sudo bash scripts/setup.sh' (Debian: iptables, dnsmasq-base)"
done
EXT=/usr/lib/$TRIPLET/xtables
[[ -d $EXT ]] || die "$EXT missing (Debian: iptables)"

mkdir -p "$OUT/usr/sbin" "$OUT$EXT" "$OUT/etc"
cp "$NFT" "$DNSMASQ" "$OUT/usr/sbin/"
for name in iptables iptables-save ip6tables ip6tables-save; do
  ln -sfn xtables-nft-multi "$OUT/usr/sbin/$name"
done
cp "$EXT"/*.so "$OUT$EXT/"
# Every library any of them loads, at the path ldd resolves it to.
for f in "$OUT/usr/sbin/xtables-nft-multi" "$OUT/usr/sbin/dnsmasq" "$OUT$EXT"/*.so; do
  ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$OUT$(dirname "$lib")"
  cp -L "$lib" "$OUT$lib"
done
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$OUT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$OUT/etc/group"
