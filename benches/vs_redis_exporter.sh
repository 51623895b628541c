#!/usr/bin/env bash
# `optctl exporter` against redis_exporter (Debian's prometheus-redis-exporter, 1.45), on one
# server with a million keys of four patterns and three types, scrapes alternated in one run.
# What a scrape costs the server is what matters: an exporter scrapes every 15 s or so for as
# long as it runs, and a command that runs long holds every client for that long. Per scrape:
#
#   - wall time of the HTTP scrape (curl);
#   - the server's CPU time over the scrape (INFO used_cpu_user + used_cpu_sys, before/after);
#   - the longest single command the scrape ran, in the server (SLOWLOG, every command logged):
#     how long every other client waited at worst;
#   - series exposed.
#
# Three exporters: optctl at its defaults (memory by pattern from 1,000 sampled keys, hot
# keys, advice), redis_exporter at its defaults (no memory by pattern), and redis_exporter
# with --check-key-groups set to the four patterns, its way of giving memory by pattern: a
# Lua script that SCANs the whole keyspace and asks MEMORY USAGE of every key, each scrape.
# The per-pattern bytes of both are printed with the exact figures (OPT.KEYSPACE FULL).
#
#   benches/vs_redis_exporter.sh [KEYS] [SCRAPES]   (OPT_MODULE=... OPTCTL=... another build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
keys=${1:-1000000}
scrapes=${2:-3}
use_module_and_ctl_builds
exporter=/usr/bin/prometheus-redis-exporter
[ -x "$exporter" ] || apt-get install -y --no-install-recommends prometheus-redis-exporter >/dev/null
command -v curl >/dev/null || apt-get install -y --no-install-recommends curl >/dev/null

start_module_server vs-exporter
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
url="redis://127.0.0.1:$port"

# The data: 40% user profiles (100-byte strings), 30% sessions (50-byte strings), 20% carts
# (hashes), 10% post tags (sets); names unique but for a few random collisions.
bench() { redis-benchmark -p "$port" -q -P 32 -r 1000000000 -n "$1" "${@:2}" >/dev/null; }
bench $((keys * 4 / 10)) -d 100 SET user:__rand_int__:profile __data__
bench $((keys * 3 / 10)) -d 50 SET session:__rand_int__ __data__
bench $((keys * 2 / 10)) HSET cart:__rand_int__ item:__rand_int__ 3
bench $((keys / 10)) SADD tags:post:__rand_int__ __rand_int__
echo "server: $(redis-cli -p "$port" INFO server | grep -E '^(redis_version|valkey_version)' | paste -sd' ' | tr -d '\r'), keys: $(redis-cli -p "$port" DBSIZE)"
redis-cli -p "$port" CONFIG SET slowlog-log-slower-than 0 >/dev/null
redis-cli -p "$port" CONFIG SET slowlog-max-len 100000 >/dev/null

# The exporters, each on its own port.
p_opt=$(free_port)
"$optctl" --url "$url" exporter --listen "127.0.0.1:$p_opt" >/dev/null 2>&1 &
pids+=($!)
p_re=$(free_port)
"$exporter" -redis.addr "$url" -web.listen-address "127.0.0.1:$p_re" >/dev/null 2>&1 &
pids+=($!)
p_kg=$(free_port)
groups='^(user:)%d+(:profile)$,^(session:)%d+$,^(cart:)%d+$,^(tags:post:)%d+$'
"$exporter" -redis.addr "$url" -web.listen-address "127.0.0.1:$p_kg" \
  -check-key-groups "$groups" >/dev/null 2>&1 &
pids+=($!)
for p in $p_opt $p_re $p_kg; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$p/metrics" && break; sleep 0.1; done
done

cpu() { redis-cli -p "$port" INFO cpu | tr -d '\r' |
  awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.3f", s}'; }
# scrape NAME PORT: one scrape; prints wall s, server CPU s, longest command µs and its name,
# series; keeps the body in $work/NAME.prom.
scrape() {
  redis-cli -p "$port" SLOWLOG RESET >/dev/null
  local c0 c1 wall longest
  c0=$(cpu)
  wall=$(curl -s -o "$work/$1.prom" -w '%{time_total}' "http://127.0.0.1:$2/metrics")
  c1=$(cpu)
  # Longest entry (id, time, µs, then the arguments), leaving out this script's own SLOWLOG
  # RESET (freeing a long log takes tens of ms) and INFO cpu.
  longest=$(redis-cli -p "$port" SLOWLOG GET 100000 | paste -sd' ' |
    grep -oE '[0-9]+ [0-9]+ [0-9]+ [A-Za-z.]+( [A-Za-z]+)?' |
    awk '$4 != "SLOWLOG" && $4 != "slowlog" && !($4 ~ /^(INFO|info)$/ && $5 == "cpu") {print $3, $4}' |
    sort -n | tail -1)
  printf '%-24s %8.3f %9.3f %12s %-14s %7d\n' "$1" "$wall" "$(echo "$c1 - $c0" | bc -l)" \
    "${longest%% *}" "${longest#* }" "$(grep -cv '^#' "$work/$1.prom")"
}
printf '%-24s %8s %9s %12s %-14s %7s\n' exporter "wall s" "server s" "longest µs" command series
for _ in $(seq 1 "$scrapes"); do
  scrape optctl "$p_opt"
  scrape redis_exporter "$p_re"
  scrape redis_exporter-groups "$p_kg"
done

echo
echo "memory by pattern (bytes): exact (OPT.KEYSPACE FULL), optctl's sampled series, redis_exporter's key groups"
"$optctl" --url "$url" keyspace --full --json >"$work/full.json" 2>/dev/null
python3 - "$work" <<'EOF'
import json, re, sys
work = sys.argv[1]
full = {p["pattern"]: p["bytes"] for p in json.load(open(f"{work}/full.json"))["patterns"]}
def series(name, metric, label):
    out = {}
    for line in open(f"{work}/{name}.prom"):
        m = re.match(metric + r'\{(.*)\} (\S+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[labels[label]] = float(m.group(2))
    return out
ours = series("optctl", "opt_keyspace_bytes", "pattern")
groups = series("redis_exporter-groups", "redis_key_group_memory_usage_bytes", "key_group")
names = {"user:*:profile": "user::profile", "session:*": "session:", "cart:*": "cart:",
         "tags:post:*": "tags:post:"}
print(f"{'pattern':<16} {'exact':>12} {'optctl':>12} {'error':>7} {'key groups':>12} {'error':>7}")
for pattern, group in names.items():
    exact = full.get(pattern, 0)
    o, g = ours.get(pattern, 0), groups.get(group, 0)
    err = lambda v: f"{(v - exact) / exact * 100:+.1f}%" if exact else "-"
    print(f"{pattern:<16} {exact:>12.0f} {o:>12.0f} {err(o):>7} {g:>12.0f} {err(g):>7}")
EOF
