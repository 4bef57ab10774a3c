#!/usr/bin/env bash
# Idempotent setup for netdx on Debian bookworm (root): system packages, the pinned Rust
# toolchains, bpf-linker built against LLVM 22, cargo-nextest. Each step is skipped quickly
# when already satisfied, so `make test` / `make demo` can call it every time.
set -euo pipefail

EBPF_TOOLCHAIN=1.98.0
BPF_LINKER_VERSION=0.13.0
NEXTEST_VERSION=0.9.143

APT_PACKAGES=(
  build-essential pkg-config llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
  iproute2 nftables iptables procps psmisc
  redis-server redis-tools nginx-light wrk memcached libmemcached-tools
  postgresql postgresql-contrib bpftrace hyperfine
)

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh must run as root (it installs packages and the tests load eBPF programs)" >&2
  exit 1
fi

# A clean `make test` writes about 5 GB to target/ (and `make demo` a release build besides); say
# so up front rather than let the compiler fail later with an I/O error.
target_dir="${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}"
mkdir -p "$target_dir"
free_gb=$(df -P -BG "$target_dir" | awk 'NR==2 {gsub("G","",$4); print $4}')
if [ "${free_gb:-0}" -lt 8 ]; then
  log "warning: ${free_gb} GB free under $target_dir; a clean build and test needs about 8 GB"
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests start their own server instances inside namespaces; the distro units are not needed.
  for svc in redis-server nginx memcached postgresql; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
  done
fi

if ! command -v rustup >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v rustup >/dev/null 2>&1; then
  echo "rustup is required (the machine's Rust toolchain comes from rustup)" >&2
  exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"

# One toolchain (rust-toolchain.toml) for host and eBPF builds: its LLVM (22.x) must match
# bpf-linker's.
tc=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
if [ "$tc" != "$EBPF_TOOLCHAIN" ]; then
  echo "rust-toolchain.toml pins $tc but the eBPF build needs $EBPF_TOOLCHAIN (LLVM 22)" >&2
  exit 1
fi
if ! rustup toolchain list | grep -q "^${tc}"; then
  log "rustup: installing toolchain ${tc}"
  rustup toolchain install "$tc" --profile minimal -c rust-src -c clippy -c rustfmt
fi
installed=$(rustup component list --toolchain "$tc" --installed)
for c in rust-src clippy rustfmt; do
  grep -q "^$c" <<<"$installed" || rustup component add "$c" --toolchain "$tc"
done

if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "cargo: building bpf-linker ${BPF_LINKER_VERSION} against LLVM 22 (~1 min)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo +"$tc" install bpf-linker --version "$BPF_LINKER_VERSION" \
    --locked --no-default-features --features llvm-22
fi

if ! cargo nextest --version 2>/dev/null | grep -q "$NEXTEST_VERSION"; then
  log "cargo: installing cargo-nextest ${NEXTEST_VERSION}"
  cargo +"$tc" install cargo-nextest --version "$NEXTEST_VERSION" --locked
fi

# Classic tracepoints need tracefs; the probe mounts it too, this just helps bpftrace.
if [ ! -d /sys/kernel/tracing/events ]; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
fi
log "ready"
