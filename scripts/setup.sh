#!/usr/bin/env bash
# Installs what stagefan needs on a Debian machine that already has Rust and Node, and only
# what is missing: a second run is a no-op that takes a second or two.
#
#   scripts/setup.sh          toolchain for `make run` (wasm32 Rust, wrangler, wasm-bindgen,
#                             worker-build, the local token key pair)
#   scripts/setup.sh --test   also what `make test` needs (chromium, prometheus, a Python venv
#                             with boto3 for ivs-local's AWS SDK test)
#
# Everything lands under apt, npm's node_modules/, or the git-ignored .stagefan/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/.stagefan"
mkdir -p "$STATE/bin" "$STATE/keys"

WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  say "apt-get install ${missing[*]}"
  if ((APT_UPDATED == 0)); then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# --- Rust for wasm32 --------------------------------------------------------------------
# rustup's target when it exists; otherwise Debian's rustc-web (1.96, with the std source),
# which builds std for wasm32 itself (-Zbuild-std). scripts/build-worker.sh makes the same
# choice by the same test.
has_rustup_wasm() {
  command -v rustup >/dev/null 2>&1 &&
    [[ -d "$(rustc --print sysroot 2>/dev/null)/lib/rustlib/wasm32-unknown-unknown/lib" ]] &&
    ls "$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib/"libstd-*.rlib >/dev/null 2>&1
}

apt_install ca-certificates curl openssl pkg-config build-essential
if has_rustup_wasm; then
  say "rust: rustup's wasm32-unknown-unknown target"
else
  # `rustup target add` may be impossible (no download of rustup's std for wasm32 here);
  # Debian's rustc-web brings a rustc whose std source builds for wasm32.
  apt_install rustc-web cargo-web rust-web-src lld
  # worker-build only checks that this directory exists before building.
  as_root mkdir -p "$(/usr/bin/rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib"
  say "rust: Debian rustc-web $(/usr/bin/rustc --version | cut -d' ' -f2) with -Zbuild-std"
fi

# --- Node packages (wrangler + its workerd, esbuild, playwright-core) --------------------
if [[ ! -x node_modules/.bin/wrangler ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  say "npm install"
  if [[ -f package-lock.json ]]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi

# --- wasm-bindgen-cli and worker-build at the versions Cargo.lock pins --------------------
lock_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}
# Compiled tools are also kept in a per-user cache, so that another clone on the same machine
# (CI runs in a fresh clone) copies them instead of compiling them again.
TOOL_CACHE="${STAGEFAN_TOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stagefan/tools}"
cargo_install() { # crate version binary
  local crate=$1 version=$2 bin=$3
  if [[ -x "$STATE/bin/$bin" ]] && grep -qx "$version" "$STATE/bin/.$bin.version" 2>/dev/null; then
    return 0
  fi
  local cached="$TOOL_CACHE/$crate-$version/bin/$bin"
  if [[ ! -x "$cached" ]]; then
    say "cargo install $crate $version (once per machine; several minutes)"
    # Not --locked: the crates' own lock files may name yanked versions.
    cargo install "$crate" --version "$version" --root "$TOOL_CACHE/$crate-$version" --force --quiet
  fi
  cp "$cached" "$STATE/bin/$bin"
  echo "$version" >"$STATE/bin/.$bin.version"
}
WASM_BINDGEN_VERSION="$(lock_version wasm-bindgen)"
WORKER_VERSION="$(lock_version worker)"
[[ -n "$WASM_BINDGEN_VERSION" && -n "$WORKER_VERSION" ]] || {
  echo "Cargo.lock names no wasm-bindgen/worker version: run 'cargo generate-lockfile'" >&2
  exit 1
}
cargo_install wasm-bindgen-cli "$WASM_BINDGEN_VERSION" wasm-bindgen
cargo_install worker-build "$WORKER_VERSION" worker-build

# --- the P-384 key pair for locally minted (self-signed) participant tokens --------------
if [[ ! -s "$STATE/keys/token-private.pem" ]]; then
  say "generating the local P-384 token key pair in .stagefan/keys/"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$STATE/keys/token-private.pem" 2>/dev/null
  chmod 600 "$STATE/keys/token-private.pem"
  rm -f "$STATE/keys/token-public.pem"
fi
if [[ ! -s "$STATE/keys/token-public.pem" ]]; then
  openssl pkey -in "$STATE/keys/token-private.pem" -pubout -out "$STATE/keys/token-public.pem" 2>/dev/null
fi

# --- what only the tests need -----------------------------------------------------------
if ((WITH_TEST)); then
  apt_install chromium prometheus python3 python3-venv
  if [[ ! -x "$STATE/venv/bin/python" ]] || ! "$STATE/venv/bin/python" -c 'import boto3' 2>/dev/null; then
    say "python venv with boto3 in .stagefan/venv"
    python3 -m venv "$STATE/venv"
    "$STATE/venv/bin/pip" install --quiet --disable-pip-version-check boto3
  fi
fi

say "toolchain ready"
