#!/usr/bin/env bash
# What a slot migration of many tagged keys costs the clients of both nodes, against the same
# migration of untagged keys, on the servers that move slots themselves (Redis 8.4+, Valkey
# 9+; fetched by scripts/fetch-newer-servers.sh).
#
#   [VARIANTS="untagged tagged fresh following expiring"] [OPT_MODULE=other.so] benches/slot_migration_stall.sh [KEYS]
#
# For each server and each variant (untagged: SET; tagged: OPT.SET ... TAGS t1 t2; fresh:
# OPT.SET ... EX 3600 STALE 60, freshness and no tag; following: untagged keys move while
# the keys that stay are tagged, so the index follows keyspace events; expiring: SET ... EX
# 3600, the fresh variant's keys without the module's part), it
# starts a two-node cluster (each node with the module), writes KEYS keys into one slot of
# the source and as many into another slot it keeps, then moves the first slot (CLUSTER
# MIGRATION IMPORT on Redis, CLUSTER MIGRATESLOTS on Valkey) while one client per node sends
# PING after PING (benches/src/bin/ping_probe.rs). It reports each node's p99 and largest PING latency
# during the move, and for tagged keys how long after the move started the target held every
# tag (the window in which some moved keys are untagged there is at most that).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
keys=${1:-200000}
use_module_build
cargo build --quiet --release -p redis-opt-benches --bin ping_probe
probe="$root/target/release/ping_probe"
bin="$("$root/scripts/fetch-newer-servers.sh")/bin"
work=$(mktemp -d /tmp/opt-slotmove.XXXXXX)
ports=()
cleanup() {
  for p in "${ports[@]}"; do "$bin/redis-cli" -p "$p" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

run() { # kind variant
  local kind=$1 variant=$2 server="$bin/$1-server" cli="$bin/$1-cli"
  local a b
  a=$(free_port); b=$(free_port)
  ports=("$a" "$b")
  for p in "$a" "$b"; do
    mkdir -p "$work/$p"
    (cd "$work/$p" && "$server" --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --loadmodule "$module" --save '' --appendonly no \
      --daemonize yes --logfile log)
  done
  for _ in $(seq 50); do "$cli" -p "$b" ping >/dev/null 2>&1 && break; sleep 0.1; done
  "$cli" -p "$a" cluster addslotsrange 0 8191 >/dev/null
  "$cli" -p "$b" cluster addslotsrange 8192 16383 >/dev/null
  "$cli" -p "$a" cluster meet 127.0.0.1 "$b" >/dev/null
  for _ in $(seq 100); do
    "$cli" -p "$a" cluster info | grep -q 'cluster_state:ok' &&
      "$cli" -p "$b" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
  # Source: the node of {a} (slot 15495, on b); another hash tag of b stays there.
  local src=$b dst=$a slot=15495 stay=""
  for t in c d e f g h i j; do
    s=$("$cli" -p "$a" cluster keyslot "{$t}")
    if [ "$s" -ge 8192 ] && [ "$s" -ne "$slot" ]; then stay=$t; break; fi
  done
  local write=(SET "{a}k:__rand_int__" v) keep=(SET "{$stay}k:__rand_int__" v)
  if [ "$variant" = tagged ]; then
    write=(OPT.SET "{a}k:__rand_int__" v TAGS t1 t2)
    keep=(OPT.SET "{$stay}k:__rand_int__" v TAGS t1 t3)
  elif [ "$variant" = fresh ]; then
    write=(OPT.SET "{a}k:__rand_int__" v EX 3600 STALE 60)
    keep=(OPT.SET "{$stay}k:__rand_int__" v EX 3600 STALE 60)
  elif [ "$variant" = expiring ]; then
    # The fresh variant's keys without the module's part: plain SET with the same TTL.
    write=(SET "{a}k:__rand_int__" v EX 3600)
    keep=(SET "{$stay}k:__rand_int__" v EX 3600)
  elif [ "$variant" = following ]; then
    # Untagged keys move, but tagged keys stay: the index follows keyspace events.
    keep=(OPT.SET "{$stay}k:__rand_int__" v TAGS t1 t3)
  fi
  "$bin/redis-benchmark" -p "$src" -n "$keys" -r 1000000000 -P 100 -q "${write[@]}" >/dev/null
  "$bin/redis-benchmark" -p "$src" -n "$keys" -r 1000000000 -P 100 -q "${keep[@]}" >/dev/null
  local moved
  moved=$("$cli" -p "$src" cluster countkeysinslot "$slot")
  rm -f "$work/stop"
  "$probe" "$src" "$work/stop" >"$work/src.out" &
  local p1=$!
  "$probe" "$dst" "$work/stop" >"$work/dst.out" &
  local p2=$!
  sleep 0.5
  local t0 done_ms=""
  t0=$(now_ms)
  if [ "$kind" = redis ]; then
    "$cli" -p "$dst" cluster migration import "$slot" "$slot" >/dev/null
  else
    "$cli" -p "$src" cluster migrateslots slotsrange "$slot" "$slot" \
      node "$("$cli" -p "$dst" cluster myid)" >/dev/null
  fi
  for _ in $(seq 600); do
    if [ "$variant" = tagged ]; then
      n=$("$cli" -p "$dst" opt.taginfo format json | sed 's/.*"keys":\([0-9]*\).*/\1/')
      [ "$n" = "$moved" ] && { done_ms=$(($(now_ms) - t0)); break; }
    else
      [ "$("$cli" -p "$dst" cluster countkeysinslot "$slot")" = "$moved" ] &&
        [ "$("$cli" -p "$src" cluster countkeysinslot "$slot")" = 0 ] && break
    fi
    sleep 0.05
  done
  sleep 1
  touch "$work/stop"
  wait "$p1" "$p2" || true
  local left kept
  left=$("$cli" -p "$src" opt.taginfo format json | sed 's/.*"keys":\([0-9]*\).*/\1/')
  kept=0
  case $variant in tagged | following)
    kept=$("$cli" -p "$src" cluster countkeysinslot "$("$cli" -p "$src" cluster keyslot "{$stay}")") ;;
  esac
  [ -n "${SHOW_LOG:-}" ] && grep -iE "slot|migrat|trim" "$work/$src/log" | tail -8 >&2
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$("$server" --version | awk '{print $1, $3}' | sed 's/v=//')" \
    "$variant" "$moved" "$(sed 's# # / #' "$work/src.out")" "$(sed 's# # / #' "$work/dst.out")" \
    "${done_ms:-n/a}" "$((left - kept))"
  cleanup
  ports=()
  mkdir -p "$work"
}

echo "| server | keys | keys moved | source PING p99 / max (ms) | target PING p99 / max (ms) | all tags on target after (ms) | moved keys left in the source's index |"
echo "|---|---|---|---|---|---|---|"
for kind in redis valkey; do
  for variant in ${VARIANTS:-untagged tagged}; do
    run "$kind" "$variant"
  done
done
