#!/usr/bin/env bash
# Makes sure Redis answers on 127.0.0.1:6379 (the cluster tests share their permit pool through
# it, each under its own name), starting Debian's redis-server if it is down. It keeps nothing
# on disk.
set -euo pipefail

ping() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! ping; then
    command -v redis-server >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools
    }
    redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
    for _ in $(seq 1 50); do
        ping && break
        sleep 0.2
    done
fi
ping || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
echo "Redis is up on 127.0.0.1:6379"
