#!/usr/bin/env bash
# Runs the peers benchmark (.rwd against hand-written Rust, rhai, zen-engine
# and CEL on the 24-rule reference program) in one criterion run and prints
# the tables of docs/performance.md, "Against other engines"; redraws
# docs/img/peers-scaling.svg. Usage: benches/peers/run.sh [criterion args]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
export PEERS_MEMORY_OUT="$target/peers-memory.json"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -p rewards-benches --features "${PEERS_FEATURES:-peers}" --bench peers -- \
  --warm-up-time 1 --measurement-time 3 "$@" >&2
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(nproc) cores, $(lscpu | grep 'Model name' | sed 's/Model name: *//'), load average before ${load_before}, after ${load_after}, $(date -u +%Y-%m-%d)"
python3 benches/peers/table.py "$target/criterion" "$PEERS_MEMORY_OUT" docs/img/peers-scaling.svg
