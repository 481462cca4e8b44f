#!/usr/bin/env bash
# Builds the worker to wasm32 with worker-build (output: worker/build/), offline, with the
# tools scripts/setup.sh installed. A no-op when the output is newer than every input.
#   STAGEFAN_WASM_TARGET_DIR  cargo target dir for the wasm build (default: target/wasm)
#   STAGEFAN_FORCE_BUILD=1    rebuild even when up to date
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT=worker/build/index.js
if [[ -f "$OUT" && "${STAGEFAN_FORCE_BUILD:-0}" != 1 ]] &&
  [[ -z "$(find worker/src core/src worker/Cargo.toml core/Cargo.toml Cargo.toml Cargo.lock -newer "$OUT" -print -quit)" ]]; then
  exit 0
fi

for tool in .stagefan/bin/wasm-bindgen .stagefan/bin/worker-build node_modules/.bin/esbuild; do
  [[ -x "$tool" ]] || { echo "missing $tool: run scripts/setup.sh (or make setup)" >&2; exit 1; }
done

# worker-build finds its tools through these before trying to download them.
export WASM_BINDGEN_BIN="$ROOT/.stagefan/bin/wasm-bindgen"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export CARGO_TARGET_DIR="${STAGEFAN_WASM_TARGET_DIR:-$ROOT/target/wasm}"

extra=()
sysroot_has_wasm_std() {
  ls "$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib/"libstd-*.rlib >/dev/null 2>&1
}
if ! sysroot_has_wasm_std; then
  # Debian's rustc-web: build std for wasm32 from its source (see scripts/setup.sh).
  export PATH="/usr/bin:$PATH"
  export RUSTC_BOOTSTRAP=1
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld
  extra=(-Zbuild-std=std,panic_abort)
fi

# wasm-opt is not run (no binaryen download offline); the release profile optimises for size.
"$ROOT/.stagefan/bin/worker-build" --release --no-opt worker "${extra[@]}"
touch "$OUT"
