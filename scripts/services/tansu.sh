#!/usr/bin/env bash
# tansu: the Kafka-compatible broker used by the runtime's tests.
#
#   tansu.sh build    cargo-install tansu once into a cache folder (reused
#                     afterwards; a no-op when the cached install matches)
#   tansu.sh start    run the broker in the background, wait for its port
#   tansu.sh stop     stop the broker this script started
#   tansu.sh status   show binary, pid and port; exit 0 only if running
#
# Environment:
#   TANSU_ROOT     install/cache folder (default /var/cache/rewards/tansu);
#                  binary at $TANSU_ROOT/bin/tansu, build dir $TANSU_ROOT/target
#   TANSU_VERSION  crate version to install (default 0.6.0; "latest" = newest)
#   TANSU_FEATURES cargo features (default dynostore,libsql: without a storage
#                  engine feature the broker refuses to start)
#   TANSU_NICE     niceness of the build (default 10)
#   TANSU_HOST / TANSU_PORT   listener (default 127.0.0.1:9092)
#   TANSU_STORAGE  storage engine URL (default memory://tansu/). To keep data
#                  across restarts use sqlite with FOUR slashes for an absolute
#                  path: sqlite:////tmp/x.db (tansu 0.6 reads sqlite://a/b.db as
#                  the relative path a/b.db, so sqlite:///tmp/x.db fails)
#   TANSU_RUN_DIR  pid and log files (default /tmp/rewards-tansu)
set -euo pipefail

TANSU_ROOT=${TANSU_ROOT:-/var/cache/rewards/tansu}
TANSU_VERSION=${TANSU_VERSION:-0.6.0}
TANSU_FEATURES=${TANSU_FEATURES:-dynostore,libsql}
TANSU_NICE=${TANSU_NICE:-10}
HOST=${TANSU_HOST:-127.0.0.1}
PORT=${TANSU_PORT:-9092}
STORAGE=${TANSU_STORAGE:-memory://tansu/}
RUN_DIR=${TANSU_RUN_DIR:-/tmp/rewards-tansu}
BIN="$TANSU_ROOT/bin/tansu"
PIDFILE="$RUN_DIR/tansu-$PORT.pid"
LOGFILE="$RUN_DIR/tansu-$PORT.log"

log() { echo "tansu: $*"; }
die() { echo "tansu: ERROR: $*" >&2; exit 1; }

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

our_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'tansu' \
        || return 1
    echo "$pid"
}

# Does the cached install already match the requested version and features?
install_matches() {
    local meta="$TANSU_ROOT/.crates2.json" f
    [[ -x "$BIN" && -f "$meta" ]] || return 1
    [[ "$TANSU_VERSION" == latest ]] && return 1
    grep -q "\"tansu $TANSU_VERSION " "$meta" || return 1
    IFS=, read -r -a feats <<< "$TANSU_FEATURES"
    for f in "${feats[@]}"; do
        grep -q "\"$f\"" "$meta" || return 1
    done
}

cmd_build() {
    mkdir -p "$TANSU_ROOT"
    exec 9> "$TANSU_ROOT/.build.lock"
    if ! flock -n 9; then
        log "another build holds $TANSU_ROOT/.build.lock, waiting for it"
        flock 9
    fi
    if install_matches; then
        log "cached build is up to date: $BIN ($("$BIN" --version 2>/dev/null | head -n1))"
        return
    fi
    command -v cargo >/dev/null || die "cargo not found"
    local version_args=()
    [[ "$TANSU_VERSION" != latest ]] && version_args=(--version "$TANSU_VERSION")
    local build_log="$TANSU_ROOT/build.log"
    log "building tansu ${TANSU_VERSION} (features $TANSU_FEATURES) into $TANSU_ROOT"
    log "nice -n $TANSU_NICE, 10-30 minutes on 2 cores the first time (31 min here under load); log: $build_log"
    local t0=$SECONDS rc=0
    CARGO_TARGET_DIR="$TANSU_ROOT/target" nice -n "$TANSU_NICE" \
        cargo install tansu --locked "${version_args[@]}" \
        --features "$TANSU_FEATURES" --root "$TANSU_ROOT" > "$build_log" 2>&1 &
    local cpid=$!
    while kill -0 "$cpid" 2>/dev/null; do
        sleep 5 &
        wait $! || true
        kill -0 "$cpid" 2>/dev/null || break
        if (((SECONDS - t0) % 30 < 5)); then
            log "building... $(fmt_secs $((SECONDS - t0))) elapsed, $(grep -c ' Compiling ' "$build_log" || true) crates compiled, last: $(grep ' Compiling ' "$build_log" | tail -n1 | sed 's/^ *Compiling //')"
        fi
    done
    wait "$cpid" || rc=$?
    if ((rc != 0)); then
        tail -n 30 "$build_log" >&2
        die "cargo install failed (exit $rc) after $(fmt_secs $((SECONDS - t0))); full log: $build_log"
    fi
    [[ -x "$BIN" ]] || die "cargo install succeeded but $BIN is missing"
    if grep -q 'is already installed' "$build_log"; then
        log "cargo found the install up to date ($(fmt_secs $((SECONDS - t0)))): $BIN ($("$BIN" --version 2>/dev/null | head -n1))"
        return
    fi
    log "built in $(fmt_secs $((SECONDS - t0))): $BIN ($("$BIN" --version 2>/dev/null | head -n1))"
}

cmd_start() {
    local pid
    if pid=$(our_pid); then
        if port_open; then
            log "already running (pid $pid) on $HOST:$PORT, nothing to do"
            return
        fi
        log "pid $pid alive but $HOST:$PORT closed; restarting it"
        cmd_stop
    fi
    if port_open; then
        die "$HOST:$PORT is already taken by another process; set TANSU_PORT"
    fi
    [[ -x "$BIN" ]] || die "$BIN missing; run: $0 build"
    mkdir -p "$RUN_DIR"
    log "starting broker on $HOST:$PORT, storage $STORAGE (log: $LOGFILE)"
    setsid "$BIN" broker \
        --listener-url "tcp://$HOST:$PORT" \
        --advertised-listener-url "tcp://$HOST:$PORT" \
        --storage-engine "$STORAGE" \
        >> "$LOGFILE" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PIDFILE"
    local _
    for _ in $(seq 1 100); do
        port_open && break
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOGFILE" >&2
            rm -f "$PIDFILE"
            die "broker exited during start-up (see $LOGFILE)"
        fi
        sleep 0.1
    done
    if ! port_open; then
        tail -n 30 "$LOGFILE" >&2
        die "broker (pid $pid) does not accept connections on $HOST:$PORT after 10 s"
    fi
    log "running (pid $pid) on $HOST:$PORT"
}

cmd_stop() {
    local pid
    if ! pid=$(our_pid); then
        rm -f "$PIDFILE"
        log "not running (no live pid in $PIDFILE)"
        return
    fi
    kill "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM for 5 s, sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    log "stopped (pid $pid)"
}

cmd_status() {
    local pid
    if [[ -x "$BIN" ]]; then
        log "binary $BIN ($("$BIN" --version 2>/dev/null | head -n1))"
    else
        log "binary $BIN not built"
    fi
    if pid=$(our_pid) && port_open; then
        log "running (pid $pid) on $HOST:$PORT: $(tr '\0' ' ' < "/proc/$pid/cmdline")"
        return 0
    fi
    log "not running on $HOST:$PORT"
    return 1
}

case "${1:-}" in
    build) cmd_build ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 build|start|stop|status" >&2; exit 2 ;;
esac
