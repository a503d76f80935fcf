#!/usr/bin/env bash
# Side-by-side throughput: mailfault and Postfix's smtp-sink, both driven by
# Postfix's smtp-source with the same load, one after the other, on
# loopback only. Every load is bounded in messages and in time.
#
#   bench/compare.sh            # needs smtp-sink and smtp-source (Debian: postfix)
#
# Prints one line per run; the figures go into docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v smtp-source >/dev/null || { echo "smtp-source not found (apt-get install postfix)"; exit 1; }
cargo build --release --quiet
bin=target/release/mailfault
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

# A healthy scenario with nothing to decide: the protocol and capture cost.
printf '[server]\nhostname = "bench.test"\nmax_message_size = "100MB"\n' > "$tmp/healthy.toml"
# The same with ten rules that do not match: the rule engine's cost.
{
  printf '[server]\nhostname = "bench.test"\nmax_message_size = "100MB"\n'
  for i in $(seq 10); do
    printf '[[rule]]\non = ["mail", "rcpt", "message"]\nwhen = { rcpt = "nobody%s@*", mail_from = "/^never[0-9]+@/" }\nreply = "550 5.1.1 no"\n' "$i"
  done
} > "$tmp/rules.toml"

port_sink=26101
port_mf=26102
port_rules=26103
smtp-sink -u nobody 127.0.0.1:$port_sink 1024 > /dev/null 2>&1 &
$bin serve --listen 127.0.0.1:$port_mf="$tmp/healthy.toml" --listen 127.0.0.1:$port_rules="$tmp/rules.toml" \
  --max-connections 10000 --no-watch > "$tmp/mf.out" 2> /dev/null &
sleep 1

run() { # name port sessions messages size [extra smtp-source flags]
  local name=$1 port=$2 sessions=$3 messages=$4 size=$5; shift 5
  local start end secs
  start=$(date +%s.%N)
  timeout 120 smtp-source -s "$sessions" -m "$messages" -l "$size" "$@" \
    -f sender@bench.test -t rcpt@bench.test 127.0.0.1:"$port"
  end=$(date +%s.%N)
  secs=$(echo "$end - $start" | bc -l)
  printf '%-28s %6s sessions %7s msgs %8s B  %7.2f s  %8.0f msg/s\n' \
    "$name" "$sessions" "$messages" "$size" "$secs" "$(echo "$messages / $secs" | bc -l)"
}

echo "one message per connection (smtp-source's default)"
for load in "1 2000 1024" "20 20000 1024" "100 20000 1024" "20 2000 102400"; do
  set -- $load
  run "smtp-sink" $port_sink "$@"
  run "mailfault (no rules)" $port_mf "$@"
  run "mailfault (10 rules)" $port_rules "$@"
done
echo "messages over kept connections (smtp-source -d)"
for load in "20 50000 1024"; do
  set -- $load
  run "smtp-sink" $port_sink "$@" -d
  run "mailfault (no rules)" $port_mf "$@" -d
  run "mailfault (10 rules)" $port_rules "$@" -d
done
