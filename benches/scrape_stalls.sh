#!/usr/bin/env bash
# How long one `optctl metrics` scrape holds the server when a million keys are tagged: the
# scrape's three longest commands, from SLOWLOG (microseconds in the server), for three
# scrapes. A scrape runs every few seconds for as long as the exporter runs, so none of its
# commands may cost time that grows with the data.
#
#   benches/scrape_stalls.sh [KEYS]   (OPT_MODULE=... OPTCTL=... measure another build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
keys=${1:-1000000}
use_module_and_ctl_builds
start_module_server scrape
redis-benchmark -p "$port" -n "$keys" -r 100000000 -P 32 \
  OPT.SET k:__rand_int__ v TAGS t:__rand_int__ >/dev/null
redis-cli -p "$port" CONFIG SET slowlog-log-slower-than 0 >/dev/null
redis-cli -p "$port" CONFIG SET slowlog-max-len 1000 >/dev/null
echo "module: $module, optctl: $optctl, tagged keys: $(redis-cli -p "$port" DBSIZE)"
for i in 1 2 3; do
  redis-cli -p "$port" SLOWLOG RESET >/dev/null
  "$optctl" --url "redis://127.0.0.1:$port" metrics >/dev/null
  echo "scrape $i, longest (µs command): $(redis-cli -p "$port" SLOWLOG GET 1000 | paste -sd' ' |
    grep -oE "[0-9]+ (OPT\.[A-Z]+|INFO|CONFIG|CLIENT|SLOWLOG|ACL)( |$)" | sort -n | tail -3 |
    paste -sd',')"
done
