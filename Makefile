# netdx: two commands on a fresh Debian bookworm machine (as root):
#   make demo   - set up, build, run the local testbed end to end with live diagnosis
#   make test   - set up, build, run every test (real eBPF, real servers, real namespaces)
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
# Extra `netdx demo` options, e.g. DEMO_ARGS="--workload redis" (see `netdx demo --help`).
DEMO_ARGS ?=

.PHONY: setup build test demo dataset eval crds kind-test lint fmt cleanup bench bench-quick

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace --bins

test: build
	$(CARGO) nextest run --workspace --no-fail-fast

demo: setup
	$(CARGO) build --release --workspace --bins
	./target/release/netdx demo $(DEMO_ARGS)

# Labelled windows from every fault scenario through the real probes (~90 min; resumable).
dataset: setup
	$(CARGO) build --release --workspace --bins
	./target/release/netdx dataset --out data/dataset

# Model card (docs/model-card.{md,json}, docs/confusion-matrix.svg) and the shipped model.
eval: setup
	$(CARGO) build --release -p netdx-diagnosis --bins
	./target/release/netdx-eval --data data/dataset --docs docs --model-out operator/model/model.json

# Regenerates crds/ and docs/crd-reference.md from the Rust types (tests fail when they drift).
crds: setup
	$(CARGO) run -p netdx-operator --bin crdgen > crds/crds.yaml
	$(CARGO) run -p netdx-operator --bin crdgen -- --reference > docs/crd-reference.md

# Benchmarks into docs/benchmarks/ and docs/benchmarks.md: application impact next to bpftrace,
# hook costs, collection throughput, scale (full: < 20 min on 2 cores; quick: < 3 min, one round).
BENCH_OUT ?= docs/benchmarks
# node-probe is found next to netdx-bench, wherever cargo puts them.
BENCH_BIN = $(or $(CARGO_TARGET_DIR),target)/release/netdx-bench
bench: setup
	$(CARGO) build --release -p node-probe -p netdx-bench
	$(BENCH_BIN) --out $(BENCH_OUT) --doc docs/benchmarks.md

bench-quick: setup
	$(CARGO) build --release -p node-probe -p netdx-bench
	$(BENCH_BIN) --quick --out $(BENCH_OUT) --doc docs/benchmarks.md

# Real-cluster end to end; skips with a message where Docker/kind are missing.
kind-test:
	bash kind-tests/run.sh

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

cleanup: build
	./target/debug/netdx cleanup
