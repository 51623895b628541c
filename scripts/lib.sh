# Shared by the scripts and benches: start a redis-server with the release module on a port.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="$root/target/release/libredis_opt.so"
optctl="$root/target/release/optctl"

# A loopback port nothing listens on, below Linux's ephemeral range (32768-60999), where an
# outgoing connection may hold a port that nothing listens on yet no server can bind.
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo "no free port found" >&2
  return 1
}

# write_conf DIR PORT: redis.conf.example with this checkout's module, plus port and dir.
write_conf() {
  local dir=$1 port=$2
  sed "s#^loadmodule .*#loadmodule $module#" "$root/redis.conf.example" >"$dir/redis.conf"
  printf 'port %s\nbind 127.0.0.1\ndir %s\nsave ""\nappendonly no\n' "$port" "$dir" >>"$dir/redis.conf"
}

# perf_shares PERF_DATA: "MODULE GLUE", the percentages of the recorded server's samples in
# the module ($module's file) and in the server's module plumbing (functions named RM_* or
# module*: the filter dispatch, the contexts built for events). For the benches' CPU shares.
perf_shares() {
  local own glue
  own=$(perf report -i "$1" --no-children --sort dso --stdio 2>/dev/null |
    awk -v so="$(basename "$module")" 'index($0, so) {gsub("%", "", $1); s += $1} END {printf "%.2f", s}')
  glue=$(perf report -i "$1" --no-children --sort symbol --stdio 2>/dev/null |
    awk '$3 ~ /^(RM_|module)/ {gsub("%", "", $1); s += $1} END {printf "%.2f", s}')
  echo "$own $glue"
}

# server_command_line SERVER: prints the command line that runs SERVER's binary itself, one
# word a line: the binary, or what a wrapper script (as scripts/fetch-newer-servers.sh writes:
# `exec LOADER --library-path DIR BINARY "$@"`) runs, so that valgrind measures the server.
server_command_line() {
  local bin; bin=$(command -v "$1")
  if [ "$(head -c 2 "$bin")" = "#!" ]; then
    sed -n 's/^exec \(.*\) "\$@"$/\1/p' "$bin" | tr ' ' '\n'
  else
    echo "$bin"
  fi
}

# use_module_build: sets $module to OPT_MODULE when it is set (another build, to compare
# with), else builds this checkout's release module and keeps its path.
use_module_build() {
  module=${OPT_MODULE:-$module}
  [ -n "${OPT_MODULE:-}" ] || cargo build --quiet --release -p redis-opt-module
}

# use_module_and_ctl_builds: as use_module_build, and sets $optctl to OPTCTL when it is set,
# else this checkout's release optctl (built with the module).
use_module_and_ctl_builds() {
  module=${OPT_MODULE:-$module}
  optctl=${OPTCTL:-$optctl}
  [ -n "${OPT_MODULE:-}" ] || cargo build --quiet --release -p redis-opt-module -p redis-opt-ctl
}

# start_module_server NAME: starts a throwaway server ($REDIS_SERVER, by default redis-server)
# with $module on a free loopback port, in a fresh /tmp/opt-NAME.* directory, and waits for its
# PING. Sets $port and $work, and stops the server and removes the directory when the script
# exits.
start_module_server() {
  work=$(mktemp -d "/tmp/opt-$1.XXXXXX")
  port=$(free_port)
  trap 'redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
  "${REDIS_SERVER:-redis-server}" --port "$port" --bind 127.0.0.1 --daemonize yes \
    --dir "$work" --logfile "$work/log" --save "" --loadmodule "$module" >/dev/null
  for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && return; sleep 0.05; done
}
