#!/usr/bin/env bash
# How long commands that the server answers in constant time (SWAPDB, FLUSHDB ASYNC,
# FLUSHALL ASYNC, INFO opt), OPT.TAGINFO and OPT.TAGINFO of one tag hold the server when a
# million keys are tagged: the command's own time from SLOWLOG (microseconds, what the server
# measured around it, module event handlers included). OPT.TAGINFO ranks a big index in parts
# after the command returns: the longest part (`INFO opt`) and the client's wait are printed
# too. The tag index and the freshness table
# must not add work proportional to their size to the first ones.
#
#   benches/index_admin_stalls.sh [KEYS]        (OPT_MODULE=path measures another build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
keys=${1:-1000000}
use_module_build
start_module_server stalls
load() {
  redis-benchmark -p "$port" --csv -n "$keys" -r 100000000 -P 32 \
    OPT.SET k:__rand_int__ v TAGS t:__rand_int__ >/dev/null
}
held() { # the command's time in the server, in microseconds (SLOWLOG)
  redis-cli -p "$port" CONFIG SET slowlog-log-slower-than 0 >/dev/null
  redis-cli -p "$port" SLOWLOG RESET >/dev/null
  redis-cli -p "$port" "$@" >/dev/null
  redis-cli -p "$port" CONFIG SET slowlog-log-slower-than 10000 >/dev/null
  redis-cli -p "$port" SLOWLOG GET 10 | paste -sd' ' |
    grep -oE "[0-9]+ $1( |$)" | tail -1 | cut -d' ' -f1
}
load
echo "module: $module"
echo "tagged keys: $(redis-cli -p "$port" DBSIZE)   (microseconds each)"
echo "INFO opt         $(held INFO opt) $(held INFO opt) $(held INFO opt)"
echo "OPT.TAGINFO      $(held OPT.TAGINFO) $(held OPT.TAGINFO) $(held OPT.TAGINFO)"
info_field() { redis-cli -p "$port" INFO opt | tr -d '\r' | sed -n "s/^$1://p"; }
parts_before=$(info_field opt_tags_rank_parts)
start_ns=$(date +%s%N)
redis-cli -p "$port" OPT.TAGINFO >/dev/null
wait_us=$((($(date +%s%N) - start_ns) / 1000))
echo "  ranking parts: $(($(info_field opt_tags_rank_parts) - parts_before)) for one call," \
  "longest part so far $(info_field opt_tags_rank_part_max_us), the client's wait $wait_us" \
  "(redis-cli included)"
tag=$(redis-cli -p "$port" OPT.TAGS "$(redis-cli -p "$port" RANDOMKEY)" | head -1)
echo "OPT.TAGINFO tag  $(held OPT.TAGINFO "$tag") $(held OPT.TAGINFO "$tag") $(held OPT.TAGINFO "$tag")"
echo "SWAPDB 0 1       $(held SWAPDB 0 1)"
echo "SWAPDB 1 0       $(held SWAPDB 1 0)"
echo "FLUSHDB ASYNC    $(held FLUSHDB ASYNC)"
load
echo "FLUSHALL ASYNC   $(held FLUSHALL ASYNC)"
load
echo "FLUSHALL         $(held FLUSHALL)   (the server frees its own keys here too)"
redis-benchmark -p "$port" --csv -n "$keys" -r 100000000 -P 32 SET k:__rand_int__ v >/dev/null
echo "the same without tags: FLUSHALL $(held FLUSHALL)"
