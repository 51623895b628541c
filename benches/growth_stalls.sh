#!/usr/bin/env bash
# How long one write holds the server while the module's structures grow with the data: the
# longest commands SLOWLOG saw (microseconds, over 2 ms) while redis-benchmark writes KEYS
# random keys, for each shape whose growth once happened in one command: a tag per key (the
# name tables), every key under one tag (a tag's key list), values written with DELTA (the
# freshness table), OPT.FETCH locks with `opt.max-locks` raised above KEYS (the lock table),
# and plain SET for the server's own (its dictionaries and allocator). Then the same for
# removals, whose freed slots go on the free lists: tagged keys (one tag each) deleted by DEL,
# locks released by a write of their key, and plain keys deleted (the server's own), each over
# a range of KEYS names written and then removed by 3 x KEYS random commands (about 95% of the
# names).
#
#   benches/growth_stalls.sh [KEYS]        (default 6000000; OPT_MODULE=path measures another
#                                          build; about 1 GB of memory at the default;
#                                          SHAPES=writes or SHAPES=removals runs only those)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
keys=${1:-6000000}
use_module_build
start_module_server growth
redis-cli -p "$port" CONFIG SET slowlog-max-len 1000 >/dev/null
echo "module: $module; $keys writes a shape (redis-benchmark -P 32 -r 1000000000)"
longest() { # the shape's label, then the command to benchmark
  local label=$1; shift
  redis-cli -p "$port" FLUSHALL >/dev/null
  sleep 1
  measure "$label" -n "$keys" -r 1000000000 "$@"
}
measure() { # the label, then redis-benchmark's options and command, on the data as it is
  local label=$1; shift
  redis-cli -p "$port" CONFIG SET slowlog-log-slower-than 2000 >/dev/null
  redis-cli -p "$port" SLOWLOG RESET >/dev/null
  redis-benchmark -p "$port" -q -P 32 "$@" >/dev/null
  local worst
  worst=$(redis-cli -p "$port" SLOWLOG GET 1000 | paste -sd' ' |
    { grep -oE "[0-9]+ [0-9]+ [0-9]+ [A-Z.]+" || true; } | awk '{print $3}' | sort -rn |
    head -8 | paste -sd' ')
  printf '%-28s keys %-9s longest commands (us): %s\n' "$label" \
    "$(redis-cli -p "$port" DBSIZE)" "${worst:-none over 2000}"
}
redis-cli -p "$port" CONFIG SET opt.max-locks $((keys * 2)) >/dev/null
shapes=${SHAPES:-writes removals}
if [[ $shapes == *writes* ]]; then
longest "a tag per key" OPT.SET k:__rand_int__ v TAGS t:__rand_int__
longest "one tag for every key" OPT.SET k:__rand_int__ v TAGS big
longest "DELTA, no tag" OPT.SET f:__rand_int__ v EX 100000 DELTA 5
longest "OPT.FETCH locks" OPT.FETCH l:__rand_int__ LOCK 3600000
longest "plain SET (the server alone)" SET k:__rand_int__ v
fi
removals() { # the label, the command that removes a key, then the one that writes it
  local label=$1 remove=$2; shift 2
  redis-cli -p "$port" FLUSHALL >/dev/null
  sleep 1
  redis-benchmark -p "$port" -q -P 32 -n $((keys * 3)) -r "$keys" "$@" >/dev/null
  # shellcheck disable=SC2086 # the removal's words
  measure "$label" -n $((keys * 3)) -r "$keys" $remove
  redis-cli -p "$port" INFO opt | grep -E "^opt_(tags_keys|stampede_locks):" | tr -d '\r' |
    paste -sd' ' | sed 's/^/  left afterwards: /'
}
[[ $shapes == *removals* ]] || exit 0
removals "tagged keys deleted" "DEL k:__rand_int__" OPT.SET k:__rand_int__ v TAGS t:__rand_int__
removals "locks released by writes" "OPT.SET l:__rand_int__ v DELTA 1" OPT.FETCH l:__rand_int__ LOCK 3600000
removals "plain keys deleted (server)" "DEL k:__rand_int__" SET k:__rand_int__ v
