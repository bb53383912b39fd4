#!/usr/bin/env bash
# Ensure the shared PostgreSQL on 127.0.0.1:5432 is up and database `test`
# exists. Never stops anything. Overridable: PGHOST, PGPORT, PGUSER, PG_TEST_DB.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
DB=${PG_TEST_DB:-test}
export PGHOST PGPORT PGUSER

ready() { pg_isready -q -h "$PGHOST" -p "$PGPORT"; }

if ready; then
    echo "postgres: already accepting connections on $PGHOST:$PGPORT"
else
    versions=$(ls /etc/postgresql 2>/dev/null || true)
    if [[ -z "$versions" ]]; then
        echo "postgres: ERROR: not running on $PGHOST:$PGPORT and no cluster under /etc/postgresql" >&2
        exit 1
    fi
    version=$(echo "$versions" | sort -V | tail -n1)
    echo "postgres: down on $PGHOST:$PGPORT, starting cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 60); do
        ready && break
        sleep 0.5
    done
    if ! ready; then
        echo "postgres: ERROR: still not accepting connections on $PGHOST:$PGPORT after 30 s" >&2
        exit 1
    fi
    echo "postgres: started $version/main, accepting connections"
fi

exists=$(psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")
if [[ "$exists" == "1" ]]; then
    echo "postgres: database '$DB' exists"
else
    psql -d postgres -qc "CREATE DATABASE \"$DB\""
    echo "postgres: created database '$DB'"
fi
