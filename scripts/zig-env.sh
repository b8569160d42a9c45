# scripts/zig-env.sh: source it to build for macOS from Linux.
#   . scripts/zig-env.sh && cargo-zigbuild check --target aarch64-apple-darwin
# Puts the zig venv that scripts/setup.sh makes on PATH and sets the oldest
# macOS we support; without it zig stamps the newest macOS it knows into the
# binary, and older Macs refuse to run it.
NETCONNECT_ZIG_VENV=${NETCONNECT_ZIG_VENV:-/opt/netconnect-zig}
if [[ ! -x $NETCONNECT_ZIG_VENV/bin/cargo-zigbuild ]]; then
  echo "zig-env.sh: error: $NETCONNECT_ZIG_VENV has no cargo-zigbuild; run 'sudo bash scripts/setup.sh' first" >&2
  return 1 2>/dev/null || exit 1
fi
export PATH="$NETCONNECT_ZIG_VENV/bin:$PATH"
export MACOSX_DEPLOYMENT_TARGET=11.0
