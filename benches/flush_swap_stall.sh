#!/usr/bin/env bash
# How long SWAPDB, FLUSHDB ASYNC and FLUSHALL hold the server with a million tagged keys, as
# the server's latency monitor records the command (threshold 1 ms: an empty figure means
# under 1 ms). The server does these in constant time (ASYNC frees on its lazy-free thread);
# the tag index and the freshness table must not add work proportional to their size.
#
#   benches/flush_swap_stall.sh [KEYS]        (OPT_MODULE=path measures another build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
module=${OPT_MODULE:-$module}
keys=${1:-1000000}
[ -n "${OPT_MODULE:-}" ] || cargo build --quiet --release -p redis-opt-module
work=$(mktemp -d /tmp/opt-flush.XXXXXX)
port=$(free_port)
trap 'redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$work" --logfile "$work/log" \
  --save "" --latency-monitor-threshold 1 --loadmodule "$module" >/dev/null
for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
load() {
  redis-benchmark -p "$port" --csv -n "$keys" -r 100000000 -P 32 \
    OPT.SET k:__rand_int__ v TAGS t:__rand_int__ >/dev/null
}
held() { # the command's latency in ms, or "<1"
  redis-cli -p "$port" LATENCY RESET >/dev/null
  redis-cli -p "$port" "$@" >/dev/null
  local ms; ms=$(redis-cli -p "$port" LATENCY LATEST | sed -n 3p)
  echo "${ms:-<1}"
}
load
echo "module: $module"
echo "tagged keys: $(redis-cli -p "$port" DBSIZE)"
echo "SWAPDB 0 1        $(held SWAPDB 0 1) ms"
echo "SWAPDB 1 0        $(held SWAPDB 1 0) ms"
echo "FLUSHDB ASYNC     $(held FLUSHDB ASYNC) ms"
load
echo "FLUSHALL ASYNC    $(held FLUSHALL ASYNC) ms"
load
echo "FLUSHALL          $(held FLUSHALL) ms  (the server frees its own keys here too)"
redis-benchmark -p "$port" --csv -n "$keys" -r 100000000 -P 32 SET k:__rand_int__ v >/dev/null
echo "untagged keys:    FLUSHALL $(held FLUSHALL) ms"
