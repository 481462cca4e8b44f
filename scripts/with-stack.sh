#!/usr/bin/env bash
# Runs a command against a fresh local stack on free ports, then stops the stack:
#   scripts/with-stack.sh node --test tests/browser/
# The command sees STAGEFAN_URL, STAGEFAN_HOST_KEY, STAGEFAN_ADMIN_KEY, IVS_ENDPOINT.
# Stack settings (STAGE_CAPACITY, TOKEN_MODE, ...) pass through the environment.
# STAGEFAN_PORT_OVERRIDE, IVS_LOCAL_PORT_OVERRIDE, MONITOR_PORT_OVERRIDE pin those ports.
# Each run has its own state directory, .stagefan/with-stack-<edge port> (removed when the
# command succeeds; STAGEFAN_STATE_DIR picks another, kept), so runs side by side from one
# checkout do not share anything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export STAGEFAN_PORT="${STAGEFAN_PORT_OVERRIDE:-$(free_port)}"
export IVS_LOCAL_PORT="${IVS_LOCAL_PORT_OVERRIDE:-$(free_port)}"
export IVS_LOCAL_MEDIA_PORT="$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export MONITOR_PORT="${MONITOR_PORT_OVERRIDE:-$(free_port)}"
export STAGEFAN_INSPECTOR_PORT="$(free_port)"
export STAGEFAN_MONITOR="${STAGEFAN_MONITOR:-0}"
OWN_STATE_DIR=0
if [[ -z "${STAGEFAN_STATE_DIR:-}" ]]; then
  export STAGEFAN_STATE_DIR="$ROOT/.stagefan/with-stack-$STAGEFAN_PORT"
  OWN_STATE_DIR=1
fi
export STAGEFAN_PARENT_PID=$$
mkdir -p "$STAGEFAN_STATE_DIR"
OUT="$STAGEFAN_STATE_DIR/stack.out"

# Empty it first: the background redirection would do it too, but possibly after the wait
# below has already read a previous run's STAGEFAN_READY.
: >"$OUT"
scripts/stack.sh >"$OUT" 2>&1 &
STACK=$!
stop() { kill -TERM "$STACK" 2>/dev/null || true; wait "$STACK" 2>/dev/null || true; }
trap stop EXIT

deadline=$((SECONDS + 900))
until grep -q '^STAGEFAN_READY' "$OUT"; do
  if ! kill -0 "$STACK" 2>/dev/null || ((SECONDS > deadline)); then
    echo "the stack did not start:" >&2
    cat "$OUT" >&2
    exit 1
  fi
  sleep 0.3
done

export STAGEFAN_URL="http://127.0.0.1:$STAGEFAN_PORT"
export STAGEFAN_HOST_KEY="${STAGEFAN_HOST_KEY:-local-host-key}"
export STAGEFAN_ADMIN_KEY="${STAGEFAN_ADMIN_KEY:-local-admin-key}"
export IVS_ENDPOINT="http://127.0.0.1:$IVS_LOCAL_PORT"
status=0
"$@" || status=$?
stop
trap - EXIT
if ((status == 0 && OWN_STATE_DIR)); then
  rm -rf "$STAGEFAN_STATE_DIR"
else
  echo "with-stack: the stack's logs are in $STAGEFAN_STATE_DIR" >&2
fi
exit "$status"
