#!/usr/bin/env bash
# What an open stream costs SMTP: throughput of one mailfault with no API
# client, then with one and with three `GET /api/v1/events` subscribers
# (curl -N, as a browser tab would hold it) reading every event, then with
# one stream of four event types, then with the web UI's change feed
# (`GET /api/v1/changes`), alternating, several rounds. Loopback only;
# every load is bounded in messages and in time.
#
#   bench/api_cost.sh [--fresh] [ROUNDS]   # needs smtp-source (Debian: postfix) and curl
#
# --fresh starts a new server for every run instead of one for all runs.
#
# Prints one line per run and the median per mode; the figures go into
# docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${1:-}" = --fresh ] && { FRESH=1; shift; }
rounds=${1:-5}
command -v smtp-source >/dev/null || { echo "smtp-source not found (apt-get install postfix)"; exit 1; }
command -v curl >/dev/null || { echo "curl not found"; exit 1; }
cargo build --release --quiet
bin=target/release/mailfault
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

printf '[server]\nhostname = "bench.test"\n' > "$tmp/healthy.toml"
start_server() {
  $bin serve --listen 127.0.0.1:0="$tmp/healthy.toml" --api 127.0.0.1:0 \
    --max-connections 10000 --no-watch > "$tmp/mf.out" 2> /dev/null &
  server=$!
  for _ in $(seq 50); do
    [ "$(wc -l < "$tmp/mf.out")" -ge 2 ] && break
    sleep 0.1
  done
  smtp=$(sed -n 's#^listening smtp://\([^ ]*\) .*#\1#p' "$tmp/mf.out")
  api=$(sed -n 's#^listening \(http://[^ ]*\) api#\1#p' "$tmp/mf.out")
  [ -n "$smtp" ] && [ -n "$api" ] || { echo "serve printed no listening lines"; exit 1; }
}
stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; : > "$tmp/mf.out"; }
# --fresh: a new server for every run; otherwise one server for all runs.
fresh=${FRESH:-}
[ -z "$fresh" ] && start_server

# 20 kept connections, 60,000 messages of 1 KB: the SMTP loop at full
# speed, where a per-event cost would show most, for two to three seconds
# (shorter runs moved by more than the 5% being measured).
load=(-s 20 -m 60000 -l 1024 -d)

# The server's CPU time so far, in clock ticks (user + system).
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
hz=$(getconf CLK_TCK)

run() { # mode subscribers [path]
  local mode=$1 subs=$2 path=${3:-/api/v1/events} pids=() start end secs got t0 t1
  [ -n "$fresh" ] && start_server
  # Each reader counts the events as they come (grep on a pipe), as a
  # page would look at each one; nothing is written to disk, which on two
  # cores would slow the client more than the server.
  for i in $(seq "$subs"); do
    { curl -sN "$api$path" & echo $! > "$tmp/curl.$i"; wait; } |
      grep -c '^data: ' > "$tmp/count.$i" &
    pids+=($!)
  done
  # Each subscriber is attached once its stream has answered.
  [ "$subs" -gt 0 ] && sleep 0.5
  start=$(date +%s.%N); t0=$(ticks)
  timeout 120 smtp-source "${load[@]}" -f sender@bench.test -t rcpt@bench.test "$smtp"
  end=$(date +%s.%N); t1=$(ticks)
  for f in "$tmp"/curl.*; do
    if [ -e "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  [ "${#pids[@]}" -gt 0 ] && wait "${pids[@]}" 2>/dev/null || true
  got=$(cat "$tmp"/count.* 2>/dev/null | awk '{n += $1} END {print n + 0}' || true)
  rm -f "$tmp"/curl.* "$tmp"/count.*
  secs=$(echo "$end - $start" | bc -l)
  printf '%-16s %8.0f msg/s  %5.1f server CPU us/msg  (%s events streamed)\n' "$mode" \
    "$(echo "${load[3]} / $secs" | bc -l)" "$(echo "($t1 - $t0) * 1000000 / $hz / ${load[3]}" | bc -l)" "$got"
  # Forget the messages so every run starts from the same store.
  curl -s -X DELETE "$api/api/v1/messages" > /dev/null
  [ -n "$fresh" ] && stop_server
  return 0
}

for r in $(seq "$rounds"); do
  echo "round $r"
  run "no subscriber" 0 | tee -a "$tmp/none"
  run "1 subscriber" 1 | tee -a "$tmp/one"
  run "3 subscribers" 3 | tee -a "$tmp/three"
  run "four types" 1 "/api/v1/events?types=connect,message,transaction,close" | tee -a "$tmp/four"
  run "UI feed" 1 /api/v1/changes | tee -a "$tmp/ui"
done
median() { # file field
  awk -v f="$2" '{print $f}' "$1" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}
for m in "msg/s:3" "server CPU us/msg:5"; do
  f=${m##*:}
  echo "median ${m%:*}: none $(median "$tmp/none" "$f"), 1 subscriber $(median "$tmp/one" "$f"), 3 subscribers $(median "$tmp/three" "$f"), four types $(median "$tmp/four" "$f"), the UI's change feed $(median "$tmp/ui" "$f")"
done
