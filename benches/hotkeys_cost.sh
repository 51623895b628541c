#!/usr/bin/env bash
# Server-side CPU cost of hot-key tracking in instructions per command, counted by callgrind:
# unlike ops/s on a shared 2-core VM this is repeatable to the instruction. Each variant runs
# redis-server under callgrind, instrumentation switched on only around the measured
# redis-benchmark run (GET and SET, pipelining 16, 100,000 random keys).
#
#   benches/hotkeys_cost.sh [REQUESTS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
requests=${1:-200000}
server=${REDIS_SERVER:-redis-server}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
cargo build --quiet --release -p redis-opt-module
work=$(mktemp -d /tmp/opt-cost.XXXXXX)
trap 'rm -rf "$work"' EXIT

measure() { # name, extra conf lines...
  local name=$1; shift
  local port; port=$(free_port)
  mkdir -p "$work/$name"
  { echo "port $port"; echo "bind 127.0.0.1"; echo 'save ""'; echo "dir $work/$name"
    echo "logfile $work/$name/server.log"; printf '%s\n' "$@"; } >"$work/$name/redis.conf"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/$name/cg.out" \
    "$(command -v "$server")" "$work/$name/redis.conf" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
  redis-benchmark -p "$port" -q -t set -P 16 -r 100000 -n 100000 -d 64 >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  redis-benchmark -p "$port" -q -t get,set -P 16 -r 100000 -n "$requests" -d 64 >/dev/null
  callgrind_control -i off "$pid" >/dev/null
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  local total; total=$(grep -E '^totals:' "$work/$name/cg.out" | head -1 | awk '{print $2}')
  echo "$name $total"
}

{
  measure plain
  measure disabled "loadmodule $module" "opt.hotkeys-enabled no"
  measure default "loadmodule $module"
  measure ratio1 "loadmodule $module" "opt.hotkeys-sample-ratio 1"
} >"$work/results"
ops=$((2 * requests))
echo "instructions per command (redis-server, GET+SET, -P 16, -r 100000, $ops commands, callgrind)"
printf '%-9s %14s %10s %22s\n' variant instructions per-cmd "expected ops/s ratio"
base=$(awk '$1=="plain"{print $2}' "$work/results")
while read -r name total; do
  printf '%-9s %14d %10.0f %22.3f\n' "$name" "$total" "$(echo "$total / $ops" | bc -l)" "$(echo "$base / $total" | bc -l)"
done <"$work/results"
echo "(expected ratio = plain instructions / variant instructions: the throughput ratio when the server's CPU is the bottleneck)"
