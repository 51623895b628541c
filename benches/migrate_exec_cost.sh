#!/usr/bin/env bash
# What an EXEC costs on a Redis 7.0 cluster node while keys of MIGRATEs wait for one (see
# module/src/tag_migration.rs, `Awaiting`): 7.0's command filter cannot tell a MIGRATE queued
# in MULTI from one that runs, so the keys a MIGRATE leaves on the source wait for an EXEC
# that deletes them. While any wait, the filter looks at every one-argument command, and an
# EXEC makes the next `del` events look the key up.
#
#   [REDIS_SERVER=redis-server] [OPT_MODULE=other.so] benches/migrate_exec_cost.sh [MIGRATES] [KEYS_EACH]
#
# Starts a two-node cluster (node A holds every slot, node B imports one), tags MIGRATES x
# KEYS_EACH keys of that slot on A, then queues MIGRATES MIGRATEs of KEYS_EACH keys each in
# MULTI and DISCARDs each (so their keys all wait, 30 s at most). It times an empty
# MULTI + EXEC, 2,000 of them one after the other through redis-cli (one round trip each),
# before the MIGRATEs, while their keys wait, and after they expired.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib.sh"
migrates=${1:-100}
each=${2:-100}
server=${REDIS_SERVER:-redis-server}
use_module_build
work=$(mktemp -d /tmp/opt-migrate-exec.XXXXXX)
ports=()
cleanup() {
  for p in "${ports[@]}"; do redis-cli -p "$p" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

a=$(free_port); b=$(free_port); ports=("$a" "$b")
for p in "$a" "$b"; do
  mkdir -p "$work/$p"
  "$server" --port "$p" --bind 127.0.0.1 --daemonize yes --dir "$work/$p" \
    --logfile "$work/$p/server.log" --save "" --cluster-enabled yes \
    --cluster-config-file "$work/$p/nodes.conf" --loadmodule "$module" >/dev/null
done
for p in "$a" "$b"; do
  for _ in $(seq 1 100); do redis-cli -p "$p" PING >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli -p "$a" CLUSTER ADDSLOTSRANGE 0 16383 >/dev/null
redis-cli -p "$a" CLUSTER MEET 127.0.0.1 "$b" >/dev/null
a_id=$(redis-cli -p "$a" CLUSTER MYID)
b_id=$(redis-cli -p "$b" CLUSTER MYID)
for _ in $(seq 1 100); do
  redis-cli -p "$b" CLUSTER NODES | grep -q "$a_id" && redis-cli -p "$a" CLUSTER NODES | grep -q "$b_id" && break
  sleep 0.1
done
for _ in $(seq 1 100); do
  [ "$(redis-cli -p "$a" CLUSTER INFO | tr -d '\r' | grep cluster_state)" = "cluster_state:ok" ] && break
  sleep 0.1
done

# The tagged keys, and the MULTI / MIGRATE KEYS ... / DISCARD blocks, as redis-cli pipes.
for ((i = 0; i < migrates * each; i++)); do
  echo "OPT.SET {m}:$i v TAGS t$((i % 100)) all"
done | redis-cli -p "$a" >/dev/null
[ "$(redis-cli -p "$a" DBSIZE)" = "$((migrates * each))" ] || { echo "the keys were not written" >&2; exit 1; }
slot=$(redis-cli -p "$a" CLUSTER KEYSLOT "{m}")
redis-cli -p "$b" CLUSTER SETSLOT "$slot" IMPORTING "$a_id" >/dev/null
redis-cli -p "$a" CLUSTER SETSLOT "$slot" MIGRATING "$b_id" >/dev/null
for ((m = 0; m < migrates; m++)); do
  echo "MULTI"
  line="MIGRATE 127.0.0.1 $b \"\" 0 5000 KEYS"
  for ((k = 0; k < each; k++)); do line+=" {m}:$((m * each + k))"; done
  echo "$line"
  echo "DISCARD"
done > "$work/queue.txt"

exec_us() { # microseconds per MULTI + EXEC round trip pair, N pairs (default 2000) in one redis-cli
  local n=${1:-2000} t0 t1
  for ((i = 0; i < n; i++)); do echo MULTI; echo EXEC; done > "$work/exec.txt"
  t0=$(date +%s%N)
  redis-cli -p "$a" < "$work/exec.txt" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / n / 1000))
}
awaiting() { redis-cli -p "$a" INFO opt | tr -d '\r' | awk -F: '/^opt_tags_migrate_keys_awaiting_exec:/ {print $2}'; }

echo "server: $("$server" --version | awk '{print $3}'), $migrates MIGRATEs of $each keys waiting"
before=$(exec_us)
redis-cli -p "$a" < "$work/queue.txt" >/dev/null
start=$(date +%s)
waiting=$(awaiting)
during=$(exec_us)
echo "keys waiting for an EXEC: $waiting"
echo "MULTI + EXEC, microseconds a pair: before $before; while they wait $during"
# They expire 30 s after they were first seen; INFO drops them.
while [ "$(awaiting)" != "0" ]; do sleep 1; done
after=$(exec_us)
echo "after they expired ($(($(date +%s) - start)) s later): $after"
