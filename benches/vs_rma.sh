#!/usr/bin/env bash
# OPT.KEYSPACE FULL against redis-memory-analyzer (`rma`, 0.2.1, its latest release on PyPI),
# the Python tool the keyspace issue names, on the same server in one run: wall time, the
# tool's own peak memory, and how far each one's bytes per pattern are from the server's own
# accounting (MEMORY USAGE of every key, summed per pattern by a Lua script after both ran).
# rma goes into a virtualenv under target/rma-venv (pip, from PyPI).
#
#   benches/vs_rma.sh [KEYS]        (default 1,000,000; the module's release build)
#
# Two datasets of KEYS keys each. Strings only (three patterns: 100 to 299-byte values,
# session tokens with a TTL, integer counters), which rma reads; then the same with every
# fifth key a small hash, which Redis 7+ stores as a listpack: rma 0.2.1 does not know that
# encoding, so there only whether it finishes is reported. The server runs with
# `enable-debug-command yes`, which rma needs (it reads DEBUG OBJECT; without it every string
# costs it a ResponseError and counts 0 bytes); the module needs neither DEBUG nor CONFIG.
# KEEP_WORK=1 keeps the outputs of both tools (the directory is printed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
keys=${1:-1000000}
server=${REDIS_SERVER:-redis-server}
"$root/scripts/ensure-deps.sh" time python3-venv
venv=$root/target/rma-venv
if ! [ -x "$venv/bin/rma" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q rma==0.2.1
fi
(cd "$root" && cargo build -q --release -p redis-opt-module)
work=$(mktemp -d /tmp/opt-vs-rma.XXXXXX)
port=""
cleanup() {
  [ -n "$port" ] && redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  [ -n "${KEEP_WORK:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# The per-pattern truth: MEMORY USAGE of every key, summed by pattern (a segment of digits,
# or of 16 or more hex digits, becomes '*': the patterns both tools find here).
truth_lua="local t = {} local cursor = '0' repeat
  local r = redis.call('SCAN', cursor, 'COUNT', 1000) cursor = r[1]
  for _, k in ipairs(r[2]) do
    local segs = {}
    for seg in string.gmatch(k, '[^:]+') do
      if seg:match('^%d+$') or (#seg >= 16 and seg:match('^%x+$')) then seg = '*' end
      segs[#segs + 1] = seg
    end
    local p = table.concat(segs, ':')
    t[p] = (t[p] or 0) + redis.call('MEMORY', 'USAGE', k, 'SAMPLES', 0)
  end until cursor == '0'
  local out = {} for p, b in pairs(t) do out[#out + 1] = p .. ' ' .. b end return out"

run_dataset() {
  local name=$1 hashes=$2
  awk -v n="$keys" -v hashes="$hashes" 'BEGIN {
    v = sprintf("%300s", ""); gsub(/ /, "x", v)
    for (i = 0; i < n; i++) {
      m = i % 5
      if (hashes && m == 4) {
        k = "user:" i ":profile"
        printf "*8\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$4\r\nname\r\n$7\r\nsomeone\r\n$4\r\nplan\r\n$3\r\npro\r\n$5\r\nemail\r\n$5\r\na@b.c\r\n", length(k), k
      } else if (m <= 2) {
        k = "cache:product:" i; val = substr(v, 1, 100 + i % 200)
        printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(val), val
      } else if (m == 3) {
        k = sprintf("session:%032x", i * 2654435761 % 4294967296); ttl = 3600 + i % 7200
        printf "*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$5\r\ntoken\r\n$2\r\nEX\r\n$%d\r\n%d\r\n", length(k), k, length(ttl ""), ttl
      } else {
        k = "counter:views:" i
        printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n", length(k), k, length(i ""), i
      }
    }
  }' >"$work/load.resp"
  port=$(free_port)
  mkdir -p "$work/$name"
  "$server" --port "$port" --dir "$work/$name" --save '' --enable-debug-command yes --loadmodule "$module" >/dev/null 2>&1 &
  for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$port" --pipe <"$work/load.resp" >/dev/null
  echo "== $name: $(redis-cli -p "$port" DBSIZE) keys, $("$server" --version | cut -d' ' -f3)"

  local t0 t1
  t0=$(date +%s.%N)
  redis-cli -p "$port" OPT.KEYSPACE FULL FORMAT JSON >"$work/$name/full.json"
  t1=$(date +%s.%N)
  echo "OPT.KEYSPACE FULL: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s wall (elapsed_ms $(sed -n 's/.*"elapsed_ms":\([0-9]*\).*/\1/p' "$work/$name/full.json"))"

  local rma_status=0
  /usr/bin/time -v -o "$work/$name/rma.time" "$venv/bin/rma" -p "$port" \
    >"$work/$name/rma.out" 2>"$work/$name/rma.err" || rma_status=$?
  echo "rma: $(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/$name/rma.time") wall, peak RSS $(($(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/$name/rma.time") / 1024)) MiB, exit status $rma_status"
  if [ "$rma_status" != 0 ]; then
    echo "rma failed: $(grep -v '^ ' "$work/$name/rma.err" | grep -v '^Traceback' | tr '\r' '\n' | grep -v '%|' | tail -1)"
  fi

  redis-cli -p "$port" EVAL "$truth_lua" 0 >"$work/$name/truth.txt"
  # Per pattern: the truth, the module's bytes, rma's "Real" column, and both errors.
  python3 - "$work/$name/truth.txt" "$work/$name/full.json" "$work/$name/rma.out" "$rma_status" <<'EOF'
import json, sys
truth = {}
for line in open(sys.argv[1]):
    p, b = line.rsplit(" ", 1)
    truth[p] = int(b)
full = {p["pattern"]: p["bytes"] for p in json.load(open(sys.argv[2]))["patterns"]}
rma = {}
if sys.argv[4] == "0":
    for line in open(sys.argv[3]):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 5 and cells[0] in truth and cells[1].isdigit():
            rma[cells[0]] = rma.get(cells[0], 0) + int(cells[4])
print(f"{'pattern':<18} {'MEMORY USAGE':>14} {'FULL':>14} {'error':>8} {'rma Real':>14} {'error':>8}")
for p in sorted(truth, key=lambda p: -truth[p]):
    t = truth[p]
    f = full.get(p, 0)
    r = rma.get(p)
    rcol = f"{r:>14} {100 * (r - t) / t:>+7.1f}%" if r is not None else f"{'-':>14} {'-':>8}"
    print(f"{p:<18} {t:>14} {f:>14} {100 * (f - t) / t:>+7.1f}% {rcol}")
EOF
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  port=""
  wait
}

run_dataset strings 0
run_dataset with-hashes 1
