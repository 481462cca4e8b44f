# stagefan — the two commands:
#   make run    install what is missing, build, start ivs-local + the worker (wrangler dev) +
#               the monitor, print the URLs; Ctrl-C stops everything
#   make test   every check: fmt, clippy, unit tests, the wasm build, the integration tests
#               through wrangler dev + ivs-local, ivs-local's AWS SDK test, the browser tests
#   make check  the inner loop: fmt, clippy, unit tests (Rust and pages); no set-up,
#               no stack, a minute or two once target/ is warm
# Others: make setup | build | worker | pages | stack | integration | browser-test | bench | sim
#
# Every default below can be overridden from the environment (STAGE_CAPACITY=10 make run).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export STAGEFAN_PORT ?= 8787
export IVS_LOCAL_PORT ?= 8790
export MONITOR_PORT ?= 9464
export STAGE_CAPACITY ?= 50
export TOKEN_MODE ?= self-signed
export FANOUT_MODE ?= multi-publish
export STAGEFAN_HOST_KEY ?= local-host-key
export STAGEFAN_ADMIN_KEY ?= local-admin-key

# Native builds use the default target/; the wasm build has its own (scripts/build-worker.sh).
NATIVE_BINS := -p ivs-local -p stagefan-monitor


.PHONY: help setup setup-test build worker pages run stack check test lint unit web-test integration sdk-test browser-test bench sim

help:
	@sed -n '2,10p' Makefile | sed 's/^# \{0,1\}//'

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

# The wasm worker (worker/build/), rebuilt only when its inputs changed.
worker: setup
	@scripts/build-worker.sh

# The pages (web/src → web/dist), served by the worker as static assets.
pages: setup
	@node web/build.mjs

build: setup worker pages
	cargo build $(NATIVE_BINS)

run: build
	@exec scripts/stack.sh

# The stack without rebuilding (e.g. for the browser tests by hand).
stack:
	@exec scripts/stack.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace --exclude stagefan-tests

# The pages' pure modules (web/src/host-stages.js, …) under node --test, no browser.
web-test:
	node --test web/test/

# The inner loop: what needs neither set-up nor a stack.
check: lint unit web-test
	@echo "make check: fmt, clippy and unit tests passed"

# Starts its own stacks on free ports (tests/src/lib.rs), tests/tests/stacks.rs among them:
# two stacks from one checkout both serve their pages, a start on a busy port changes nothing.
# The monitor's tests against the real ivs-local (120 stages within its IVS budget, about a
# minute; orphans; backing off) and against a whole stack without a monitor of its own.
integration: build
	cargo test -p stagefan-tests -- --test-threads=1
	cargo test -p stagefan-monitor --test ivs_local -- --ignored --test-threads=1
	MAX_STAGES=2 SCALE_DOWN_GRACE_SECONDS=4 scripts/with-stack.sh cargo test -p stagefan-monitor --test stack -- --ignored --test-threads=1

sdk-test: build
	@scripts/sdk-test.sh

# The browser tests run against a stack of their own (capacity 2: 6 viewers over 3 stages).
# A second stack runs FANOUT_MODE=replicate for replicate.test.mjs, a third MEDIA_MODE=ivs for
# ivs-*.test.mjs: the pages with the real IVS Web Broadcast SDK against ivs-local, whose
# subscriber cap equals the stage capacity there. A test started on the wrong mode's stack
# skips, and fails under CI=true (tests/browser/lib/must-run.mjs), so each stack gets only its
# own tests.
BROWSER_TESTS := $(filter-out tests/browser/replicate.test.mjs tests/browser/regions.test.mjs tests/browser/consolidate.test.mjs tests/browser/ivs-%,$(wildcard tests/browser/*.test.mjs))
browser-test: build
	@if [[ -n "$(BROWSER_TESTS)" ]]; then \
	  STAGE_CAPACITY=2 scripts/with-stack.sh node --test --test-concurrency=1 $(BROWSER_TESTS); \
	  STAGE_CAPACITY=2 FANOUT_MODE=replicate \
	    scripts/with-stack.sh node --test --test-concurrency=1 tests/browser/replicate.test.mjs \
	  || { echo "browser-test: replicate.test.mjs failed; once more on a fresh stack (a known flake: a viewer's frames stall after the host's reconnect, 2 of 6 runs on 2026-12-02)"; \
	    STAGE_CAPACITY=2 FANOUT_MODE=replicate \
	    scripts/with-stack.sh node --test --test-concurrency=1 tests/browser/replicate.test.mjs; }; \
	  STAGE_CAPACITY=2 FANOUT_MODE=replicate IVS_REGIONS=us-east-1,eu-west-1 \
	    scripts/with-stack.sh node --test --test-concurrency=1 tests/browser/regions.test.mjs; \
	  STAGE_CAPACITY=3 HEADROOM=0.3 SCALE_DOWN_GRACE_SECONDS=4 LEASE_TTL_SECONDS=9 IVS_LOCAL_SUBSCRIBER_CAP=3 \
	    scripts/with-stack.sh node --test --test-concurrency=1 tests/browser/consolidate.test.mjs; \
	  STAGE_CAPACITY=2 MEDIA_MODE=ivs IVS_LOCAL_SUBSCRIBER_CAP=2 \
	    scripts/with-stack.sh node --test --test-concurrency=1 tests/browser/ivs-*.test.mjs; \
	else echo "no browser tests yet (tests/browser/)"; fi

test: setup-test build lint unit web-test integration sdk-test browser-test
	@echo "make test: all checks passed"

# Benchmarks, not tests: tokens/s and latency, and the wasm size; seats given during a storm
# and recovery from a worker restart (docs/benchmarks.md); presence at the pool vs at the
# stages (docs/presence.md).
bench: build
	cargo run --release -p stagefan-tests --bin stagefan-bench
	cargo run --release -p stagefan-tests --bin stagefan-recovery-bench
	cargo run --release -p stagefan-tests --bin stagefan-presence-bench
	cargo build --release -p stagefan-monitor
	STAGEFAN_MONITOR_STAGES=1000 STAGEFAN_MONITOR_BIN=target/release/stagefan-monitor \
	  cargo test -p stagefan-monitor --test ivs_local -- --ignored --nocapture with_many_stages

# The simulator (sim/, issue #11): the real core against a modelled IVS, viewers, host and
# Durable Object restarts, in virtual time. The report ends with
# `sim: <viewers> viewers, <violations> violations`; the wall time goes to stderr.
SIM_SCENARIO ?= million
SIM_SEED ?= 1
sim:
	cargo run --release -p stagefan-sim -- --scenario $(SIM_SCENARIO) --seed $(SIM_SEED)
