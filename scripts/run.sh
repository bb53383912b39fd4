#!/usr/bin/env bash
# The main job (README): build the example daemon and run it in its
# embedded default — in-memory store with its event log, the example rules
# (examples/rules/) and data (examples/data/), no services — with
# --exit-when-done: it processes the file, prints the summary and stops.
#
# Environment:
#   REWARDS_STATE_DIR  state folder (default state/run; emptied first
#                      unless KEEP_STATE=1, so the summary is of a fresh run)
#   REWARDS_LOG_LEVEL  log filter (default warn; logs go to stderr)
#   Any other REWARDS_* override of docs/operations.md applies too.
# Extra arguments are passed to the daemon.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STATE="${REWARDS_STATE_DIR:-state/run}"
if [[ -z "${KEEP_STATE:-}" ]]; then
    rm -rf "$STATE"
fi

echo "==> building rewards-daemon (release, embedded mode only: no librdkafka needed)"
cargo build --release -p rewards-examples --bin rewards-daemon --no-default-features

BIN="${CARGO_TARGET_DIR:-target}/release/rewards-daemon"
echo "==> rewards-daemon --config examples/daemon.toml --exit-when-done (state: $STATE)"
REWARDS_STATE_DIR="$STATE" \
REWARDS_HTTP_ADDR="${REWARDS_HTTP_ADDR:-127.0.0.1:0}" \
REWARDS_LOG_LEVEL="${REWARDS_LOG_LEVEL:-warn}" \
    "$BIN" --config examples/daemon.toml --exit-when-done "$@"
