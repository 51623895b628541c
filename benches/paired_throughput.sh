#!/usr/bin/env bash
# The cost per command of two servers measured at the same time, on the same CPU, so that
# this VM's noise (a host that stalls or slows the VM for seconds) hits both alike: run one
# after the other, two identical servers differ here by up to 10%
# (benches/hotkeys_overhead.sh). Each server's CPU time comes from the kernel's scheduler
# (/proc/PID/schedstat: nanoseconds on the CPU, user and kernel time both, so the network's
# share is in it, where callgrind counts user-space instructions only), divided by the
# commands it answered (INFO) over the same seconds. The ratio A/B of those costs is the
# throughput ratio B/A of a server that has the CPU to itself and is the bottleneck. The
# commands per second are printed too, but two clients sharing CPU 1 bound them as much as
# the servers do, so they say little.
#
#   benches/paired_throughput.sh [ROUNDS] [SECONDS] [WORKLOAD]
#
# A and B (VARIANTS="A B", default "plain default") are variants: plain (no module), default
# (the module at its defaults), ratioN (opt.hotkeys-sample-ratio N: ratio1 counts every
# command), off
# (opt.hotkeys-enabled no), gaps (tracking on, sample ratio 1000000: what a command costs
# between sampling slices). WORKLOAD is get, set, or tags (A sends `SET key value`, B
# `OPT.SET key value TAGS t1 t2 t3`, a 64-byte value (VALUE_BYTES sets another size, for
# every workload), for issue 5's OPT.SET against plain SET;
# use VARIANTS="plain default"). The commands go through redis-benchmark with pipelining 16 over
# 100,000 random keys (`-P 16 -r 100000 -d 64`), after 300,000 SETs. Each round starts two
# fresh servers on CPU 0 and one redis-benchmark per server on CPU 1, counts the commands
# each server answers over SECONDS (after a second of warm-up) from INFO, and stops them. The
# report gives each round's rates and B/A, then the median ratio and the spread of the rounds.
# `VARIANTS="plain plain"` is the A/A check of the method.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
rounds=${1:-9}
seconds=${2:-10}
workload=${3:-get}
server=${REDIS_SERVER:-redis-server}
read -r -a variants <<<"${VARIANTS:-plain default}"
[ ${#variants[@]} -eq 2 ] || { echo "VARIANTS needs two variants" >&2; exit 1; }
case $workload in
  get | set | tags) ;;
  *) echo "WORKLOAD must be get, set or tags" >&2; exit 1 ;;
esac
bytes=${VALUE_BYTES:-64}
value=$(printf 'v%.0s' $(seq 1 "$bytes"))
bench_args() { # slot (0 or 1): the redis-benchmark arguments that choose the commands
  case $workload in
    tags) if [ "$1" -eq 0 ]; then echo "SET key:__rand_int__ $value"
          else echo "OPT.SET key:__rand_int__ $value TAGS t1 t2 t3"; fi ;;
    *) echo "-t $workload -d $bytes" ;;
  esac
}
use_module_build

work=$(mktemp -d /tmp/opt-paired.XXXXXX)
ports=()
pids=()
bench_pids=()
cleanup() {
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${ports[@]}"; do redis-cli -p "$p" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

conf_lines() { # variant: the module lines of its config
  case $1 in
    plain) ;;
    default) echo "loadmodule $module" ;;
    ratio[0-9]*) echo "loadmodule $module"; echo "opt.hotkeys-sample-ratio ${1#ratio}" ;;
    off) echo "loadmodule $module"; echo "opt.hotkeys-enabled no" ;;
    gaps) echo "loadmodule $module"; echo "opt.hotkeys-sample-ratio 1000000" ;;
    *) echo "unknown variant $1" >&2; exit 1 ;;
  esac
}

start() { # slot variant: a fresh server on CPU 0; appends to ports and pids
  local dir="$work/$1" port
  port=$(free_port)
  rm -rf "$dir"; mkdir -p "$dir"
  { echo "port $port"; echo "bind 127.0.0.1"; echo "dir $dir"; echo 'save ""'
    echo "appendonly no"; echo "logfile $dir/server.log"; conf_lines "$2"; } >"$dir/redis.conf"
  taskset -c 0 "$server" "$dir/redis.conf" >/dev/null 2>&1 &
  pids+=($!)
  ports+=("$port")
  for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && return; sleep 0.05; done
  echo "server $2 did not start" >&2; exit 1
}

commands() { # port: commands answered so far
  redis-cli -p "$1" INFO stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'
}

cpu_ns() { # pid: nanoseconds the process has run on a CPU (all its threads)
  local sum=0 t
  for t in /proc/"$1"/task/*/schedstat; do
    sum=$((sum + $(cut -d' ' -f1 "$t")))
  done
  echo "$sum"
}

ratios=()
for r in $(seq 1 "$rounds"); do
  ports=(); pids=(); bench_pids=()
  start a "${variants[0]}"
  start b "${variants[1]}"
  for p in "${ports[@]}"; do
    taskset -c 1 redis-benchmark -p "$p" -q -t set -P 16 -r 100000 -n 300000 -d 64 >/dev/null
  done
  # The two clients start in turn, A first in odd rounds and B first in even ones.
  order=(0 1); [ $((r % 2)) -eq 0 ] && order=(1 0)
  for i in "${order[@]}"; do
    # shellcheck disable=SC2046 # the arguments are words on purpose
    taskset -c 1 redis-benchmark -p "${ports[$i]}" -q -P 16 -r 100000 -n 2000000000 \
      $(bench_args "$i") >/dev/null 2>&1 &
    bench_pids+=($!)
  done
  sleep 1
  a0=$(commands "${ports[0]}"); b0=$(commands "${ports[1]}")
  ta0=$(cpu_ns "${pids[0]}"); tb0=$(cpu_ns "${pids[1]}")
  sleep "$seconds"
  ta1=$(cpu_ns "${pids[0]}"); tb1=$(cpu_ns "${pids[1]}")
  a1=$(commands "${ports[0]}"); b1=$(commands "${ports[1]}")
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${bench_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in "${ports[@]}"; do redis-cli -p "$p" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ports=(); pids=(); bench_pids=()
  ra=$(((a1 - a0) / seconds)); rb=$(((b1 - b0) / seconds))
  ca=$(awk -v t=$((ta1 - ta0)) -v n=$((a1 - a0)) 'BEGIN {printf "%.1f", t / n}')
  cb=$(awk -v t=$((tb1 - tb0)) -v n=$((b1 - b0)) 'BEGIN {printf "%.1f", t / n}')
  ratio=$(awk -v a="$ca" -v b="$cb" 'BEGIN {printf "%.4f", a / b}')
  ratios+=("$ratio")
  printf 'round %2d: %-8s %8d/s %7s ns/cmd   %-8s %8d/s %7s ns/cmd   cost A/B %s\n' "$r" \
    "${variants[0]}" "$ra" "$ca" "${variants[1]}" "$rb" "$cb" "$ratio"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk -v w="$workload" -v a="${variants[0]}" \
  -v b="${variants[1]}" '{v[NR] = $1} END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    q1 = v[int((NR + 3) / 4)]; q3 = v[NR + 1 - int((NR + 3) / 4)]
    printf "%s: cost %s/%s (throughput %s/%s when the server is the limit) median %.4f over %d rounds (quartiles %.4f to %.4f, all %.4f to %.4f)\n",
      w, a, b, b, a, m, NR, q1, q3, v[1], v[NR]}'
