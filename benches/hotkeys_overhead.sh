#!/usr/bin/env bash
# Throughput cost of hot-key tracking, measured against the same redis-server without the
# module, alternated in one run so that machine noise hits every variant alike.
#
#   benches/hotkeys_overhead.sh [ROUNDS] [REQUESTS]
#
# Variants: plain (no module), module at its defaults, module with opt.hotkeys-sample-ratio 1
# (every command counted). Each round runs redis-benchmark GET and SET with pipelining 16 over
# 100,000 random keys against each variant in turn; the report gives the median ops/s per
# variant and command and the ratio to plain.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
rounds=${1:-5}
requests=${2:-2000000}
server=${REDIS_SERVER:-redis-server}
cargo build --quiet --release -p redis-opt-module

work=$(mktemp -d /tmp/opt-overhead.XXXXXX)
pids=()
cleanup() {
  for p in "${ports[@]:-}"; do redis-cli -p "$p" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; done
  for p in "${pids[@]:-}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

variants=(plain default ratio1)
declare -A port_of
ports=()
for v in "${variants[@]}"; do
  p=$(free_port)
  mkdir -p "$work/$v"
  {
    echo "port $p"; echo "bind 127.0.0.1"; echo "dir $work/$v"; echo 'save ""'
    echo "appendonly no"; echo "logfile $work/$v/server.log"
    case $v in
      default) echo "loadmodule $module" ;;
      ratio1) echo "loadmodule $module"; echo "opt.hotkeys-sample-ratio 1" ;;
    esac
  } >"$work/$v/redis.conf"
  # The server on CPU 0 and the load generator on CPU 1, so they do not fight for a core.
  taskset -c 0 $server "$work/$v/redis.conf" &
  pids+=($!)
  port_of[$v]=$p
  ports+=("$p")
done
for p in "${ports[@]}"; do
  for _ in $(seq 1 100); do redis-cli -p "$p" PING >/dev/null 2>&1 && break; sleep 0.05; done
done

# Preload the keyspace so GETs hit, like a warm cache.
for v in "${variants[@]}"; do
  redis-benchmark -p "${port_of[$v]}" -q -t set -P 16 -r 100000 -n 300000 -d 64 >/dev/null
done

results="$work/results.csv"
: >"$results"
for r in $(seq 1 "$rounds"); do
  order=("${variants[@]}")
  # Rotate the order each round so no variant always runs first.
  for _ in $(seq 1 $((r % ${#order[@]}))); do order=("${order[@]:1}" "${order[0]}"); done
  for v in "${order[@]}"; do
    taskset -c 1 redis-benchmark -p "${port_of[$v]}" -t get,set -P 16 -r 100000 -n "$requests" -d 64 --csv 2>/dev/null |
      awk -F, -v v="$v" 'NR>1 { gsub(/"/, ""); print v "," $1 "," $2 }' >>"$results"
  done
done

echo "redis-benchmark -P 16 -r 100000 -n $requests -d 64, $rounds rounds, server: $($server --version | cut -d' ' -f3)"
ratio_default=$(redis-cli -p "${port_of[default]}" CONFIG GET opt.hotkeys-sample-ratio | tail -1)
echo "module defaults: opt.hotkeys-sample-ratio $ratio_default"
printf '%-6s %-9s %12s %8s\n' command variant "median ops/s" ratio
for cmd in GET SET; do
  base=""
  for v in "${variants[@]}"; do
    med=$(awk -F, -v v="$v" -v c="$cmd" '$1==v && $2==c {print $3}' "$results" | sort -n |
      awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
    [ -z "$base" ] && base=$med
    printf '%-6s %-9s %12.0f %8.3f\n' "$cmd" "$v" "$med" "$(echo "$med / $base" | bc -l)"
  done
done
echo "tracker memory (INFO opt, default variant): $(redis-cli -p "${port_of[default]}" INFO opt | grep hotkeys_memory_bytes | tr -d '\r')"
