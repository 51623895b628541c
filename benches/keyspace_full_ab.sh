#!/usr/bin/env bash
# FULL's wall time on 1M keys for two module builds, alternated on fresh servers in one run, so
# that this VM's drift hits both alike: the figure behind "what counting the analysis' lookups
# costs" in docs/benchmarks.md. Each round starts a redis-server with one build, loads
# 1,000,000 string keys (`user:N:profile`, 60-byte values) through `redis-cli --pipe`, runs
# `OPT.KEYSPACE FULL FORMAT JSON` and prints its `elapsed_ms`.
#
#   benches/keyspace_full_ab.sh OLD.so NEW.so [ROUNDS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
[ $# -ge 2 ] || { echo "usage: $0 OLD.so NEW.so [ROUNDS]" >&2; exit 1; }
old=$(realpath "$1"); new=$(realpath "$2"); rounds=${3:-3}
server=${REDIS_SERVER:-redis-server}
work=$(mktemp -d /tmp/opt-full-ab.XXXXXX)
port=""
cleanup() {
  [ -n "$port" ] && redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
awk 'BEGIN {
  v = sprintf("%60s", ""); gsub(/ /, "x", v)
  for (i = 0; i < 1000000; i++) {
    k = "user:" i ":profile"
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
  }
}' >"$work/load.resp"
for round in $(seq 1 "$rounds"); do
  for build in old new; do
    so=$old; [ $build = new ] && so=$new
    port=$(free_port)
    mkdir -p "$work/$build"
    "$server" --port "$port" --dir "$work/$build" --save '' --loadmodule "$so" >/dev/null 2>&1 &
    for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$port" --pipe <"$work/load.resp" >/dev/null
    ms=$(redis-cli -p "$port" OPT.KEYSPACE FULL FORMAT JSON |
      sed -n 's/.*"elapsed_ms":\([0-9]*\).*/\1/p')
    echo "round $round $build: FULL ${ms} ms"
    redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    port=""
    wait
  done
done
