# scripts/zig-env.sh: source it to build for macOS from Linux.
#   . scripts/zig-env.sh && cargo-zigbuild check --target aarch64-apple-darwin
# Makes cargo-zigbuild and zig from the venv that scripts/setup.sh makes
# callable, without putting the venv's python ahead of the system's, and sets
# the oldest macOS we support: without it zig stamps the newest macOS it
# knows into the binary, and older Macs refuse to run it.
NETCONNECT_ZIG_VENV=${NETCONNECT_ZIG_VENV:-/opt/netconnect-zig}
if [[ ! -x $NETCONNECT_ZIG_VENV/bin/cargo-zigbuild ]]; then
  echo "zig-env.sh: error: $NETCONNECT_ZIG_VENV has no cargo-zigbuild; run 'sudo bash scripts/setup.sh' first" >&2
  return 1 2>/dev/null || exit 1
fi
CARGO_ZIGBUILD_ZIG_PATH=$(echo "$NETCONNECT_ZIG_VENV"/lib/python3*/site-packages/ziglang/zig)
if [[ ! -x $CARGO_ZIGBUILD_ZIG_PATH ]]; then
  echo "zig-env.sh: error: no zig binary in $NETCONNECT_ZIG_VENV; remove it and run 'sudo bash scripts/setup.sh'" >&2
  return 1 2>/dev/null || exit 1
fi
export CARGO_ZIGBUILD_ZIG_PATH
case ":$PATH:" in
  *":$NETCONNECT_ZIG_VENV/bin:"*) ;;
  *) export PATH="$PATH:$NETCONNECT_ZIG_VENV/bin" ;;
esac
export MACOSX_DEPLOYMENT_TARGET=11.0
