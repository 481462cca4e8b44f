#!/usr/bin/env bash
# Runs the boto3 test (aws_sdk_test.py) against a fresh ivs-local on free ports, then stops it.
#
#   ivs-local/tests/run_aws_sdk_test.sh
#
# IVS_LOCAL_BIN: the binary (default: $CARGO_TARGET_DIR or target, /debug/ivs-local; built with
#   `cargo build -p ivs-local` if missing). PYTHON: an interpreter with boto3 (default: the
#   project venv .stagefan/venv, created with boto3 if it does not exist).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bin="${IVS_LOCAL_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/ivs-local}"
if [[ ! -x "$bin" ]]; then
  cargo build -q -p ivs-local
fi
python="${PYTHON:-$root/.stagefan/venv/bin/python}"
if [[ ! -x "$python" ]]; then
  python3 -m venv "$root/.stagefan/venv"
  "$root/.stagefan/venv/bin/pip" install -q boto3
  python="$root/.stagefan/venv/bin/python"
fi
out="$(mktemp)"
"$bin" --port 0 --media-port 0 >"$out" 2>"$out.err" &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$out" "$out.err"' EXIT
endpoint=""
for _ in $(seq 1 100); do
  endpoint="$(grep -o 'http=http://[0-9.:]*' "$out" | sed 's/^http=//' || true)"
  [[ -n "$endpoint" ]] && break
  kill -0 $pid 2>/dev/null || { cat "$out.err" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$endpoint" ]] || { echo "ivs-local did not start" >&2; cat "$out.err" >&2; exit 1; }
"$python" "$root/ivs-local/tests/aws_sdk_test.py" --endpoint "$endpoint"
