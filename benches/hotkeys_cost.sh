#!/usr/bin/env bash
# Server-side CPU cost of hot-key tracking in instructions per command, counted by callgrind:
# unlike ops/s on a shared 2-core VM this is repeatable to the instruction. Each variant runs
# redis-server under callgrind, instrumentation switched on only around the measured
# redis-benchmark run (GET and SET, pipelining 16, 100,000 random keys, after PRELOAD random
# SETs: 300,000 leave about 5% of GETs missing, 100,000 about 37%).
#
# The default variant samples by time (2 ms slices), and under callgrind the server runs about
# 50 times slower, so a slice holds far more of the traffic than it does natively. Its cost is
# therefore derived: what a command costs between slices (the "gaps" variant: tracking on at
# opt.hotkeys-sample-ratio 1000000, whose first slice comes long after the run, so that it
# pays what the gaps pay, the keymiss subscription included where the server cannot drop it),
# plus the share of commands recorded at the defaults (measured natively, same workload)
# times the cost of recording a command (ratio 1 minus gaps).
#
#   [OPT_MODULE=other.so] benches/hotkeys_cost.sh [REQUESTS] [PRELOAD]
#
# Its last column, the module's own instructions per command (its filter and keymiss
# callbacks with their callees), is the one to compare builds by: the totals also move by a
# few dozen instructions a command between server processes.
#
# On Redis 8.6+ (REDIS_SERVER=target/newer-servers/bin/redis-server, from
# scripts/fetch-newer-servers.sh) it also measures the server's own HOTKEYS tracking
# (HOTKEYS START METRICS 2 CPU NET COUNT 64, SAMPLE 1 and SAMPLE 10) on the same workload.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
requests=${1:-200000}
preload=${2:-300000}
server=${REDIS_SERVER:-redis-server}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
use_module_build
work=$(mktemp -d /tmp/opt-cost.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The server command line under valgrind (the binary, not a wrapper script).
mapfile -t server_cmd < <(server_command_line "$server")
# A command sent after the preload, before the measured run (the built-in HOTKEYS START).
after_preload=()

measure() { # name, extra conf lines...
  local name=$1; shift
  local port; port=$(free_port)
  mkdir -p "$work/$name"
  { echo "port $port"; echo "bind 127.0.0.1"; echo 'save ""'; echo "dir $work/$name"
    echo "logfile $work/$name/server.log"; printf '%s\n' "$@"; } >"$work/$name/redis.conf"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/$name/cg.out" \
    "${server_cmd[@]}" "$work/$name/redis.conf" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
  redis-benchmark -p "$port" -q -t set -P 16 -r 100000 -n "$preload" -d 64 >/dev/null
  [ ${#after_preload[@]} -eq 0 ] || redis-cli -p "$port" "${after_preload[@]}" >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  redis-benchmark -p "$port" -q -t get,set -P 16 -r 100000 -n "$requests" -d 64 >/dev/null
  callgrind_control -i off "$pid" >/dev/null
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  local total; total=$(grep -E '^totals:' "$work/$name/cg.out" | head -1 | awk '{print $2}')
  # The module's own part: what its filter and keymiss callbacks ran, callees included. The
  # totals also move by a few dozen instructions a command from one server process to the
  # next (the server seeds its command table's hash at random, and GET and SET probe it on
  # every command); this part does not.
  local own; own=$(callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$work/$name/cg.out" 2>/dev/null |
    awk '/redis_opt::hotkeys::(filter|on_keymiss) / {gsub(",", "", $1); s += $1} END {print s + 0}')
  echo "$name $total $own"
}

# The share of commands the default sampler records, natively, on the same workload.
native_share() {
  local port; port=$(free_port)
  mkdir -p "$work/native"
  { echo "port $port"; echo "bind 127.0.0.1"; echo 'save ""'; echo "dir $work/native"
    echo "logfile $work/native/server.log"; echo "loadmodule $module"; } >"$work/native/redis.conf"
  "$server" "$work/native/redis.conf" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
  redis-benchmark -p "$port" -q -t set -P 16 -r 100000 -n "$preload" -d 64 >/dev/null
  redis-cli -p "$port" OPT.HOTKEYS RESET >/dev/null
  # Ten times the measured run: in auto mode at this load the sampler records a slice of a
  # few milliseconds every few hundred, and one short run may fall between two.
  redis-benchmark -p "$port" -q -t get,set -P 16 -r 100000 -n $((10 * requests)) -d 64 >/dev/null
  redis-cli -p "$port" OPT.HOTKEYS COUNT 1 FORMAT JSON |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["sampled_accesses"] / max(d["estimated_accesses"], 1))'
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
}

{
  measure plain
  measure disabled "loadmodule $module" "opt.hotkeys-enabled no"
  measure gaps "loadmodule $module" "opt.hotkeys-sample-ratio 1000000"
  measure ratio1 "loadmodule $module" "opt.hotkeys-sample-ratio 1"
  if "$server" --version | grep -qE 'v=(8\.([6-9]|[1-9][0-9])|9|[1-9][0-9])\.'; then
    for n in 1 10; do
      after_preload=(HOTKEYS START METRICS 2 CPU NET COUNT 64 SAMPLE "$n")
      measure "builtin$n"
    done
    after_preload=()
  fi
} >"$work/results"
share=$(native_share)
ops=$((2 * requests))
echo "instructions per command (redis-server, GET+SET, -P 16, -r 100000, $preload preloaded SETs, $ops commands, callgrind)"
printf '%-9s %14s %10s %22s %14s\n' variant instructions per-cmd "expected ops/s ratio" "module per-cmd"
base=$(awk '$1=="plain"{print $2}' "$work/results")
off=$(awk '$1=="gaps"{print $2}' "$work/results")
all=$(awk '$1=="ratio1"{print $2}' "$work/results")
off_own=$(awk '$1=="gaps"{print $3}' "$work/results")
all_own=$(awk '$1=="ratio1"{print $3}' "$work/results")
echo "default $(echo "$off + $share * ($all - $off)" | bc -l | cut -d. -f1) $(echo "$off_own + $share * ($all_own - $off_own)" | bc -l | cut -d. -f1)" >>"$work/results"
while read -r name total own; do
  printf '%-9s %14d %10.0f %22.3f %14.0f\n' "$name" "$total" "$(echo "$total / $ops" | bc -l)" "$(echo "$base / $total" | bc -l)" "$(echo "${own:-0} / $ops" | bc -l)"
done <"$work/results"
printf 'default = gaps + %.3f (share of commands recorded at the defaults, native run) x (ratio1 - gaps)\n' "$share"
echo "(expected ratio = plain instructions / variant instructions: the throughput ratio when the server's CPU is the bottleneck;"
echo " module per-cmd = the module's filter and keymiss callbacks with their callees, the part a build of the module changes)"
