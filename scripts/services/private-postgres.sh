#!/usr/bin/env bash
# A private PostgreSQL cluster for fault experiments: its own data directory
# and port, so it can be stopped and started without touching the shared
# server on 5432. The fault tests do the same from Rust
# (rewards-runtime/tests/common/services.rs).
#
#   private-postgres.sh init DIR PORT   initdb into DIR/data, start on PORT,
#                                       create database `test`; prints the URL
#   private-postgres.sh stop DIR        stop at once (-m immediate: a crash)
#   private-postgres.sh start DIR PORT  start again (recovers from the WAL)
#   private-postgres.sh destroy DIR     stop if running, remove DIR
#
# PostgreSQL refuses to run as root: as root, every command runs as the
# `postgres` OS user (runuser), and DIR is handed to that user.
# Environment: PG_BIN (default: the newest /usr/lib/postgresql/*/bin).
set -euo pipefail

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[[ -x "$PG_BIN/pg_ctl" ]] || { echo "private-postgres: no pg_ctl in '$PG_BIN' (set PG_BIN)" >&2; exit 1; }

as_pg() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    local dir=$1 port=$2
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off" -w -t 60 start >/dev/null
}

case "${1:-}" in
    init)
        dir=${2:?DIR}; port=${3:?PORT}
        mkdir -p "$dir"
        [[ $(id -u) == 0 ]] && chown postgres: "$dir"
        as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
        start "$dir" "$port"
        as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc 'CREATE DATABASE test'
        echo "postgres://postgres@127.0.0.1:$port/test"
        ;;
    start) start "${2:?DIR}" "${3:?PORT}" ;;
    stop) as_pg "$PG_BIN/pg_ctl" -D "${2:?DIR}/data" stop -m immediate -w >/dev/null ;;
    destroy)
        dir=${2:?DIR}
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 \
            && as_pg "$PG_BIN/pg_ctl" -D "$dir/data" stop -m immediate -w >/dev/null
        rm -rf "$dir"
        ;;
    *) echo "usage: $0 init DIR PORT | start DIR PORT | stop DIR | destroy DIR" >&2; exit 2 ;;
esac
