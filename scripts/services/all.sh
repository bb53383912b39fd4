#!/usr/bin/env bash
# Bring up everything the test suite needs, in order:
#   deps -> postgres (5432) -> redis (6379) -> redis-cluster (7000-7002)
#   -> tansu build -> tansu broker (9092)
# Every step is idempotent, so running this twice is cheap.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

step() {
    local name=$1; shift
    local t0=$SECONDS rc=0
    echo "==> [$name] $*"
    "$@" || rc=$?
    if ((rc != 0)); then
        echo "==> [$name] FAILED (exit $rc) after $((SECONDS - t0))s: $*" >&2
        echo "services: setup aborted at step '$name'" >&2
        exit "$rc"
    fi
    echo "==> [$name] ok ($((SECONDS - t0))s)"
}

t_all=$SECONDS
step deps "$root/scripts/deps.sh"
step postgres "$here/postgres.sh"
step redis "$here/redis.sh"
step redis-cluster "$here/redis-cluster.sh" start
step tansu-build "$here/tansu.sh" build
step tansu-start "$here/tansu.sh" start
echo "services: all up in $((SECONDS - t_all))s"
