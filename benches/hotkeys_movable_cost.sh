#!/usr/bin/env bash
# What the hot-key filter costs on commands with movable keys (ZUNIONSTORE, LMPOP, SINTERCARD,
# XREAD, GEORADIUS ... STORE...), in the module's own instructions per command, counted by
# callgrind.
# These commands used to be looked up through the server (RedisModule_GetCommandKeysWithFlags:
# a command lookup, two allocations and their frees per command); the module now follows their
# key specs itself. Compare two builds with OPT_MODULE:
#
#   [OPT_MODULE=other.so] benches/hotkeys_movable_cost.sh [REQUESTS]
#
# Each command runs REQUESTS times (redis-benchmark, pipelining 16) on a server with the
# module at opt.hotkeys-sample-ratio 1 (every command recorded), under callgrind with
# instrumentation on only around the run. Printed: the module's filter, callees included,
# per command; and the whole server per command.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
requests=${1:-20000}
server=${REDIS_SERVER:-redis-server}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
use_module_build
work=$(mktemp -d /tmp/opt-movable.XXXXXX)
trap 'rm -rf "$work"' EXIT
mapfile -t server_cmd < <(server_command_line "$server")

commands=(
  "ZUNIONSTORE z:dest 2 z:a z:b"
  "SINTERCARD 2 s:a s:b"
  "LMPOP 2 l:empty l:other LEFT"
  "XREAD COUNT 1 STREAMS x:a x:b 0 0"
  "GEORADIUS g:src 15 37 200 km STORE g:dst"
  "GET k:1"
)

port=$(free_port)
{ echo "port $port"; echo "bind 127.0.0.1"; echo 'save ""'; echo "dir $work"
  echo "logfile $work/server.log"; echo "loadmodule $module"
  echo "opt.hotkeys-sample-ratio 1"; } >"$work/redis.conf"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.%p.out" \
  "${server_cmd[@]}" "$work/redis.conf" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 300); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" ZADD z:a 1 m >/dev/null
redis-cli -p "$port" ZADD z:b 2 m >/dev/null
redis-cli -p "$port" SADD s:a x >/dev/null
redis-cli -p "$port" SET k:1 v >/dev/null
redis-cli -p "$port" XADD x:a '*' f v >/dev/null
redis-cli -p "$port" GEOADD g:src 13.36 38.11 palermo >/dev/null
printf '%-32s %16s %16s\n' command "module per-cmd" "server per-cmd"
for c in "${commands[@]}"; do
  read -r -a words <<<"$c"
  callgrind_control -z "$pid" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  redis-benchmark -p "$port" -q -P 16 -n "$requests" "${words[@]}" >/dev/null
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  dump=$(ls -t "$work"/cg.*.out* | head -1)
  total=$(grep -E '^totals:' "$dump" | head -1 | awk '{print $2}')
  own=$(callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$dump" 2>/dev/null |
    awk '/redis_opt::hotkeys::filter / {gsub(",", "", $1); s += $1} END {print s + 0}')
  printf '%-32s %16.0f %16.0f\n' "${words[0]}" "$(echo "$own / $requests" | bc -l)" \
    "$(echo "$total / $requests" | bc -l)"
done
redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
wait "$pid" 2>/dev/null || true
