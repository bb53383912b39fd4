#!/usr/bin/env bash
# A day of traffic through PostgreSQL + Redis, reconciled (issue 9, docs/performance.md "A day of traffic").
#
#   scripts/day.sh [TRANSACTIONS] [extra day-run arguments...]
#
# Generates the seeded day (`rwd generate --seed 7`, one member per ten
# transactions) into $DAY_DIR (default /var/tmp/rewards-day, reused when the
# same size was generated before), then runs `day-run` (release build): the
# file through the pipeline into PostgreSQL with Redis write-through, the
# same file through the in-memory engine, and a member-by-member comparison.
# Default size: 10,000,000 (the full day, minutes); CI runs 20,000.
# Services: the shared PostgreSQL and Redis (scripts/services/all.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-10000000}
shift || true
DAY_DIR=${DAY_DIR:-/var/tmp/rewards-day}
mkdir -p "$DAY_DIR"
FILE="$DAY_DIR/day-seed7-$N.jsonl"

echo "==> building rwd and day-run (release)"
cargo build --release -q -p rwd -p rewards-benches --bin rwd --bin day-run
TARGET=${CARGO_TARGET_DIR:-target}

if [[ ! -s "$FILE" ]]; then
    echo "==> generating $N transactions into $FILE"
    t0=$SECONDS
    "$TARGET/release/rwd" generate --seed 7 --transactions "$N" > "$FILE.tmp"
    mv "$FILE.tmp" "$FILE"
    echo "    $(du -h "$FILE" | cut -f1) in $((SECONDS - t0)) s"
else
    echo "==> reusing $FILE"
fi

# PostgreSQL needs ~2.5 KB of disk per transaction (the full day's schema
# took 20 GB in session 5, plus WAL; before migration 5 it filled 30 GB by
# 94% and stopped the server when the disk ran out): refuse to start
# without room for it (DAY_SKIP_DISK_CHECK=1 to override).
PGDATA_DIR=${PGDATA_DIR:-/var/lib/postgresql}
need_kb=$((N * 5 / 2))
free_kb=$(df -Pk "$PGDATA_DIR" 2>/dev/null | awk 'NR==2 {print $4}')
if [[ -n "$free_kb" && "$free_kb" -lt "$need_kb" && -z "${DAY_SKIP_DISK_CHECK:-}" ]]; then
    echo "day: $N transactions need ~$((need_kb / 1048576)) GiB free for PostgreSQL under $PGDATA_DIR; $((free_kb / 1048576)) GiB free" >&2
    exit 1
fi

echo "==> machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
exec "$TARGET/release/day-run" --input "$FILE" "$@"
