#!/usr/bin/env bash
# Starts the local stack — ivs-local, the worker under `wrangler dev` pointed at it, and the
# monitor — on the ports of the environment, waits until each answers, prints the URLs, and
# stays in the foreground. SIGINT (Ctrl-C) or SIGTERM stops everything it started (and only
# that), also when it was started in the background.
#
# A start checks its ports and locks its state directory before it touches any state: a
# second start on a busy port or state directory exits (status 2) and leaves the running stack
# alone. Each stack runs from its own state directory:
# its own copy of the worker build and the pages, its own wrangler config and `.wrangler/`, so
# stacks started from one checkout (and later builds) do not disturb each other.
#
# Used by `make run`, by the Rust integration tests (tests/) and by the browser tests
# (tests/browser/): they start it with their own ports and state directory and wait for the
# line `STAGEFAN_READY`.
#
# Environment (defaults in brackets):
#   STAGEFAN_PORT [8787]  IVS_LOCAL_PORT [8790]  IVS_LOCAL_MEDIA_PORT [IVS_LOCAL_PORT+1]
#   MONITOR_PORT [9464]   STAGEFAN_MONITOR [1]: 0 to run without the monitor
#   STAGE_CAPACITY [50]  TOKEN_MODE [self-signed]  FANOUT_MODE [multi-publish]
#   MIN_STAGES [1]  MAX_STAGES [100]  LEASE_TTL_SECONDS [60]  TOKEN_TTL_SECONDS [300]
#   HEADROOM  SCALE_DOWN_GRACE_SECONDS  TOKEN_SIGNER [webcrypto|rust]  DEFAULT_BROADCAST [default]
#   IVS_CREATE_STAGE_TPS  IVS_DELETE_STAGE_TPS  IVS_REPLICATION_TPS  IVS_BUDGET_GUARD_MS
#   IVS_QUOTA_SUBSCRIPTIONS [20000]  IVS_QUOTA_PUBLISHERS [1000]  IVS_QUOTA_STAGES [1000]: the
#     region quotas, given to both ivs-local (which enforces them) and the worker (whose
#     ledger keeps within them); IVS_QUOTA_RESERVE_PERCENT  IVS_QUOTA_GRANT_TTL_SECONDS (worker)
#   IVS_REGIONS [the one $AWS_REGION, us-east-1]: several (`us-east-1,eu-west-1`) run one
#     ivs-local per region, the first on IVS_LOCAL_PORT, the next ones on the ports after it
#     (or IVS_LOCAL_PORTS, a comma list), media on IVS_LOCAL_MEDIA_PORT for the first and the
#     HTTP port + 1 for the others (or IVS_LOCAL_MEDIA_PORTS); the worker gets IVS_REGIONS and
#     IVS_ENDPOINTS naming each. The IVS_QUOTA_* limits hold in each region.
#   STAGEFAN_DEPLOYMENT [local]: the deployment tag of the stages (worker and monitor)
#   STAGEFAN_TEST_FAIL_REGISTRATIONS [0]: tests only, each pool's first N registry writes fail
#   STAGEFAN_HOST_KEY [local-host-key]  STAGEFAN_ADMIN_KEY [local-admin-key]
#   STAGEFAN_STATE_DIR [.stagefan/stack-$STAGEFAN_PORT]: logs, wrangler's local storage, and
#     worker/: the stack's wrangler.toml, worker build and pages (rewritten at each start)
#   STAGEFAN_FRESH [1]: start with empty Durable Object storage (ivs-local is in-memory)
#   STAGEFAN_BIN_DIR [$CARGO_TARGET_DIR or target, /debug]: where ivs-local and stagefan-monitor are
#   STAGEFAN_PARENT_PID: stop when this process is gone (test harnesses)
#
# SIGUSR1 restarts the worker alone (wrangler's dev server, same local storage; ivs-local and
# the monitor keep running), like a Durable Object eviction; each restart done appends a line
# to $STAGEFAN_STATE_DIR/worker-restarts.
set -euo pipefail
# A background job of a non-interactive shell starts with SIGINT ignored, and bash cannot trap
# a signal ignored at entry: start again once with SIGINT at its default, so the trap below
# works (GNU env; without it, SIGTERM still stops the stack).
if [[ -z "${STAGEFAN_STACK_SIGNALS:-}" ]] && env --default-signal=INT true 2>/dev/null; then
  STAGEFAN_STACK_SIGNALS=1 exec env --default-signal=INT bash "${BASH_SOURCE[0]}" "$@"
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export STAGEFAN_PORT="${STAGEFAN_PORT:-8787}"
export IVS_LOCAL_PORT="${IVS_LOCAL_PORT:-8790}"
export IVS_LOCAL_MEDIA_PORT="${IVS_LOCAL_MEDIA_PORT:-$((IVS_LOCAL_PORT + 1))}"
export MONITOR_PORT="${MONITOR_PORT:-9464}"
export STAGEFAN_HOST_KEY="${STAGEFAN_HOST_KEY:-local-host-key}"
export STAGEFAN_ADMIN_KEY="${STAGEFAN_ADMIN_KEY:-local-admin-key}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-AKIDLOCALSTAGEFAN}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-stagefan-local-secret}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
# The regions, one ivs-local each (the first is the primary: the single-region stack's).
IFS=',' read -r -a REGIONS <<<"${IVS_REGIONS:-$AWS_REGION}"
REGIONS=("${REGIONS[@]// /}")
IFS=',' read -r -a REGION_PORTS <<<"${IVS_LOCAL_PORTS:-}"
IFS=',' read -r -a REGION_MEDIA_PORTS <<<"${IVS_LOCAL_MEDIA_PORTS:-}"
for i in "${!REGIONS[@]}"; do
  if [[ -z "${REGION_PORTS[$i]:-}" ]]; then REGION_PORTS[$i]=$((IVS_LOCAL_PORT + i)); fi
  if [[ -z "${REGION_MEDIA_PORTS[$i]:-}" ]]; then
    if ((i == 0)); then REGION_MEDIA_PORTS[$i]=$IVS_LOCAL_MEDIA_PORT; else REGION_MEDIA_PORTS[$i]=$((REGION_PORTS[i] + 1)); fi
  fi
done
IVS_LOCAL_PORT=${REGION_PORTS[0]}
IVS_LOCAL_MEDIA_PORT=${REGION_MEDIA_PORTS[0]}
AWS_REGION=${REGIONS[0]}
export IVS_ENDPOINT="http://127.0.0.1:${IVS_LOCAL_PORT}"
ENDPOINTS=""
for i in "${!REGIONS[@]}"; do
  ENDPOINTS+="${ENDPOINTS:+,}${REGIONS[$i]}=http://127.0.0.1:${REGION_PORTS[$i]}"
done
BIN_DIR="${STAGEFAN_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}"
STATE_DIR="${STAGEFAN_STATE_DIR:-$ROOT/.stagefan/stack-$STAGEFAN_PORT}"
WITH_MONITOR="${STAGEFAN_MONITOR:-1}"
INSPECTOR_PORT="${STAGEFAN_INSPECTOR_PORT:-$((STAGEFAN_PORT + 10000))}"

say() { printf '[stack] %s\n' "$*" >&2; }

# --- the ports, before anything is touched -------------------------------------------------
# A port another process holds (another stack on the same ports, most likely with the same
# state directory) ends the start here, before the storage below is emptied.
port_free() { # tcp|udp, port
  python3 - "$1" "$2" <<'PY'
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
if kind == socket.SOCK_STREAM:
    # As the servers bind: a port whose last connections linger in TIME_WAIT (a stack just
    # stopped) is free, only one a socket listens on is taken.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[2])))
except OSError:
    sys.exit(1)
PY
}
PORTS=("tcp $STAGEFAN_PORT STAGEFAN_PORT")
for i in "${!REGIONS[@]}"; do
  tag=""
  ((i == 0)) || tag="(${REGIONS[$i]})"
  PORTS+=("tcp ${REGION_PORTS[$i]} IVS_LOCAL_PORT$tag" "udp ${REGION_MEDIA_PORTS[$i]} IVS_LOCAL_MEDIA_PORT$tag")
done
[[ "$WITH_MONITOR" == 1 ]] && PORTS+=("tcp $MONITOR_PORT MONITOR_PORT")
[[ "${STAGEFAN_INSPECT:-0}" == 1 ]] && PORTS+=("tcp $INSPECTOR_PORT STAGEFAN_INSPECTOR_PORT")
for entry in "${PORTS[@]}"; do
  read -r kind port name <<<"$entry"
  if ! port_free "$kind" "$port"; then
    say "$name $port ($kind) is in use, by another stack or process: nothing started, nothing changed"
    exit 2
  fi
done

mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
# One stack per state directory, whatever its ports: the lock is held as long as this script
# or any process it started (they inherit the descriptor) runs.
exec 8>>"$STATE_DIR/stack.lock"
if ! flock -n 8; then
  say "$STATE_DIR is in use by another stack: nothing started, nothing changed"
  exit 2
fi
if [[ "${STAGEFAN_FRESH:-1}" == 1 ]]; then
  rm -rf "$STATE_DIR/wrangler"
fi

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    local any=0
    for pid in "${PIDS[@]}"; do alive "$pid" && any=1; done
    ((any == 0)) && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A test harness passes its pid: when it dies without stopping us, we stop too.
if [[ -n "${STAGEFAN_PARENT_PID:-}" ]]; then
  (
    while kill -0 "$STAGEFAN_PARENT_PID" 2>/dev/null; do sleep 2; done
    kill -TERM $$ 2>/dev/null
  ) &
fi

# Each child runs in its own process group, so that stopping it also stops what it started
# (wrangler's workerd).
start() { # name, command...
  local name=$1
  shift
  setsid "$@" >"$STATE_DIR/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
}

alive() { # a zombie is not alive
  kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]
}

wait_http() { # name, url, seconds, pid
  local name=$1 url=$2 seconds=$3 pid=$4
  local deadline=$((SECONDS + seconds))
  until curl -s -o /dev/null --max-time 2 "$url"; do
    if ! alive "$pid"; then
      say "$name exited; its log ($STATE_DIR/$name.log):"
      tail -n 40 "$STATE_DIR/$name.log" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      say "$name did not answer at $url within ${seconds}s; its log:"
      tail -n 40 "$STATE_DIR/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

for bin in ivs-local stagefan-monitor; do
  if [[ "$bin" == stagefan-monitor && "$WITH_MONITOR" != 1 ]]; then continue; fi
  [[ -x "$BIN_DIR/$bin" ]] || { say "missing $BIN_DIR/$bin: run 'cargo build -p $bin' (make build)"; exit 1; }
done
[[ -s .stagefan/keys/token-private.pem ]] || { say "missing the token key: run scripts/setup.sh"; exit 1; }

# --- ivs-local ----------------------------------------------------------------------------
# ivs-local reads IVS_QUOTA_SUBSCRIPTIONS, IVS_QUOTA_PUBLISHERS and IVS_QUOTA_STAGES from this
# environment; the worker gets the same values below, so the ledger and the region agree.
# One per region: the first logs to ivs-local.log, the others to ivs-local-<region>.log.
for i in "${!REGIONS[@]}"; do
  name=ivs-local
  ((i == 0)) || name="ivs-local-${REGIONS[$i]}"
  start "$name" "$BIN_DIR/ivs-local" --port "${REGION_PORTS[$i]}" \
    --media-port "${REGION_MEDIA_PORTS[$i]}" --region "${REGIONS[$i]}"
  IVS_PID=${PIDS[-1]}
  wait_http "$name" "http://127.0.0.1:${REGION_PORTS[$i]}/" 60 "$IVS_PID"
done

# --- the worker under wrangler dev --------------------------------------------------------
ENV_FILE="$STATE_DIR/worker.env"
{
  echo "IVS_ENDPOINT=$IVS_ENDPOINT"
  echo "IVS_REGION=$AWS_REGION"
  if ((${#REGIONS[@]} > 1)); then
    echo "IVS_REGIONS=$(IFS=,; echo "${REGIONS[*]}")"
    echo "IVS_ENDPOINTS=$ENDPOINTS"
  fi
  echo "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
  echo "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
  echo "STAGEFAN_HOST_KEY=$STAGEFAN_HOST_KEY"
  echo "STAGEFAN_ADMIN_KEY=$STAGEFAN_ADMIN_KEY"
  for name in STAGE_CAPACITY TOKEN_MODE FANOUT_MODE MIN_STAGES MAX_STAGES LEASE_TTL_SECONDS \
    TOKEN_TTL_SECONDS HEADROOM SCALE_DOWN_GRACE_SECONDS TOKEN_SIGNER DEFAULT_BROADCAST MEDIA_MODE \
    MAX_SEATS_PER_CLIENT ADMISSION_CONTROL PRESENCE CONSOLIDATE TICKET_BROADCASTS VIEWER_TICKET_SECRET VIEWER_TICKET_PUBLIC_KEY \
    IVS_CREATE_TOKEN_TPS IVS_PARTICIPANT_TPS \
    IVS_CREATE_STAGE_TPS IVS_DELETE_STAGE_TPS IVS_REPLICATION_TPS IVS_BUDGET_GUARD_MS \
    IVS_QUOTA_SUBSCRIPTIONS IVS_QUOTA_PUBLISHERS IVS_QUOTA_STAGES IVS_QUOTA_RESERVE_PERCENT \
    IVS_QUOTA_GRANT_TTL_SECONDS IVS_PARTICIPANT_HOUR_PRICES \
    STAGEFAN_DEPLOYMENT STAGEFAN_TEST_FAIL_REGISTRATIONS; do
    if [[ -n "${!name+x}" ]]; then echo "$name=${!name}"; fi
  done
  # One line: the worker reads `\n` as a line break.
  printf 'TOKEN_PRIVATE_KEY="%s"\n' "$(awk '{printf "%s\\n", $0}' .stagefan/keys/token-private.pem)"
} >"$ENV_FILE"
chmod 600 "$ENV_FILE"

# The stack's own worker: a copy of the worker build (built first if it is missing or older
# than its sources; the lock keeps a concurrent start from copying a half-written build), the
# pages built into the state directory, and a wrangler.toml pointing at both without the
# `[build]` command, which would otherwise rebuild the shared web/dist under every running
# stack. wrangler keeps its `.wrangler/` next to the config: in the state directory too.
WORKER_DIR="$STATE_DIR/worker"
rm -rf "$WORKER_DIR"
mkdir -p "$WORKER_DIR"
mkdir -p .stagefan
(
  flock 9
  scripts/build-worker.sh
  cp -R worker/build "$WORKER_DIR/build"
) 9>.stagefan/build.lock
node web/build.mjs --outdir "$WORKER_DIR/assets" >"$STATE_DIR/pages.log" 2>&1 ||
  { say "building the pages failed:"; cat "$STATE_DIR/pages.log" >&2; exit 1; }
awk '
  /^\[build\]/ { skip = 1; next }
  /^\[/ { skip = 0 }
  skip { next }
  /^main = "worker\/build\/index.js"$/ { print "main = \"build/index.js\""; main++; next }
  /^directory = "web\/dist"$/ { print "directory = \"assets\""; assets++; next }
  { print }
  END { if (main != 1 || assets != 1) exit 1 }
' wrangler.toml >"$WORKER_DIR/wrangler.toml" ||
  { say "wrangler.toml no longer has main = \"worker/build/index.js\" and directory = \"web/dist\": update scripts/stack.sh"; exit 1; }

export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_HIDE_BANNER=true
export WRANGLER_LOG_PATH="$STATE_DIR/wrangler-logs"
# wrangler's dev server through its API (scripts/dev-worker.mjs says why not the `wrangler dev`
# command: its always-on inspector costs more CPU per Durable Object call than the call).
start_worker() {
  start wrangler node scripts/dev-worker.mjs --config "$WORKER_DIR/wrangler.toml" \
    --ip 127.0.0.1 --port "$STAGEFAN_PORT" \
    --inspector-port "$INSPECTOR_PORT" --env-file "$ENV_FILE" --persist-to "$STATE_DIR/wrangler"
  WRANGLER_PID=${PIDS[-1]}
  wait_http wrangler "http://127.0.0.1:$STAGEFAN_PORT/api/config" 600 "$WRANGLER_PID"
}
start_worker
rm -f "$STATE_DIR/worker-restarts"

# --- the monitor --------------------------------------------------------------------------
if [[ "$WITH_MONITOR" == 1 ]]; then
  # The admin key reaches the monitor through its environment (exported above), never as a
  # flag: `ps` shows every process's arguments.
  # Every region, each at its ivs-local, as the worker has them (the monitor reads these
  # with the worker's parser: stagefan_core::config::regions_from_lookup).
  start monitor "$BIN_DIR/stagefan-monitor" --edge-url "http://127.0.0.1:$STAGEFAN_PORT" \
    --regions "$(IFS=,; echo "${REGIONS[*]}")" --ivs-endpoints "$ENDPOINTS" \
    --ivs-endpoint "$IVS_ENDPOINT" --listen "127.0.0.1:$MONITOR_PORT"
  MONITOR_PID=${PIDS[-1]}
  wait_http monitor "http://127.0.0.1:$MONITOR_PORT/live" 60 "$MONITOR_PID"
fi

EDGE="http://127.0.0.1:$STAGEFAN_PORT"
cat <<EOF

  stagefan is running (logs in $STATE_DIR)
    host page     $EDGE/host#key=$STAGEFAN_HOST_KEY
    viewer page   $EDGE/watch
    status page   $EDGE/status
    edge API      $EDGE/api/config
    ivs-local     $IVS_ENDPOINT${REGIONS[1]:+   (${REGIONS[0]})}
EOF
for i in "${!REGIONS[@]}"; do
  ((i == 0)) || printf '    ivs-local     http://127.0.0.1:%s   (%s)\n' "${REGION_PORTS[$i]}" "${REGIONS[$i]}"
done
if [[ "$WITH_MONITOR" == 1 ]]; then
  echo "    metrics       http://127.0.0.1:$MONITOR_PORT/metrics"
fi
cat <<EOF
    host key      $STAGEFAN_HOST_KEY
    admin key     $STAGEFAN_ADMIN_KEY   (local development keys; set your own for anything else)

  Ctrl-C (SIGINT) or SIGTERM stops everything.
STAGEFAN_READY $EDGE
EOF

# Stay up until a child dies or we are told to stop (SIGUSR1: restart the worker).
RESTART_WORKER=0
trap 'RESTART_WORKER=1' USR1
while true; do
  wait -n || true
  if ((RESTART_WORKER)); then
    RESTART_WORKER=0
    say "restarting the worker (its storage stays in $STATE_DIR/wrangler)"
    kill -TERM -- "-$WRANGLER_PID" 2>/dev/null || true
    wait "$WRANGLER_PID" 2>/dev/null || true
    KEEP=()
    for pid in "${PIDS[@]}"; do [[ "$pid" == "$WRANGLER_PID" ]] || KEEP+=("$pid"); done
    PIDS=("${KEEP[@]}")
    # The port is free again once the old server is gone.
    while curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$STAGEFAN_PORT/api/config"; do sleep 0.1; done
    start_worker
    date -u +%FT%TZ >>"$STATE_DIR/worker-restarts"
    say "worker restarted"
    continue
  fi
  break
done
say "a process of the stack exited; stopping the rest (logs in $STATE_DIR)"
exit 1
