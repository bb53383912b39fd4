#!/usr/bin/env bash
# A private 3-master Redis Cluster on loopback, for the cluster-aware cache
# tests. Nothing is kept on disk except each node's cluster config.
#
#   redis-cluster.sh start    start the nodes and create the cluster; a no-op
#                             when it is already healthy; returns once every
#                             node reports cluster_state:ok
#   redis-cluster.sh stop     shut down the nodes this script started and
#                             remove their directory
#   redis-cluster.sh status   print each node's state; exit 0 only if healthy
#
# Environment:
#   REDIS_CLUSTER_PORTS  ports, space or comma separated (default "7000 7001 7002");
#                        each node also uses port+10000 for the cluster bus
#   REDIS_CLUSTER_DIR    data/config directory (default /tmp/rewards-redis-cluster)
#   REDIS_CLUSTER_WAIT   seconds to wait for cluster_state:ok (default 30)
set -euo pipefail

read -r -a PORTS <<< "${REDIS_CLUSTER_PORTS:-7000 7001 7002}"
if [[ ${#PORTS[@]} -eq 1 && "${PORTS[0]}" == *,* ]]; then
    IFS=, read -r -a PORTS <<< "${PORTS[0]}"
fi
DIR=${REDIS_CLUSTER_DIR:-/tmp/rewards-redis-cluster}
WAIT=${REDIS_CLUSTER_WAIT:-30}
N=${#PORTS[@]}

log() { echo "redis-cluster: $*"; }
die() { echo "redis-cluster: ERROR: $*" >&2; exit 1; }

cli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null; }
alive() { [[ "$(cli "$1" ping)" == "PONG" ]]; }
# Value of one field of `CLUSTER INFO` (or `INFO cluster`) on a node.
info_field() { cli "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"; }
# Is the node on this port one of ours (its working dir is under $DIR)?
ours() { cli "$1" config get dir | tr -d '\r' | sed -n 2p | grep -q "^$DIR/"; }

node_ok() {
    local port=$1
    alive "$port" \
        && [[ "$(info_field "$port" cluster_state)" == "ok" ]] \
        && [[ "$(info_field "$port" cluster_known_nodes)" == "$N" ]] \
        && [[ "$(info_field "$port" cluster_slots_assigned)" == "16384" ]]
}

healthy() {
    local port
    for port in "${PORTS[@]}"; do
        node_ok "$port" || return 1
    done
}

start_node() {
    local port=$1 nd="$DIR/$1"
    if alive "$port"; then
        if ! ours "$port"; then
            die "port $port is taken by a Redis that is not ours (not under $DIR); set REDIS_CLUSTER_PORTS"
        fi
        [[ "$(cli "$port" info cluster | tr -d '\r' | sed -n 's/^cluster_enabled://p')" == "1" ]] \
            || die "node on port $port is not cluster-enabled"
        log "node $port already running"
        return
    fi
    mkdir -p "$nd"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" \
        --cluster-enabled yes --cluster-config-file "$nd/nodes.conf" \
        --cluster-node-timeout 5000 \
        --save "" --appendonly no --dir "$nd" \
        --pidfile "$nd/redis.pid" --logfile "$nd/redis.log" \
        || die "redis-server failed to start on port $port (see $nd/redis.log)"
    local _
    for _ in $(seq 1 50); do
        alive "$port" && break
        sleep 0.2
    done
    alive "$port" || die "node on port $port does not answer PING (see $nd/redis.log)"
    log "node $port started"
}

stop_node() {
    local port=$1 nd="$DIR/$1" pid=""
    [[ -f "$nd/redis.pid" ]] && pid=$(cat "$nd/redis.pid" 2>/dev/null || true)
    if ! alive "$port" && { [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; }; then
        log "node $port not running"
        return
    fi
    if alive "$port"; then
        if ours "$port"; then
            cli "$port" shutdown nosave >/dev/null || true
        else
            log "port $port is not one of our nodes, left alone"
            return
        fi
    fi
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
        && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
        local _
        for _ in $(seq 1 25); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    fi
    log "node $port stopped"
}

wait_ok() {
    local deadline=$((SECONDS + WAIT))
    while ((SECONDS < deadline)); do
        healthy && return 0
        sleep 0.5
    done
    return 1
}

# Fresh nodes: each one knows only itself and owns no slot.
all_fresh() {
    local port
    for port in "${PORTS[@]}"; do
        [[ "$(info_field "$port" cluster_known_nodes)" == "1" ]] || return 1
        [[ "$(info_field "$port" cluster_slots_assigned)" == "0" ]] || return 1
    done
}

create_cluster() {
    local addrs=() port
    for port in "${PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
    log "creating cluster: ${addrs[*]} (masters only)"
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
        > "$DIR/create.log" 2>&1 \
        || { cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
}

cmd_start() {
    if healthy; then
        log "already healthy on ports ${PORTS[*]} (cluster_state:ok), nothing to do"
        return
    fi
    command -v redis-server >/dev/null || die "redis-server not found"
    mkdir -p "$DIR"
    local port
    for port in "${PORTS[@]}"; do start_node "$port"; done

    if all_fresh; then
        create_cluster
    else
        # Nodes restarted with their old nodes.conf rejoin by themselves.
        log "nodes already carry cluster config, waiting for them to converge"
        if ! WAIT=10 wait_ok; then
            log "cluster did not converge; rebuilding it from scratch"
            for port in "${PORTS[@]}"; do stop_node "$port"; done
            rm -rf "$DIR"
            mkdir -p "$DIR"
            for port in "${PORTS[@]}"; do start_node "$port"; done
            create_cluster
        fi
    fi

    wait_ok || { cmd_status >&2 || true; die "cluster not ok after ${WAIT}s"; }
    log "healthy: $N masters on ports ${PORTS[*]}, cluster_state:ok"
}

cmd_stop() {
    local port
    for port in "${PORTS[@]}"; do stop_node "$port"; done
    rm -rf "$DIR"
    log "stopped, removed $DIR"
}

cmd_status() {
    local port rc=0
    for port in "${PORTS[@]}"; do
        if alive "$port"; then
            printf 'redis-cluster: node %s: up, cluster_state:%s known_nodes:%s slots_assigned:%s\n' \
                "$port" "$(info_field "$port" cluster_state)" \
                "$(info_field "$port" cluster_known_nodes)" \
                "$(info_field "$port" cluster_slots_assigned)"
            node_ok "$port" || rc=1
        else
            log "node $port: down"
            rc=1
        fi
    done
    if ((rc == 0)); then log "healthy"; else log "NOT healthy"; fi
    return "$rc"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
