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

# The service's command line, by which it is found (setsid and Podman
# may fork, so the shell's $! is not always its pid).
SERVICE="podman system service -t 0 unix://$SOCK"

# Stop the service on $SOCK that this script started, here or in an
# earlier run, and wait until it is gone.
stop_service() {
  pkill -f "^$SERVICE\$" 2>/dev/null || true
  for _ in $(seq 50); do
    pgrep -f "^$SERVICE\$" >/dev/null || break
    sleep 0.1
  done
  rm -f "$PIDFILE" "$SOCK"
}

answers() { podman --url "unix://$SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case ${1:-} in
start)
  command -v podman >/dev/null || die "podman not found: run scripts/setup.sh"
  # A service left by an earlier run is replaced, not reused: it holds
  # that run's configuration paths and working folder, and a CI clone is
  # deleted between runs. Podman 4.3's service whose working folder is
  # gone fails every container start with "write child: broken pipe"
  # (its runtime's child cannot start there), as CI did twice.
  stop_service
  if answers; then
    die "a Podman service not started by this script answers on $SOCK; stop it or set NETCONNECT_TEST_PODMAN_SOCK to another path"
  fi
  mkdir -p "$(dirname "$SOCK")"
  rm -f "$SOCK"
  # From / so that no folder the service runs in can be deleted under it
  # (every path here is absolute). Started straight from this shell with
  # every descriptor redirected: a subshell around it would hold the
  # caller's $(...) pipe open for as long as the service runs.
  cd /
  setsid podman system service -t 0 "unix://$SOCK" >"$LOG" 2>&1 </dev/null &
  for _ in $(seq 150); do
    answers && {
      pgrep -o -f "$SERVICE" >"$PIDFILE" || true
      echo "$SOCK"
      exit 0
    }
    sleep 0.2
  done
  tail -n 20 "$LOG" >&2 || true
  die "podman system service did not answer on $SOCK within 30 s (log: $LOG)"
  ;;
stop)
  stop_service
  ;;
*) die "usage: $0 start|stop" ;;
esac
