#!/usr/bin/env bash
# `make demo`: a throwaway redis-server with the module, a short workload, then everything
# optctl can report about it. The server is stopped and its directory removed on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

port=$(free_port)
dir=$(mktemp -d /tmp/opt-demo.XXXXXX)
write_conf "$dir" "$port"
# The workload is a burst of well under a second, which the default (auto) sampling would
# see a few slices of: the demo counts every command instead.
sed -i 's/^opt.hotkeys-sample-ratio .*/opt.hotkeys-sample-ratio 1/' "$dir/redis.conf"
printf 'daemonize no\nlogfile %s/server.log\n' "$dir" >>"$dir/redis.conf"
redis-server "$dir/redis.conf" &
pid=$!
cleanup() {
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  sleep 0.2
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  redis-cli -p "$port" PING >/dev/null 2>&1 && break
  sleep 0.1
done
if ! redis-cli -p "$port" PING >/dev/null 2>&1; then
  echo "redis-server did not start; its log:" >&2
  cat "$dir/server.log" >&2
  exit 1
fi

url="redis://127.0.0.1:$port"
echo "== redis-server with the opt module on $url"
echo "== workload: users, products, sessions, feeds, big reports, a leaderboard; skewed reads"
"$root/scripts/workload.sh" "$port"
redis-cli -p "$port" INFO keyspace | grep '^db'
echo
echo "== optctl status"
"$optctl" --url "$url" status
echo
echo "== optctl hotkeys (every command counted: opt.hotkeys-sample-ratio 1)"
"$optctl" --url "$url" hotkeys --count 8
echo
echo "== optctl hotkeys --type miss (reads of keys that do not exist)"
"$optctl" --url "$url" hotkeys --type miss --count 3
echo
echo "== optctl hotkeys --namespaces"
"$optctl" --url "$url" hotkeys --namespaces --count 6
echo
echo "== optctl keyspace --full (where the memory goes, by key pattern)"
"$optctl" --url "$url" --json keyspace --full --top 5 >"$dir/keyspace-before.json"
"$optctl" --url "$url" keyspace --report "$dir/keyspace-before.json"
echo
echo "== optctl tags (pages cached with OPT.SET ... TAGS user:<id> team:<n>)"
"$optctl" --url "$url" tags
echo
echo "== optctl invalidate team:7 (every page showing a member of team 7)"
"$optctl" --url "$url" invalidate team:7
"$optctl" --url "$url" tags --tag team:7
echo
echo "== optctl keyspace --full --since FILE (what changed since the report saved above)"
"$optctl" --url "$url" keyspace --full --since "$dir/keyspace-before.json"
echo
echo "== optctl report (everything on one page; --html FILE writes a self-contained HTML report)"
"$optctl" --url "$url" report --samples 5000
