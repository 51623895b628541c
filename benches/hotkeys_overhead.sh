#!/usr/bin/env bash
# Throughput cost of hot-key tracking, measured against the same redis-server without the
# module, alternated in one run so that machine noise hits every variant alike.
#
#   benches/hotkeys_overhead.sh [ROUNDS] [REQUESTS]
#
# Variants (VARIANTS overrides): plain (no module), default (module at its defaults), ratio1
# (opt.hotkeys-sample-ratio 1: every command counted); plain2 / default2 are copies of plain /
# default for an A/A check of the method. Each round starts a fresh server per variant, in a
# rotated order, preloads 100,000 keys, runs redis-benchmark GET and SET with pipelining 16
# over them and stops the server: on this VM two identical long-lived servers differ by up to
# 10% (memory placement), so every round draws that anew. The report gives the median ops/s
# per variant and command and the ratio to plain.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
rounds=${1:-5}
requests=${2:-2000000}
server=${REDIS_SERVER:-redis-server}
cargo build --quiet --release -p redis-opt-module

work=$(mktemp -d /tmp/opt-overhead.XXXXXX)
port=""
pid=""
cleanup() {
  [ -n "$port" ] && redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

read -r -a variants <<<"${VARIANTS:-plain default ratio1}"

start() { # variant: starts a server on CPU 0, sets $port and $pid
  local v=$1
  port=$(free_port)
  rm -rf "${work:?}/$v"
  mkdir -p "$work/$v"
  {
    echo "port $port"; echo "bind 127.0.0.1"; echo "dir $work/$v"; echo 'save ""'
    echo "appendonly no"; echo "logfile $work/$v/server.log"
    case $v in
      default|default2) echo "loadmodule $module" ;;
      ratio1) echo "loadmodule $module"; echo "opt.hotkeys-sample-ratio 1" ;;
    esac
  } >"$work/$v/redis.conf"
  # The server on CPU 0 and the load generator on CPU 1, so they do not fight for a core.
  taskset -c 0 "$server" "$work/$v/redis.conf" &
  pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
  # redis-benchmark would spin forever against a server that is not there.
  redis-cli -p "$port" PING >/dev/null 2>&1 || { echo "no server on port $port: $(tail -2 "$work/$v/server.log")" >&2; exit 1; }
}

server_cpu() { # the server's CPU seconds, user + system, from INFO
  redis-cli -p "$port" INFO cpu | tr -d '\r' |
    awk -F: '$1=="used_cpu_sys" || $1=="used_cpu_user" {s += $2} END {printf "%.6f", s}'
}

stop() {
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  port=""; pid=""
}

results="$work/results.csv"
: >"$results"
memory=""
for r in $(seq 1 "$rounds"); do
  order=("${variants[@]}")
  # Rotate the order each round so no variant always runs first.
  for _ in $(seq 1 $((r % ${#order[@]}))); do order=("${order[@]:1}" "${order[0]}"); done
  for v in "${order[@]}"; do
    start "$v"
    # Preload the keyspace so GETs hit, like a warm cache.
    redis-benchmark -p "$port" -q -t set -P 16 -r 100000 -n 300000 -d 64 >/dev/null
    for cmd in get set; do
      cpu0=$(server_cpu)
      taskset -c 1 redis-benchmark -p "$port" -t "$cmd" -P 16 -r 100000 -n "$requests" -d 64 --csv 2>/dev/null |
        awk -F, -v v="$v" 'NR>1 { gsub(/"/, ""); print v "," $1 "," $2 }' >>"$results"
      cpu1=$(server_cpu)
      # Server CPU (user + system) per command, in nanoseconds.
      echo "$v,${cmd^^}-cpu,$(echo "($cpu1 - $cpu0) * 1000000000 / $requests" | bc -l)" >>"$results"
    done
    if [ "$v" = default ]; then
      memory=$(redis-cli -p "$port" INFO opt | grep hotkeys_memory_bytes | tr -d '\r')
      ratio_default=$(redis-cli -p "$port" CONFIG GET opt.hotkeys-sample-ratio | tail -1)
      share=$(redis-cli -p "$port" OPT.HOTKEYS COUNT 1 FORMAT JSON |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.3f" % (d["sampled_accesses"] / max(d["estimated_accesses"], 1)))')
    fi
    stop
  done
done

echo "redis-benchmark -P 16 -r 100000 -n $requests -d 64, $rounds rounds, server: $($server --version | cut -d' ' -f3)"
[ -n "${ratio_default:-}" ] && echo "module defaults: opt.hotkeys-sample-ratio $ratio_default; share of commands recorded in the last default round: $share"
median() { # variant, series
  awk -F, -v v="$1" -v c="$2" '$1==v && $2==c {print $3}' "$results" | sort -n |
    awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}
echo "ops/s ratio: median throughput over plain's. cpu ratio: plain's median server CPU per command"
echo "over the variant's (what throughput would be if the server's CPU were the only limit)."
printf '%-6s %-9s %12s %8s %14s %10s\n' command variant "median ops/s" ratio "server ns/cmd" "cpu ratio"
for cmd in GET SET; do
  base=""; base_cpu=""
  for v in "${variants[@]}"; do
    med=$(median "$v" "$cmd")
    cpu=$(median "$v" "$cmd-cpu")
    [ -z "$base" ] && base=$med && base_cpu=$cpu
    printf '%-6s %-9s %12.0f %8.3f %14.0f %10.3f\n' "$cmd" "$v" "$med" "$(echo "$med / $base" | bc -l)" \
      "$cpu" "$(echo "$base_cpu / $cpu" | bc -l)"
  done
done
[ -n "$memory" ] && echo "tracker memory (INFO opt, default variant): $memory"
exit 0
