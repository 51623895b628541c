#!/usr/bin/env bash
# Installs what building and testing need and is missing: redis-server, redis-tools
# (redis-cli, redis-benchmark) and libclang (bindgen). On Debian/Ubuntu as root it uses
# apt-get; elsewhere it says what to install and fails.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
if ! compgen -G "/usr/lib/llvm-*/lib/libclang.so" >/dev/null \
  && ! compgen -G "/usr/lib/*-linux-gnu/libclang.so" >/dev/null; then
  missing+=(libclang-dev)
fi
for extra in "$@"; do
  dpkg -s "$extra" >/dev/null 2>&1 || missing+=("$extra")
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust 1.85 or later (https://rustup.rs), then rerun." >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
# shellcheck disable=SC2207
missing=($(printf '%s\n' "${missing[@]}" | sort -u))
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a redis-server service on install where an init system runs; the demo and
  # the tests start their own servers on free ports, so that one is not needed.
else
  echo "missing packages: ${missing[*]}" >&2
  echo "install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}), then rerun." >&2
  exit 1
fi
