#!/usr/bin/env bash
# How long the report commands hold the server (SLOWLOG, microseconds, each command once)
# with a full hot-key tracker: opt.hotkeys-capacity 4096 and every command recorded, after
# two million GET/SET over a million keys. The first call after the traffic finds the
# tracker out of the cache, as a real one does.
#
#   benches/report_costs.sh        (OPT_MODULE=path measures another build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
use_module_build
start_module_server reports
redis-cli -p "$port" CONFIG SET opt.hotkeys-capacity 4096 >/dev/null
redis-cli -p "$port" CONFIG SET opt.hotkeys-sample-ratio 1 >/dev/null
redis-benchmark -p "$port" -n 2000000 -r 1000000 -P 16 -t set,get -q >/dev/null
redis-cli -p "$port" CONFIG SET slowlog-log-slower-than 0 >/dev/null
redis-cli -p "$port" CONFIG SET slowlog-max-len 100 >/dev/null
for count in 10 1000 4096; do
  redis-cli -p "$port" OPT.HOTKEYS COUNT "$count" >/dev/null
  redis-cli -p "$port" OPT.HOTKEYS COUNT "$count" FORMAT JSON >/dev/null
done
redis-cli -p "$port" OPT.ADVISE SAMPLES 0 >/dev/null
redis-cli -p "$port" OPT.ADVISE SAMPLES 0 FORMAT JSON >/dev/null
echo "module: $module (µs in the server)"
redis-cli -p "$port" SLOWLOG GET 100 | paste -sd' ' |
  grep -oE "[0-9]+ OPT\.[A-Z]+( [A-Z0-9]+)*" | sed 's/ 127$//' | tac
