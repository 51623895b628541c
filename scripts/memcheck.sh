#!/usr/bin/env bash
# Runs the end-to-end tests against a redis-server running under valgrind's memcheck, and
# fails if any invalid access, use of uninitialised memory or definite leak has the module in
# its stack. Rust keeps the module's own code memory-safe; what this checks is the FFI edge:
# strings, keys, replies and contexts taken from the server and given back, callbacks run
# after what they point to was freed, memory the module allocates through the server.
#
# Debian's servers allocate with jemalloc, whose pools hide most misuse from valgrind, so the
# server is built from Debian's own source tarball (checksum pinned below) with the C
# library's malloc. Valgrind makes the server 20 to 50 times slower, so tests that time
# things (expiry within a deadline, a slice's length) may fail, as may one that expects
# jemalloc's size classes in MEMORY USAGE, and TLS (the build has none): their failures are
# listed and do not count. What counts is the valgrind logs.
#
#   scripts/memcheck.sh [redis|valkey|redis8|valkey9] [test-file ...]
#
# redis: Redis 7.0.15 (Debian 12's); valkey: Valkey 8.1.1 (Debian 13's, the version whose
# event bug module/src/client_db.rs works around); redis8: Redis 8.6.3 and valkey9: Valkey
# 9.1.2 (Debian's experimental and sid), whose key objects and slot migration differ. Test
# files default to every one but `cluster` (add it by name: the cluster's failure detector
# times out under valgrind, and the server's own cluster bus code reports uninitialised
# bytes, which do not count).
# Work goes to target/memcheck/; logs to target/memcheck/logs-<server>/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
which=${1:-redis}
[ $# -gt 0 ] && shift
case "$which" in
  redis)
    tarball=redis_7.0.15.orig.tar.gz
    url=http://deb.debian.org/debian/pool/main/r/redis/$tarball
    sha=4b1dc4ee6d622a09fff9c6777191209750fb5e5a725ef78ea012d6eef4c22982
    srcdir=redis-7.0.15
    binary=redis-server
    ;;
  valkey)
    tarball=valkey_8.1.1+dfsg1.orig.tar.xz
    url=http://deb.debian.org/debian/pool/main/v/valkey/$tarball
    sha=d9bbd82eecb82f359e649a0007ad3dc1b47cc15afa626348ca86b73c4ae2c7ee
    srcdir=valkey-8.1.1
    binary=valkey-server
    ;;
  redis8)
    tarball=redis_8.6.3.orig.tar.gz
    url=http://deb.debian.org/debian/pool/main/r/redis/$tarball
    sha=58d0d1eb49a1ea6c2179659707fec171b1e2e2b8d5157ed2ec59d1d66ad5a654
    srcdir=redis-8.6.3
    binary=redis-server
    ;;
  valkey9)
    tarball=valkey_9.1.2.orig.tar.gz
    url=http://deb.debian.org/debian/pool/main/v/valkey/$tarball
    sha=8e8557da7426a51b4e0fb514a65ef6241dc7c85cb408243af389070abf379cec
    srcdir=valkey-io-valkey-7f1dffe
    binary=valkey-server
    ;;
  *) echo "memcheck: the server is redis, valkey, redis8 or valkey9, not '$which'" >&2; exit 2 ;;
esac
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  tests=(foundation hotkeys keyspace memory own_events stampede advise operator tags tag_model fuzz)
fi

scripts/ensure-deps.sh valgrind gcc make curl xz-utils
work=$root/target/memcheck
mkdir -p "$work"
server=$work/$srcdir/src/$binary
if ! [ -x "$server" ]; then
  if ! [ -f "$work/$tarball" ] || ! echo "$sha  $work/$tarball" | sha256sum -c --quiet 2>/dev/null; then
    curl -fsS -o "$work/$tarball" "$url"
    echo "$sha  $work/$tarball" | sha256sum -c --quiet
  fi
  tar -xf "$work/$tarball" -C "$work"
  echo "memcheck: building $srcdir with the C library's malloc (a few minutes)" >&2
  make -C "$work/$srcdir" -j"$(nproc)" MALLOC=libc OPTIMIZATION=-O1 BUILD_TLS=no \
    >"$work/$srcdir.build.log" 2>&1 || { tail -20 "$work/$srcdir.build.log" >&2; exit 1; }
fi

logs=$work/logs-$which
rm -rf "$logs"
mkdir -p "$logs"
wrapper=$work/memcheck-$binary
cat >"$wrapper" <<EOF
#!/bin/sh
exec valgrind --tool=memcheck --error-limit=no --num-callers=40 \\
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \\
  --log-file=$logs/%p.log $server "\$@"
EOF
chmod +x "$wrapper"

cargo build -q -p redis-opt-module -p redis-opt-ctl -p opt-test-listener \
  --features redis-opt-module/test-commands
failed_tests=()
for t in "${tests[@]}"; do
  echo "memcheck: tests/tests/$t.rs against $binary under valgrind" >&2
  # The fuzz test's default of 150 steps is kept: each step checks every key's DUMP.
  if ! REDIS_SERVER=$wrapper OPT_TEST_START_SECONDS=60 OPT_TEST_STOP_SECONDS=60 \
    cargo test -q -p redis-opt-tests --test "$t" -- --test-threads=2 \
    >"$logs/test-$t.out" 2>&1; then
    failed_tests+=("$t")
  fi
done

# A valgrind record is the run of lines between two empty "==pid==" lines; an error record
# starts with its kind. It counts against the module when a frame of the module's crates
# (`redis_opt::`, `opt_core::`, or the library's name where symbols are missing) is anywhere
# in it: the access, the allocation or the free. Records of the server alone are counted apart.
report=$logs/module-errors.txt
: >"$report"
awk -v report="$report" '
  function close_block() {
    if (first ~ /^==[0-9]+== (Invalid|Conditional jump|Use of uninitialised|Syscall param|Mismatched|Source and destination overlap|Argument|.*are definitely lost in loss record)/) {
      if (block ~ /(redis_opt::|opt_core::|libredis_opt)/) { print FILENAME ":\n" block > report; module++ }
      else server++
    }
    block = ""; first = ""
  }
  FNR == 1 { if (NR > 1) close_block(); files++ }
  /^==[0-9]+== *$/ { close_block(); next }
  { if (first == "") first = $0; block = block $0 "\n" }
  /ERROR SUMMARY/ { summaries++ }
  END {
    close_block()
    printf "memcheck: %d server processes ran under valgrind, %d reached their exit report\n", files, summaries
    printf "memcheck: %d error records with the module in them, %d of the server alone\n", module + 0, server + 0
    exit module > 0
  }
' "$logs"/[0-9]*.log && status=0 || status=1
if [ ${#failed_tests[@]} -gt 0 ]; then
  echo "memcheck: test files with failures under valgrind (timing, not counted): ${failed_tests[*]}" >&2
fi
if [ $status -ne 0 ]; then
  echo "memcheck: the module appears in valgrind records, see $report" >&2
fi
exit $status
