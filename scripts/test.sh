#!/usr/bin/env bash
# The project's test command (README): bring the services up (idempotent),
# run the whole workspace's tests with nextest, then the doc tests.
# Both test phases always run; the exit status is non-zero if either failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services/all.sh

# Where the shared services are, for tests that want them (only set when unset).
: "${TANSU_ROOT:=/var/cache/rewards/tansu}"
export TANSU_BIN="${TANSU_BIN:-$TANSU_ROOT/bin/tansu}"
export PATH="$TANSU_ROOT/bin:$PATH"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export REDIS_CLUSTER_NODES="${REDIS_CLUSTER_NODES:-127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "test: cargo-nextest missing; run scripts/deps.sh" >&2
    exit 1
fi

rc=0
echo "==> cargo nextest run --workspace --no-fail-fast"
cargo nextest run --workspace --no-fail-fast || rc=$?
scripts/fuzz.sh 15 || rc=$?
echo "==> cargo test --workspace --doc"
cargo test --workspace --doc || rc=$?

if ((rc != 0)); then
    echo "test: FAILED (see above)" >&2
fi
exit "$rc"
