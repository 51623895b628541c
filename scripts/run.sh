#!/usr/bin/env bash
# `make run`: a redis-server with the module in the foreground (Ctrl-C stops it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
port=${PORT:-6379}
dir=$(mktemp -d /tmp/opt-run.XXXXXX)
write_conf "$dir" "$port"
echo "redis-server with the opt module on 127.0.0.1:$port (dir $dir); try: redis-cli -p $port OPT.HELP"
exec redis-server "$dir/redis.conf"
