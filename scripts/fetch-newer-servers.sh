#!/usr/bin/env bash
# Fetches the newest Redis and Valkey that Debian builds (Redis from experimental, else sid;
# Valkey from sid) for `make test-newer`, without installing anything system-wide: the .deb
# files are downloaded with a private apt configuration, unpacked with the glibc and
# libraries of the same suite, and run through that suite's dynamic loader. Debian 12 ships
# Redis 7.0 and (backports) Valkey 8.0, older than the atomic slot migration of Redis 8.4 and
# Valkey 9, which the module has to follow.
#
# SUITE=trixie fetches Debian 13's instead (Redis 8.0, Valkey 8.1): a Redis 8 from before
# 8.2's `overwritten` events and module API additions, and the first Valkey that embeds
# short values with their key, each a version production runs and neither default covers.
#
# Prints the directory holding the wrappers (bin/redis-server, bin/redis-cli,
# bin/valkey-server, bin/valkey-cli). NEWER_DIR picks where (default target/newer-servers,
# or target/<suite>-servers with SUITE); an existing, working download is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${SUITE:-}
case "$suite" in
  "" | trixie) ;;
  *) echo "fetch-newer-servers: SUITE must be empty or trixie, not '$suite'" >&2; exit 1 ;;
esac
dir=$(realpath -m "${NEWER_DIR:-target/${suite:-newer}-servers}")
if "$dir/bin/redis-server" --version >/dev/null 2>&1 &&
  "$dir/bin/valkey-server" --version >/dev/null 2>&1; then
  echo "$dir"
  exit 0
fi
command -v apt-get >/dev/null || { echo "fetch-newer-servers: needs apt-get (Debian)" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"/apt/{lists/partial,cache/archives/partial,etc} "$dir/root" "$dir/bin"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [ -n "$suite" ]; then
  echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main" >"$dir/apt/etc/sources.list"
  newest=$suite
else
  cat >"$dir/apt/etc/sources.list" <<EOF
deb [signed-by=$keyring] http://deb.debian.org/debian sid main
deb [signed-by=$keyring] http://deb.debian.org/debian experimental main
EOF
  newest=sid
fi
apt_opts=(
  -o "Dir::Etc::sourcelist=$dir/apt/etc/sources.list" -o Dir::Etc::sourceparts=-
  -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache"
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" -qq update >&2
# Redis: experimental when it has a build, else sid (or the suite asked for).
redis=$(apt-cache "${apt_opts[@]}" madison redis-tools |
  awk '/experimental/ {print $3; exit}')
if [ -n "$redis" ]; then redis="redis-tools=$redis"; else redis=redis-tools/$newest; fi
libs=(libc6 libatomic1 libjemalloc2 liblzf1 libssl3t64 libstdc++6 libgcc-s1 libsystemd0
  libcap2 libzstd1 liblz4-1 liblzma5 libgcrypt20 libgpg-error0)
(cd "$dir/apt/cache/archives" &&
  apt-get "${apt_opts[@]}" -qq download "$redis" "valkey-tools/$newest" "${libs[@]/%//$newest}" >&2)
for deb in "$dir"/apt/cache/archives/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
# Debian's redis-server and valkey-server are the check-rdb binaries under another name
# (they pick their role from argv[0]); the server packages only add that link.
ln -sf redis-check-rdb "$dir/root/usr/bin/redis-server"
ln -sf valkey-check-rdb "$dir/root/usr/bin/valkey-server"
libdir="$dir/root/usr/lib/x86_64-linux-gnu"
for b in redis-server redis-cli redis-benchmark valkey-server valkey-cli; do
  printf '#!/bin/sh\nexec %s --library-path %s %s "$@"\n' \
    "$libdir/ld-linux-x86-64.so.2" "$libdir" "$dir/root/usr/bin/$b" >"$dir/bin/$b"
  chmod +x "$dir/bin/$b"
done
"$dir/bin/redis-server" --version >&2
"$dir/bin/valkey-server" --version >&2
echo "$dir"
