#!/usr/bin/env bash
# ivs-local against the official AWS SDK for Python (boto3, in .stagefan/venv from
# scripts/setup.sh --test): starts ivs-local on free ports, runs ivs-local/tests/aws_sdk_test.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.stagefan/venv/bin/python"
[[ -x "$PY" ]] || { echo "no .stagefan/venv: run scripts/setup.sh --test" >&2; exit 1; }
BIN="${STAGEFAN_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}/ivs-local"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
MEDIA="$("$PY" -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p .stagefan
"$BIN" --port "$PORT" --media-port "$MEDIA" >.stagefan/sdk-test-ivs-local.log 2>&1 &
IVS=$!
trap 'kill -TERM $IVS 2>/dev/null || true; wait $IVS 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
  sleep 0.2
done
"$PY" ivs-local/tests/aws_sdk_test.py --endpoint "http://127.0.0.1:$PORT"
