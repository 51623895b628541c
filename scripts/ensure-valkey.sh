#!/usr/bin/env bash
# Installs valkey-server for `make test-valkey`: from Debian 12's bookworm-backports (Valkey 8)
# when it is not already on the PATH. Elsewhere it says what to install and fails.
set -euo pipefail
command -v valkey-server >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache policy valkey-server 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = bookworm ]; then
      echo "deb http://deb.debian.org/debian bookworm-backports main" \
        >/etc/apt/sources.list.d/opt-backports.list
    fi
    apt-get update -qq
  fi
  target=()
  apt-cache policy valkey-server | grep -q bpo && target=(-t "$(. /etc/os-release && echo "$VERSION_CODENAME")-backports")
  apt-get install -y -qq --no-install-recommends "${target[@]}" valkey-server >/dev/null
else
  echo "valkey-server is missing: install Valkey 8 or later, then rerun." >&2
  exit 1
fi
