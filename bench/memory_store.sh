#!/usr/bin/env bash
# The memory store's cost, two builds side by side: a scenario with a rate
# limit at MAIL and a greylist at RCPT (passed once first), smtp-source
# with 10 kept sessions and 20,000 messages of 1 KB, the builds
# alternating for ROUNDS rounds. Loopback only; every load is bounded.
#
#   bench/memory_store.sh OLD_BINARY NEW_BINARY [ROUNDS]   # needs smtp-source (postfix)
#
# Prints messages/s and the server's CPU per message for every run.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/memory_store.sh OLD_BINARY NEW_BINARY [ROUNDS]"; exit 2; }
command -v smtp-source >/dev/null || { echo "smtp-source not found (apt-get install postfix)"; exit 1; }
old=$1 new=$2 rounds=${3:-3}
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
hz=$(getconf CLK_TCK)

run() { # label binary port
  local label=$1 bin=$2 port=$3 pid t0 t1 c0 c1
  "$bin" serve --listen 127.0.0.1:$port="$tmp/s.toml" --no-api --no-watch \
    --max-connections 30000 > /dev/null 2>&1 &
  pid=$!
  sleep 0.5
  # The greylist's first attempt, then its window: every later message passes.
  smtp-source -m 1 -f sender@bench.test -t rcpt@bench.test 127.0.0.1:$port > /dev/null 2>&1 || true
  sleep 1.2
  t0=$(date +%s.%N); c0=$(awk '{print $14 + $15}' /proc/$pid/stat)
  timeout 120 smtp-source -s 10 -m 20000 -l 1024 -d -f sender@bench.test -t rcpt@bench.test 127.0.0.1:$port
  t1=$(date +%s.%N); c1=$(awk '{print $14 + $15}' /proc/$pid/stat)
  printf '%-4s %7.0f msg/s  %5.1f server CPU us/msg\n' "$label" \
    "$(echo "20000 / ($t1 - $t0)" | bc -l)" "$(echo "($c1 - $c0) * 1000000 / $hz / 20000" | bc -l)"
  kill $pid; wait $pid 2>/dev/null || true
}

for r in $(seq "$rounds"); do
  run old "$old" 26301
  run new "$new" 26302
done
