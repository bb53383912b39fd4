#!/usr/bin/env bash
# Ensure the shared Redis on 127.0.0.1:6379 is up (nothing kept on disk).
# Never stops anything. Overridable: REDIS_PORT.
set -euo pipefail

PORT=${REDIS_PORT:-6379}

ready() { [[ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" == "PONG" ]]; }

if ready; then
    echo "redis: already answering PING on 127.0.0.1:$PORT"
    exit 0
fi

echo "redis: down on 127.0.0.1:$PORT, starting redis-server"
mkdir -p /var/lib/redis /var/log/redis
redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$PORT" \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
for _ in $(seq 1 50); do
    ready && break
    sleep 0.2
done
if ! ready; then
    echo "redis: ERROR: not answering PING on 127.0.0.1:$PORT after 10 s (see /var/log/redis/ci.log)" >&2
    exit 1
fi
echo "redis: started on 127.0.0.1:$PORT"
