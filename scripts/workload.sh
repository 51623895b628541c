#!/usr/bin/env bash
# A short, realistic cache workload for the demo: several key namespaces, skewed (Zipf-like)
# reads, a hot key that does not exist (cache penetration), TTLs on some namespaces and a few
# big keys, and pages cached with tags (OPT.SET ... TAGS). Usage: workload.sh PORT [SCALE]. Sends everything through `redis-cli --pipe`.
set -euo pipefail
port=$1
scale=${2:-1}

awk -v scale="$scale" -v seed="${WORKLOAD_SEED:-42}" '
function resp(n, a,   i, s) {
  s = "*" n "\r\n"
  for (i = 1; i <= n; i++) s = s "$" length(a[i]) "\r\n" a[i] "\r\n"
  printf "%s", s
}
function cmd2(c, x,   a) { a[1] = c; a[2] = x; resp(2, a) }
function cmd3(c, x, y,   a) { a[1] = c; a[2] = x; a[3] = y; resp(3, a) }
function cmd5(c, x, y, z, w,   a) { a[1] = c; a[2] = x; a[3] = y; a[4] = z; a[5] = w; resp(5, a) }
# A rendered page cached under the tags of the entities it shows.
function tagged_page(i,   a) {
  a[1] = "OPT.SET"; a[2] = "page:/users/" i; a[3] = "<html>" i "</html>"; a[4] = "EX"; a[5] = 3600
  a[6] = "TAGS"; a[7] = "user:" i; a[8] = "team:" (i % 20); resp(8, a)
}
# Zipf-like rank in [0, n): a power of a uniform number skews towards small ranks.
function skewed(n) { return int(n * (rand() ^ 4)) }
# mawk caps sprintf at 8 KB, so long strings are built by doubling.
function repeat(c, n,   s) { s = c; while (length(s) < n) s = s s; return substr(s, 1, n) }
function hex(n,   s, i) { s = ""; for (i = 0; i < n; i++) s = s substr("0123456789abcdef", int(rand() * 16) + 1, 1); return s }
BEGIN {
  srand(seed)
  users = 5000 * scale; products = 5000 * scale; sessions = 3000 * scale
  pad = repeat("x", 200)
  for (i = 0; i < users; i++) {
    a[1] = "HSET"; a[2] = "user:" i ":profile"; a[3] = "name"; a[4] = "user" i
    a[5] = "email"; a[6] = "u" i "@example.com"; a[7] = "plan"; a[8] = (i % 7 ? "free" : "pro")
    resp(8, a)
  }
  for (i = 0; i < products; i++) cmd3("SET", "cache:product:" i, "{\"id\":" i ",\"blob\":\"" pad "\"}")
  for (i = 0; i < sessions; i++) cmd5("SET", "session:" hex(32), "token-" i, "EX", 600 + int(rand() * 1800))
  for (i = 0; i < 50; i++) for (j = 0; j < 40; j++) cmd3("LPUSH", "feed:" i, "event-" j)
  for (i = 0; i < 2000 * scale; i++) tagged_page(i)
  big = repeat("r", 200000)
  for (d = 1; d <= 3; d++) cmd3("SET", "report:2026-11-0" d ":daily", big)
  for (i = 0; i < 20000; i += 1) { a[1] = "ZADD"; a[2] = "leaderboard:global"; a[3] = i; a[4] = "player" i; resp(4, a) }
  for (i = 0; i < 100000 * scale; i++) {
    r = rand()
    if (r < 0.55) cmd2("GET", "cache:product:" skewed(products))
    else if (r < 0.80) cmd2("HGETALL", "user:" skewed(users) ":profile")
    else if (r < 0.90) cmd2("GET", "cache:product:missing-42")
    else if (r < 0.97) cmd3("INCRBY", "counter:pageviews:" skewed(20), 1)
    else cmd5("SET", "cache:product:" skewed(products), "{\"id\":1}", "EX", 3600 + int(rand() * 21600))
  }
}' | redis-cli -p "$port" --pipe >/dev/null
