#!/usr/bin/env bash
# One worker thread against two: the same cells on `mailfault serve
# --threads 1` and `--threads 2`, alternating, a fresh server for every run.
# Loopback only; every load is bounded in messages and in time.
#
#   bench/threads.sh [ROUNDS]     # needs smtp-source (Debian: postfix)
#
# Prints messages/s and the server's CPU per message (utime + stime from
# /proc/PID/stat) for each run; the figures go into docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
command -v smtp-source >/dev/null || { echo "smtp-source not found (apt-get install postfix)"; exit 1; }
cargo build --release --quiet
bin=target/release/mailfault
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
printf '[server]\nhostname = "bench.test"\nmax_message_size = "100MB"\n' > "$tmp/healthy.toml"
hz=$(getconf CLK_TCK)

run() { # threads sessions messages size [-d]
  local t=$1 s=$2 m=$3 l=$4 d=${5:-} server smtp start end t0 t1
  : > "$tmp/mf.out" # not the last server's address (see bench/ab.sh)
  $bin serve --threads "$t" --listen 127.0.0.1:0="$tmp/healthy.toml" --no-api --no-watch \
    --max-connections 30000 > "$tmp/mf.out" 2> /dev/null &
  server=$!
  for _ in $(seq 50); do
    smtp=$(sed -n 's#^listening smtp://\([^ ]*\) .*#\1#p' "$tmp/mf.out")
    [ -n "$smtp" ] && break
    sleep 0.1
  done
  start=$(date +%s.%N); t0=$(awk '{print $14 + $15}' "/proc/$server/stat")
  timeout 120 smtp-source -s "$s" -m "$m" -l "$l" $d -f sender@bench.test -t rcpt@bench.test "$smtp"
  end=$(date +%s.%N); t1=$(awk '{print $14 + $15}' "/proc/$server/stat")
  printf 'threads=%s sessions=%-3s size=%-6s %-4s %8.0f msg/s %6.1f server CPU us/msg\n' "$t" "$s" "$l" \
    "${d:+kept}" "$(echo "$m / ($end - $start)" | bc -l)" "$(echo "($t1 - $t0) * 1000000 / $hz / $m" | bc -l)"
  kill "$server"; wait "$server" 2>/dev/null || true
}

for r in $(seq "$rounds"); do
  echo "round $r"
  for cell in "1 5000 1024" "10 20000 1024 -d" "200 5000 1024" "10 2000 102400 -d"; do
    for t in 1 2; do
      # shellcheck disable=SC2086
      run $t $cell
    done
  done
done
