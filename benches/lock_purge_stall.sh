#!/usr/bin/env bash
# How long one OPT.FETCH holds the server when it has to purge timed-out recomputation locks:
# locks are asked for on 150,000 new keys for 2 s (100,000 are taken: opt.max-locks, the
# default), then, once they have timed out, new keys ask for locks: the map is at its limit,
# so timed-out locks are purged. The longest OPT.FETCH from SLOWLOG (µs).
#
#   benches/lock_purge_stall.sh        (OPT_MODULE=path measures another build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
use_module_build
start_module_server locks
redis-benchmark -p "$port" -n 150000 -r 1000000000 -P 16 \
  OPT.FETCH lk:__rand_int__ LOCK 2000 >/dev/null
echo "module: $module; locks held: $(redis-cli -p "$port" INFO opt | tr -d '\r' | sed -n 's/^opt_stampede_locks://p')"
sleep 2.5
redis-cli -p "$port" CONFIG SET slowlog-log-slower-than 0 >/dev/null
redis-cli -p "$port" CONFIG SET slowlog-max-len 5000 >/dev/null
redis-cli -p "$port" SLOWLOG RESET >/dev/null
redis-benchmark -p "$port" -n 2000 -r 1000000000 -c 1 OPT.FETCH new:__rand_int__ LOCK 1000 >/dev/null
echo "longest OPT.FETCH of the next 2,000 (µs): $(redis-cli -p "$port" SLOWLOG GET 5000 | paste -sd' ' |
  grep -oE "[0-9]+ OPT\.FETCH" | sort -n | tail -3 | cut -d' ' -f1 | paste -sd' ')"
echo "locks held after: $(redis-cli -p "$port" INFO opt | tr -d '\r' | sed -n 's/^opt_stampede_locks://p')"
