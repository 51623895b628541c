#!/usr/bin/env bash
# Share of redis-server's CPU time spent on hot-key tracking, sampled by perf while
# redis-benchmark runs GET and SET (pipelining 16, 100,000 random keys, after PRELOAD random
# SETs). Unlike ops/s on a shared VM this is a ratio inside one process and one run, so the
# VM's noise hits the numerator and the denominator alike; unlike callgrind's instruction
# counts it sees cache misses, which is where the Space-Saving update spends its time.
#
# "module" is the time in libredis_opt.so; "server glue" the time in the server's module
# plumbing (the filter dispatch, RM_* calls, the module contexts built for keymiss events:
# functions named RM_* or module*). Their sum is what tracking costs the server's CPU, not
# counting what it does to the server's own caches.
#
#   benches/hotkeys_cpu_share.sh [ROUNDS] [REQUESTS] [PRELOAD]
#
# OPT_MODULE=/path/to/libredis_opt.so measures another build (to compare with an older one).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
rounds=${1:-3}
requests=${2:-2000000}
preload=${3:-300000}
server=${REDIS_SERVER:-redis-server}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
if [ -n "${OPT_MODULE:-}" ]; then
  module=$OPT_MODULE
else
  cargo build --quiet --release -p redis-opt-module
fi
work=$(mktemp -d /tmp/opt-share.XXXXXX)
trap 'rm -rf "$work"' EXIT

measure() { # variant, conf lines... ; prints "variant module% glue%"
  local name=$1; shift
  local port; port=$(free_port)
  local dir="$work/$name"
  mkdir -p "$dir"
  { echo "port $port"; echo "bind 127.0.0.1"; echo 'save ""'; echo "dir $dir"
    echo "logfile $dir/server.log"; printf '%s\n' "$@"; } >"$dir/redis.conf"
  "$server" "$dir/redis.conf" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
  redis-benchmark -p "$port" -q -t set -P 16 -r 100000 -n "$preload" -d 64 >/dev/null
  perf record -q -F 5000 -p "$pid" -o "$dir/perf.data" -- \
    redis-benchmark -p "$port" -q -t get,set -P 16 -r 100000 -n "$requests" -d 64 >/dev/null 2>&1
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  echo "$name $(perf_shares "$dir/perf.data")"
  rm -rf "$dir"
}

for r in $(seq 1 "$rounds"); do
  measure disabled "loadmodule $module" "opt.hotkeys-enabled no"
  measure default "loadmodule $module"
  measure ratio1 "loadmodule $module" "opt.hotkeys-sample-ratio 1"
done >"$work/results"

echo "share of redis-server CPU (perf, GET+SET, -P 16, -r 100000, $preload preloaded SETs, $requests requests per command, $rounds rounds)"
printf '%-9s %18s %18s %14s\n' variant "module (median)" "server glue" "sum"
for v in disabled default ratio1; do
  awk -v v="$v" '$1 == v {print $2, $3}' "$work/results" | sort -n | awk -v v="$v" '
    {m[NR] = $1; g[NR] = $2}
    END {i = int((NR + 1) / 2); printf "%-9s %17.2f%% %17.2f%% %13.2f%%\n", v, m[i], g[i], m[i] + g[i]}'
done
