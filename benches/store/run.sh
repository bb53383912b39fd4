#!/usr/bin/env bash
# bench/store: the machine's own limits (pgbench, redis-benchmark) and the
# store-load modes in ONE run, printed as one table. About 3-4 minutes.
#
#   benches/store/run.sh [store-load args...]      e.g. --seconds 8
#
# Environment: PGHOST/PGPORT/PGUSER/PGDATABASE (default 127.0.0.1:5432,
# postgres, test), REDIS_HOST/REDIS_PORT (127.0.0.1:6379), REDIS_BENCH_DB
# (9: the logical database redis-benchmark writes its key:* keys in; they
# are deleted afterwards), CARGO_TARGET_DIR (/work/target-storebench),
# STORE_LOAD_BIN (skip the build and use this binary).
#
# pgbench runs against a scratch schema in the database, dropped at the end
# (also on failure); store-load uses and drops a schema per mode and a Redis
# key prefix per cached mode. Nothing is flushed, nothing is stopped.
set -euo pipefail

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test}
REDIS_HOST=${REDIS_HOST:-127.0.0.1}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_BENCH_DB=${REDIS_BENCH_DB:-9}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-storebench}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d)
SCHEMA="pgb_$$_$(date +%s)"

cleanup() {
  psql -qX -v ON_ERROR_STOP=0 -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  # redis-benchmark's own keys (key:__rand_int__ and friends) in its database only.
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_BENCH_DB" --scan --pattern 'key:*' 2>/dev/null \
    | xargs -r redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_BENCH_DB" DEL >/dev/null 2>&1 || true
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" -n "$REDIS_BENCH_DB" DEL mylist myset counter:__rand_int__ >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }

if [[ -n "${STORE_LOAD_BIN:-}" ]]; then
  BIN=$STORE_LOAD_BIN
else
  (cd "$ROOT" && cargo build --release -q -p rewards-benches --bin store-load)
  BIN=$CARGO_TARGET_DIR/release/store-load
fi

echo "# bench/store run"
echo "date:  $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "nproc: $(nproc); $(lscpu | grep 'Model name' | sed 's/  */ /g')"
echo "PostgreSQL: $(psql -AtX -c 'SHOW server_version') (fsync $(psql -AtX -c 'SHOW fsync'), synchronous_commit $(psql -AtX -c 'SHOW synchronous_commit')); Redis: $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" INFO server | tr -d '\r' | grep '^redis_version' | cut -d: -f2)"
echo "load average at start: $(load)"
LOADS=("$(load)")

# --- pgbench: insert-only, single-row commits and 100-row batches -----------
psql -qX -v ON_ERROR_STOP=1 <<SQL
CREATE SCHEMA $SCHEMA;
CREATE TABLE $SCHEMA.t (id bigserial PRIMARY KEY, member bigint NOT NULL, points bigint NOT NULL, note text NOT NULL);
SQL
cat > "$WORK/insert1.sql" <<SQL
\set m random(1, 100000)
INSERT INTO $SCHEMA.t (member, points, note) VALUES (:m, 1, 'purchase');
SQL
cat > "$WORK/insert100.sql" <<SQL
INSERT INTO $SCHEMA.t (member, points, note) SELECT (random() * 100000)::bigint, 1, 'purchase' FROM generate_series(1, 100);
SQL
pgbench_tps() { # script -> tps
  pgbench -n -f "$1" -c 8 -j 2 -T 10 2>/dev/null | tee "$1.out" | awk '/^tps = / {printf "%d", $3}'
}
echo "pgbench: single-row INSERT commits, 8 clients, 10 s ..." >&2
PG1=$(pgbench_tps "$WORK/insert1.sql")
LOADS+=("$(load)")
echo "pgbench: 100-row INSERT batches, 8 clients, 10 s ..." >&2
PG100=$(pgbench_tps "$WORK/insert100.sql")
PG100_ROWS=$((PG100 * 100))
LOADS+=("$(load)")

# --- redis-benchmark: unpipelined (50 clients) and pipelined (-P 16) -----------
rb() { # extra args -> "SET GET" ops/s
  redis-benchmark -h "$REDIS_HOST" -p "$REDIS_PORT" --dbnum "$REDIS_BENCH_DB" -q -n 100000 -c 50 -t set,get "$@" 2>/dev/null \
    | tr '\r' '\n' | awk '/requests per second/ {gsub(":", "", $1); v[$1] = int($2)} END {printf "%d %d", v["SET"], v["GET"]}'
}
echo "redis-benchmark: SET/GET, 50 clients, unpipelined and -P 16 ..." >&2
read -r RSET RGET <<<"$(rb)"
read -r RPSET RPGET <<<"$(rb -P 16)"
LOADS+=("$(load)")

# --- store-load -------------------------------------------------------------
echo "store-load $*" >&2
set +e
"$BIN" --progress "$@" | tee "$WORK/store-load.out"
STATUS=${PIPESTATUS[0]}
set -e
LOADS+=("$(load)")

fmt() { printf "%'d" "$1" 2>/dev/null || printf "%d" "$1"; }
echo
echo "## One table (same run)"
echo
echo "| measurement | per second | note |"
echo "|---|---|---|"
echo "| pgbench single-row INSERT commits, 8 clients | $(fmt "$PG1") | commits/s: the machine's fsync-bound commit rate |"
echo "| pgbench 100-row INSERT batch, 8 clients | $(fmt "$PG100") tx = $(fmt "$PG100_ROWS") rows | one statement, one commit per 100 rows |"
echo "| redis-benchmark SET / GET, 50 clients | $(fmt "$RSET") / $(fmt "$RGET") | unpipelined |"
echo "| redis-benchmark SET / GET, 50 clients, -P 16 | $(fmt "$RPSET") / $(fmt "$RPGET") | pipelined |"
awk -F'|' '/^\| (hand|single|batch|pipeline)\// {gsub(/^ +| +$/, "", $2); gsub(/^ +| +$/, "", $3); gsub(/^ +| +$/, "", $5); gsub(/^ +| +$/, "", $10); printf "| store-load %s | %s outcomes | %s per call; %s |\n", $2, $3, $5, $10}' "$WORK/store-load.out"
awk -F'|' '/^\| Redis cache|^\| PostgreSQL alone/ {gsub(/^ +| +$/, "", $2); printf "| balance read: %s | p50/p95/p99 %s/%s/%s ms | one caller, sequential |\n", $2, $4, $5, $6}' "$WORK/store-load.out"
echo
echo "load average (1/5/15 min) start, after pgbench x2, after redis, after store-load: ${LOADS[*]}"
exit "$STATUS"
