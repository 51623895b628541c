#!/usr/bin/env bash
# Server-side CPU cost of the tag index in instructions, counted by callgrind: repeatable to
# the instruction where ops/s on a shared 2-core VM moves by more than the targets' margins.
# Each measurement runs redis-server under callgrind with instrumentation switched on only
# around the measured work.
#
#   benches/tags_cost.sh set         OPT.SET with 3 tags and plain SET, per command
#                                    (redis-benchmark, pipelining 16, 100,000 random keys),
#                                    and SET and LPUSH on a server whose index is in use
#   benches/tags_cost.sh invalidate  OPT.INVALIDATE of a 100k-key tag and the Lua flush a tag
#                                    library runs (SMEMBERS, UNLINK in chunks of 1000, DEL) on
#                                    a server without the module, data as tags_bench section 2
#                                    (BESIDE=100000: beside as many tagged keys that stay)
#   benches/tags_cost.sh expire      per expired key: a server that never tagged, untagged
#                                    keys on a server that tags, tagged keys (2 tags)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
what=${1:-set}
server=${REDIS_SERVER:-redis-server}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
# OPT_MODULE=path measures another build; REDIS_SERVER may be a wrapper script.
module=${OPT_MODULE:-$module}
[ -n "${OPT_MODULE:-}" ] || cargo build --quiet --release -p redis-opt-module
mapfile -t server_cmd < <(server_command_line "$server")
work=$(mktemp -d /tmp/opt-tags-cost.XXXXXX)
trap 'rm -rf "$work"' EXIT

# start NAME [conf lines...]: a server under callgrind, instrumentation off; sets $port, $pid.
start() {
  local name=$1; shift
  port=$(free_port)
  mkdir -p "$work/$name"
  { echo "port $port"; echo "bind 127.0.0.1"; echo 'save ""'; echo "dir $work/$name"
    echo "logfile $work/$name/server.log"; printf '%s\n' "$@"; } >"$work/$name/redis.conf"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/$name/cg.out.%p" \
    "${server_cmd[@]}" "$work/$name/redis.conf" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
}

# stop NAME: shuts the server down and prints the instructions of its last profile part.
stop() {
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  grep -hE '^totals:' "$work/$1/cg.out.$pid" | awk '{print $2}'
}

# measure_between: instrumentation on, run the rest of the arguments, instrumentation off.
measure_between() {
  callgrind_control -i on "$pid" >/dev/null 2>&1
  "$@" >/dev/null
  callgrind_control -i off "$pid" >/dev/null 2>&1
}

case $what in
set)
  n=100000
  echo "instructions per command (redis-benchmark -P 16 -r 100000 -n $n, after as many to warm up)"
  # set: SET on a server with the module whose index is empty; settagging: the same once one
  # key is tagged (the index then follows keyspace events); lpushtagging: LPUSH likewise.
  for variant in set settagging lpushtagging optset; do
    case $variant in
    set | settagging) cmd=(SET key:__rand_int__ v) ;;
    lpushtagging) cmd=(LPUSH list:__rand_int__ v) ;;
    optset) cmd=(OPT.SET key:__rand_int__ v TAGS t1 t2 t3) ;;
    esac
    start $variant "loadmodule $module"
    case $variant in *tagging) redis-cli -p "$port" OPT.SET tagged v TAGS t >/dev/null ;; esac
    redis-benchmark -p "$port" -q -P 16 -r 100000 -n $n "${cmd[@]}" >/dev/null
    measure_between redis-benchmark -p "$port" -q -P 16 -r 100000 -n $n "${cmd[@]}"
    total=$(stop $variant)
    printf '%-13s %10.0f\n' "$variant" "$(echo "$total / $n" | bc -l)"
  done
  ;;
invalidate)
  # tags_bench section 2's data: 100k keys tagged `big` through OPT.SET on a server with the
  # module, and the same 100k keys named in the set `tag:big`, as a library stores them, on a
  # server without it (the server a library's user runs: there the flush's UNLINKs deliver
  # no event to a tag index).
  # BESIDE=n also tags n other keys (`stay`; `tag:stay` for the library), which stay.
  python3 - "$work" "${BESIDE:-0}" <<'EOF'
import sys
work, beside = sys.argv[1], int(sys.argv[2])
ours, lib = open(work + "/ours.resp", "wb"), open(work + "/lib.resp", "wb")
def cmd(out, *a):
    out.write(b"*%d\r\n" % len(a))
    for x in a:
        x = x.encode()
        out.write(b"$%d\r\n%s\r\n" % (len(x), x))
for i in range(beside):
    cmd(ours, "OPT.SET", f"other:{i}", "v", "TAGS", "stay")
    cmd(lib, "SET", f"other:{i}", "v")
    cmd(lib, "SADD", "tag:stay", f"other:{i}")
for i in range(100000):
    cmd(ours, "OPT.SET", f"page:{i}", "v", "TAGS", "big")
    cmd(lib, "SET", f"page:{i}", "v")
    cmd(lib, "SADD", "tag:big", f"page:{i}")
EOF
  lua="local m = redis.call('SMEMBERS', KEYS[1]) for i = 1, #m, 1000 do redis.call('UNLINK', unpack(m, i, math.min(i + 999, #m))) end redis.call('DEL', KEYS[1]) return #m"
  start inval "loadmodule $module"
  redis-cli -p "$port" --pipe <"$work/ours.resp" >/dev/null
  measure_between redis-cli -p "$port" OPT.INVALIDATE big ASYNC
  ours=$(stop inval)
  start lib
  redis-cli -p "$port" --pipe <"$work/lib.resp" >/dev/null
  measure_between redis-cli -p "$port" EVAL "$lua" 1 tag:big
  theirs=$(stop lib)
  printf 'OPT.INVALIDATE big ASYNC  %12d instructions (%d per key)\n' "$ours" $((ours / 100000))
  printf 'Lua SMEMBERS+UNLINK+DEL   %12d instructions (%d per key; server without the module)\n' "$theirs" $((theirs / 100000))
  printf 'ratio %.2f\n' "$(echo "$theirs / $ours" | bc -l)"
  ;;
expire)
  # 50,000 keys with a 3 s TTL, then 12 s of nothing but active expiry.
  echo "instructions per expired key (active expiry of 50,000 keys written with PX 3000)"
  for variant in never-tagged untagged tagged; do
    start $variant "loadmodule $module"
    [ $variant != never-tagged ] && redis-cli -p "$port" OPT.SET primer v TAGS p >/dev/null
    if [ $variant = tagged ]; then cmd=(OPT.SET exp:__rand_int__ v PX 3000 TAGS a b); else cmd=(SET exp:__rand_int__ v PX 3000); fi
    redis-benchmark -p "$port" -q -P 16 -r 1000000 -n 50000 "${cmd[@]}" >/dev/null
    keys=$(redis-cli -p "$port" DBSIZE)
    measure_between sleep 12
    left=$(redis-cli -p "$port" DBSIZE)
    total=$(stop $variant)
    printf '%-13s %8.0f  (%d keys expired)\n' "$variant" "$(echo "$total / ($keys - $left)" | bc -l)" $((keys - left))
  done
  ;;
*)
  echo "usage: $0 set|invalidate|expire" >&2
  exit 2
  ;;
esac
