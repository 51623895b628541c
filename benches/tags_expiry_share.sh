#!/usr/bin/env bash
# What expiring tagged keys cost the server, as a share of its CPU time sampled by perf,
# against expiring untagged keys: the expiry-heavy workload of tags_bench section 4 (GETs on
# other keys while 200,000 keys expire), without its wall-clock noise. A share is a ratio
# inside one process and one run, so this VM's stalls hit the numerator and the denominator
# alike; unlike callgrind it sees cache misses (the index's are most of a tagged expiry's
# cost). It does not see what the work does to the server's own caches.
#
# Variants, each on a fresh server with the module, in rotated order every round:
#   never-tagged   untagged keys expire; the server never saw a tag (no keyspace events)
#   untagged       untagged keys expire on a server that tags (one tagged key elsewhere)
#   tagged         the same keys, each with 2 tags (OPT.SET ... TAGS all group: two tags of
#                  200,000 keys each; EXPIRY_TAGS='t:__rand_int__ all' gives each key a tag
#                  of its own instead of `group`), expire
# For each: the share of the server's CPU in the module (libredis_opt.so) and in the server's
# module plumbing (functions named RM_* or module*: the context built for every event), the
# keys that expired while perf ran, and the GETs served per expired key.
#
#   benches/tags_expiry_share.sh [ROUNDS] [KEYS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
rounds=${1:-3}
keys=${2:-200000}
server=${REDIS_SERVER:-redis-server}
command -v perf >/dev/null || { echo "perf is needed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --quiet --release -p redis-opt-module
work=$(mktemp -d /tmp/opt-expshare.XXXXXX)
trap 'rm -rf "$work"' EXIT

measure() { # variant; prints "variant module% glue% expired gets"
  local name=$1 port dir pid
  port=$(free_port)
  dir="$work/$name"
  mkdir -p "$dir"
  { echo "port $port"; echo "bind 127.0.0.1"; echo 'save ""'; echo "dir $dir"
    echo "logfile $dir/server.log"; echo "loadmodule $module"; } >"$dir/redis.conf"
  "$server" "$dir/redis.conf" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
  redis-benchmark -p "$port" -q -n 20000 -r 1000 -P 16 SET "hot:__rand_int__" v >/dev/null
  [ "$name" = untagged ] && redis-cli -p "$port" OPT.SET elsewhere v TAGS t >/dev/null
  # Keys that expire 1.5 s after they are written, written just before perf starts.
  if [ "$name" = tagged ]; then
    redis-benchmark -p "$port" -q -n "$keys" -r 1000000000 -P 100 \
      OPT.SET "exp:__rand_int__" v PX 1500 TAGS ${EXPIRY_TAGS:-all group} >/dev/null
  else
    redis-benchmark -p "$port" -q -n "$keys" -r 1000000000 -P 100 \
      SET "exp:__rand_int__" v PX 1500 >/dev/null
  fi
  local before gets_before
  before=$(redis-cli -p "$port" INFO stats | awk -F: '/^expired_keys:/ {print $2+0}')
  gets_before=$(redis-cli -p "$port" INFO commandstats | sed -n 's/^cmdstat_get:calls=\([0-9]*\).*/\1/p')
  perf record -q -F 5000 -p "$pid" -o "$dir/perf.data" -- \
    timeout -s INT 4 redis-benchmark -p "$port" -q -c 4 -P 16 -n 100000000 -r 1000 \
    GET "hot:__rand_int__" >/dev/null 2>&1 || true
  local expired gets
  expired=$(($(redis-cli -p "$port" INFO stats | awk -F: '/^expired_keys:/ {print $2+0}') - before))
  gets=$(($(redis-cli -p "$port" INFO commandstats | sed -n 's/^cmdstat_get:calls=\([0-9]*\).*/\1/p') - ${gets_before:-0}))
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  echo "$name $(perf_shares "$dir/perf.data") $expired $gets"
  rm -rf "$dir"
}

variants=(never-tagged untagged tagged)
for r in $(seq 1 "$rounds"); do
  for i in 0 1 2; do
    measure "${variants[$(((r + i) % 3))]}"
  done
done >"$work/results"
echo "share of redis-server CPU while $keys keys expire under a GET load (perf; $rounds rounds, medians)"
printf '%-13s %10s %12s %8s %16s %14s\n' variant module "server glue" sum "expired (4 s)" "GETs/expired"
for v in "${variants[@]}"; do
  awk -v v="$v" '$1 == v {print $2, $3, $4, $5}' "$work/results" | sort -n -k1 | awk -v v="$v" '
    {m[NR] = $1; g[NR] = $2; e[NR] = $3; q[NR] = $4}
    END {i = int((NR + 1) / 2);
      printf "%-13s %9.2f%% %11.2f%% %7.2f%% %16d %14.1f\n", v, m[i], g[i], m[i] + g[i], e[i], (e[i] ? q[i] / e[i] : 0)}'
done
cat "$work/results" >&2
