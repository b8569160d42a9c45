#!/usr/bin/env bash
# helper-image/iptables-rootfs.sh ARCH DIR: put Debian's iptables for
# linux/ARCH (amd64 or arm64) into DIR, laid out as the FROM-scratch helper
# image holds it:
#
#   /usr/sbin/xtables-legacy-multi, /usr/sbin/xtables-nft-multi
#   /usr/sbin/{ip,ip6}tables-{legacy,nft}[-save]   symlinks to them (the
#       multi binaries pick their personality from argv[0])
#   /usr/lib/<triplet>/xtables/*.so                the match/target
#       extensions, at the path the binaries were built to load them from
#   every shared library the binaries and extensions need (their ELF NEEDED
#   lists, followed to the end), at its path in the package, and the
#   dynamic loader at the path the binaries name (PT_INTERP)
#
# Why both backends: the helper must write its rules where dockerd's are,
# and it runs nothing from outside its own image, so it carries both and
# picks the one that holds Docker's chains (src/helper/firewall.rs).
#
# The .debs come from `apt-get download PKG:ARCH`, so an arm64 image is made
# on an amd64 machine (scripts/setup.sh adds the arm64 architecture to dpkg)
# and nothing is installed on this one. They are fetched and unpacked once
# into ${CARGO_TARGET_DIR:-target}/helper-iptables/ARCH and reused; remove
# that directory to fetch newer ones. Fails, naming the library, if a NEEDED
# entry is not found in the packages: an image that cannot run iptables
# must not be built.
set -euo pipefail

PROG=iptables-rootfs.sh
die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}
[[ $# -eq 2 ]] || die "usage: $PROG amd64|arm64 DIR"
ARCH=$1
OUT=$2
case $ARCH in
  amd64) TRIPLET=x86_64-linux-gnu ;;
  arm64) TRIPLET=aarch64-linux-gnu ;;
  *) die "unknown architecture '$ARCH'; use amd64 or arm64" ;;
esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# iptables and what it depends on (apt-cache depends iptables), less netbase
# (/etc/protocols: iptables knows tcp, udp, icmp... by itself).
PKGS=(iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libmnl0
  libnetfilter-conntrack3 libnfnetlink0 libc6)

for tool in apt-get dpkg-deb readelf; do
  command -v "$tool" >/dev/null || die "$tool not found; run 'sudo bash scripts/setup.sh' (Debian: apt, dpkg, binutils)"
done

CACHE=${CARGO_TARGET_DIR:-$ROOT/target}/helper-iptables/$ARCH
TREE=$CACHE/tree
STAMP="${PKGS[*]}"
if [[ $(cat "$CACHE/stamp" 2>/dev/null) != "$STAMP" ]]; then
  rm -rf "$CACHE"
  mkdir -p "$CACHE/debs" "$TREE"
  log=$CACHE/apt-get.log
  # _apt cannot write here (a root-only tree): it downloads as root instead
  # and says so in a warning, which the log keeps.
  if ! (cd "$CACHE/debs" && apt-get download "${PKGS[@]/%/:$ARCH}") >"$log" 2>&1; then
    tail -n 5 "$log" | sed 's/^/    | /' >&2
    if [[ $ARCH != $(dpkg --print-architecture) ]] && ! dpkg --print-foreign-architectures | grep -qx "$ARCH"; then
      die "dpkg does not know architecture $ARCH; run 'sudo bash scripts/setup.sh' (dpkg --add-architecture $ARCH && apt-get update)"
    fi
    die "apt-get download of ${PKGS[*]} for $ARCH failed (log above: $log); is the Debian mirror reachable? try 'apt-get update'"
  fi
  for deb in "$CACHE"/debs/*.deb; do
    dpkg-deb -x "$deb" "$TREE"
  done
  echo "$STAMP" >"$CACHE/stamp"
fi

# needed FILE: the NEEDED entries of an ELF file (any architecture).
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
# interp FILE: its PT_INTERP (the dynamic loader it asks for).
interp() { readelf -l "$1" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p'; }

mkdir -p "$OUT/usr/sbin" "$OUT/usr/lib/$TRIPLET/xtables"
queue=()
for multi in xtables-legacy-multi xtables-nft-multi; do
  [[ -f $TREE/usr/sbin/$multi ]] || die "$multi missing from Debian's iptables package for $ARCH"
  cp "$TREE/usr/sbin/$multi" "$OUT/usr/sbin/$multi"
  queue+=("$OUT/usr/sbin/$multi")
done
for fam in iptables ip6tables; do
  for backend in legacy nft; do
    for suffix in "" -save; do
      ln -sfn "xtables-$backend-multi" "$OUT/usr/sbin/$fam-$backend$suffix"
    done
  done
done
for ext in "$TREE/usr/lib/$TRIPLET/xtables/"*.so; do
  cp "$ext" "$OUT/usr/lib/$TRIPLET/xtables/"
  queue+=("$OUT/usr/lib/$TRIPLET/xtables/$(basename "$ext")")
done

# The closure of NEEDED, each library copied (links resolved) under its
# soname, where the package puts it: the loader has no ld.so.cache here and
# searches its built-in directories, which are these.
declare -A have=()
while ((${#queue[@]})); do
  file=${queue[0]}
  queue=("${queue[@]:1}")
  for lib in $(needed "$file"); do
    [[ -z ${have[$lib]:-} ]] || continue
    found=
    for dir in "lib/$TRIPLET" "usr/lib/$TRIPLET"; do
      if [[ -e $TREE/$dir/$lib ]]; then
        mkdir -p "$OUT/$dir"
        cp -L "$TREE/$dir/$lib" "$OUT/$dir/$lib"
        found=$OUT/$dir/$lib
        break
      fi
    done
    [[ -n $found ]] || die "$(basename "$file") needs $lib, which none of ${PKGS[*]} ($ARCH) holds; add its package to PKGS in $PROG"
    have[$lib]=1
    queue+=("$found")
  done
done

# The loader, at the path the binaries name.
loader=$(interp "$OUT/usr/sbin/xtables-nft-multi")
[[ -n $loader ]] || die "xtables-nft-multi names no dynamic loader; is it a $ARCH ELF?"
base=$(basename "$loader")
[[ -e $TREE/lib/$TRIPLET/$base ]] || die "the loader $base is not in libc6:$ARCH"
mkdir -p "$OUT/lib/$TRIPLET"
[[ -e $OUT/lib/$TRIPLET/$base ]] || cp -L "$TREE/lib/$TRIPLET/$base" "$OUT/lib/$TRIPLET/$base"
if [[ $loader != "/lib/$TRIPLET/$base" ]]; then
  mkdir -p "$OUT$(dirname "$loader")"
  ln -sfn "/lib/$TRIPLET/$base" "$OUT$loader"
fi

# Last check, over everything copied: every NEEDED entry is in the tree.
missing=
while IFS= read -r -d '' f; do
  for lib in $(needed "$f"); do
    [[ -e $OUT/lib/$TRIPLET/$lib || -e $OUT/usr/lib/$TRIPLET/$lib ]] || missing+=" $(basename "$f")->$lib"
  done
done < <(find "$OUT/usr/sbin" "$OUT/usr/lib" "$OUT/lib" -type f -print0)
[[ -z $missing ]] || die "libraries missing from the image tree:$missing"
