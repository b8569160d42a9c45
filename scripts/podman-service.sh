#!/usr/bin/env bash
# podman-service.sh: Podman's Docker-compatible API on a socket of its own,
# for tests/runtimes_e2e.rs (.ci/run starts it; the tests start their own
# when NETCONNECT_TEST_PODMAN_SOCK is not set). Configuration:
# tests/podman/{containers,storage}.conf, which leave the machine's own
# Podman configuration alone.
#
# Usage: sudo bash scripts/podman-service.sh start|stop   (prints the socket)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOCK=${NETCONNECT_TEST_PODMAN_SOCK:-/run/netconnect-test/podman-api.sock}
PIDFILE=${SOCK%.sock}.pid
LOG=${SOCK%.sock}.log
export CONTAINERS_CONF=$ROOT/tests/podman/containers.conf
export CONTAINERS_STORAGE_CONF=$ROOT/tests/podman/storage.conf

die() {
  printf 'podman-service.sh: error: %s\n' "$*" >&2
  exit 1
}

answers() { podman --url "unix://$SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case ${1:-} in
start)
  command -v podman >/dev/null || die "podman not found: run scripts/setup.sh"
  if answers; then
    echo "$SOCK"
    exit 0
  fi
  mkdir -p "$(dirname "$SOCK")"
  rm -f "$SOCK"
  setsid podman system service -t 0 "unix://$SOCK" >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 150); do
    answers && {
      echo "$SOCK"
      exit 0
    }
    sleep 0.2
  done
  tail -n 20 "$LOG" >&2 || true
  die "podman system service did not answer on $SOCK within 30 s (log: $LOG)"
  ;;
stop)
  [[ -f $PIDFILE ]] && kill "$(cat "$PIDFILE")" 2>/dev/null || true
  rm -f "$PIDFILE" "$SOCK"
  ;;
*) die "usage: $0 start|stop" ;;
esac
