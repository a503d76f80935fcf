#!/usr/bin/env bash
# Throughput with the Redis store beside the memory store, and Redis round
# trips per message, for a scenario with a rate limit (at MAIL) and a
# greylist (at RCPT). Everything on loopback; every load is bounded.
#
#   bench/state_redis.sh     # needs smtp-source (postfix), redis-server, redis-cli
#
# Prints one line per run; the figures go into docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."

for p in smtp-source redis-server redis-cli; do
  command -v $p >/dev/null || { echo "$p not found (apt-get install postfix redis-server redis-tools)"; exit 1; }
done
cargo build --release --quiet
bin=target/release/mailfault
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

cat > "$tmp/s.toml" <<'TOML'
[server]
hostname = "bench.test"

[[rule]]
on = "mail"
key = ["client_ip"]
limit = { rate = "1000000/1m" }
reply = "450 4.2.1 Slow down"

[[rule]]
on = "rcpt"
greylist = { retry_after = "1s" }
reply = "450 4.2.0 Greylisted"
TOML

port_redis=26201 port_mem=26202 port_red=26203
redis-server --port $port_redis --bind 127.0.0.1 --save '' --appendonly no --daemonize no > /dev/null &
sleep 0.5
$bin serve --listen 127.0.0.1:$port_mem --scenario "$tmp/s.toml" --max-connections 10000 --no-watch > /dev/null 2>&1 &
$bin serve --listen 127.0.0.1:$port_red --scenario "$tmp/s.toml" --state redis://127.0.0.1:$port_redis \
  --max-connections 10000 --no-watch > /dev/null 2>&1 &
sleep 1
# The greylist's first attempt, then its window: every later message passes.
for port in $port_mem $port_red; do
  smtp-source -m 1 -f sender@bench.test -t rcpt@bench.test 127.0.0.1:$port > /dev/null 2>&1 || true
done
sleep 1.2

run() { # name port sessions messages
  local name=$1 port=$2 sessions=$3 messages=$4 start end secs
  start=$(date +%s.%N)
  timeout 120 smtp-source -s "$sessions" -m "$messages" -l 1024 \
    -f sender@bench.test -t rcpt@bench.test 127.0.0.1:"$port"
  end=$(date +%s.%N)
  secs=$(echo "$end - $start" | bc -l)
  printf '%-22s %4s sessions %6s msgs  %6.2f s  %7.0f msg/s\n' \
    "$name" "$sessions" "$messages" "$secs" "$(echo "$messages / $secs" | bc -l)"
}

# Round trips: commands the clients sent (scripts run by hash, the scripts'
# first loading, lease releases), not the commands run inside the scripts.
commands() {
  redis-cli -p $port_redis INFO commandstats | tr -d '\r' |
    awk -F'[:=,]' '/^cmdstat_(evalsha|eval|zrem|script\|load):/ { n += $3 } END { print n + 0 }'
}

for load in "1 2000" "10 10000" "50 10000"; do
  set -- $load
  run "memory store" $port_mem "$@"
  before=$(commands)
  run "redis store" $port_red "$@"
  after=$(commands)
  printf '%-22s %s round trips per message\n' "" "$(echo "scale=2; ($after - $before) / $2" | bc -l)"
done
