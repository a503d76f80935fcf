#!/usr/bin/env bash
# Builds side by side in one cell: each round runs every server once, in
# turn, on a fresh process, so drift on the machine falls on all of them
# alike; prints per server the median rate (the lower middle one for an
# even count), server CPU per message and its user and system parts, then
# every round's figures. Each column is its own median, so user and
# system need not add up to the CPU column, and with each round's figures
# the share of the machine's time its host stole. For telling whether a change
# moved a cell when one run's rate moves ±10%. Loopback only; each run is
# bounded to 120 s, and one that is not done by then stops the script.
#
#   bench/ab.sh ROUNDS "SMTP-SOURCE ARGS" SERVER...
#       needs smtp-source (and smtp-sink for `sink`): Debian's postfix
#
# SERVER is a mailfault binary (served with no rules), BINARY=SCENARIO (a
# mailfault binary serving that scenario file), or `sink` for Postfix's
# smtp-sink. Example, one session with a connection per message:
#
#   bench/ab.sh 8 "-s 1 -m 5000 -l 1024" sink /tmp/mailfault-before target/release/mailfault
#
# and two builds with the 100 rules, 10 kept sessions:
#
#   bench/ab.sh 8 "-s 10 -d -m 30000 -l 1024" /tmp/before=bench/rules-100.toml \
#     target/release/mailfault=bench/rules-100.toml
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C

[ $# -ge 3 ] || { awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" >&2; exit 1; }
rounds=$1 load=$2
shift 2
[ "$rounds" -gt 0 ] 2>/dev/null || { echo "ROUNDS must be a positive number" >&2; exit 1; }
command -v smtp-source >/dev/null || { echo "smtp-source not found (apt-get install postfix)" >&2; exit 1; }
messages=$(sed -n 's/.*-m \([0-9]*\).*/\1/p' <<<"$load")
[ -n "$messages" ] || { echo "the smtp-source arguments need -m MESSAGES" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
printf '[server]\nhostname = "bench.test"\n' > "$tmp/no-rules.toml"

# A SERVER argument's binary, and its scenario file (none: no rules).
bin_of() { echo "${1%%=*}"; }
scenario_of() { [ "${1%%=*}" != "$1" ] && echo "${1#*=}"; true; }

# Starts one server; sets $pid and $addr. mailfault takes a free port itself
# and prints it (as in the other scripts here); smtp-sink is given one.
start() {
  local port out="$tmp/serve.out"
  if [ "$1" = sink ]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    smtp-sink -u nobody -m 30000 "127.0.0.1:$port" 4096 & pid=$!
    addr=127.0.0.1:$port
  else
    local scenario=$tmp/no-rules.toml
    [ -n "$(scenario_of "$1")" ] && scenario=$(realpath "$(scenario_of "$1")")
    # Emptied here, not only by the redirect below: that happens in the
    # background, and the loop could read the last server's address first
    # (smtp-source then got "Connection refused").
    : > "$out"
    "$(bin_of "$1")" serve --listen "127.0.0.1:0=$scenario" --no-api --no-watch \
      --max-connections 30000 > "$out" 2> /dev/null & pid=$!
    addr=""
  fi
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    if [ "$1" = sink ]; then
      python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2).close()" \
        2>/dev/null && return
    else
      addr=$(sed -n 's#^listening smtp://\([^ ]*\) .*#\1#p' "$out")
      [ -n "$addr" ] && return
    fi
    sleep 0.05
  done
  echo "$1 did not start listening" >&2
  exit 1
}

# user and system ticks of a process
ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# the machine's ticks so far, all and stolen by the host (/proc/stat's
# steal column, vmstat's st; guest time is already in user)
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9; exit}' /proc/stat; }

hz=$(getconf CLK_TCK)
declare -A rates cpus users systems steals
for _ in $(seq "$rounds"); do
  for server in "$@"; do
    start "$server"
    read -r u0 s0 < <(ticks "$pid")
    read -r m0 st0 < <(machine_ticks)
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086 # the load is a list of arguments
    timeout 120 smtp-source $load -f sender@bench.test -t rcpt@bench.test "$addr" > /dev/null ||
      { echo "smtp-source against $server failed or ran over 120 s" >&2; exit 1; }
    t1=$(date +%s.%N)
    read -r u1 s1 < <(ticks "$pid")
    read -r m1 st1 < <(machine_ticks)
    steals[$server]+="$(echo "($st1 - $st0) * 100 / ($m1 - $m0 + 1)" | bc -l | xargs printf '%.0f') "
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rates[$server]+="$(echo "$messages / ($t1 - $t0)" | bc -l | cut -d. -f1) "
    users[$server]+="$(echo "($u1 - $u0) * 1000000 / $hz / $messages" | bc -l | xargs printf '%.1f') "
    systems[$server]+="$(echo "($s1 - $s0) * 1000000 / $hz / $messages" | bc -l | xargs printf '%.1f') "
    cpus[$server]+="$(echo "($u1 - $u0 + $s1 - $s0) * 1000000 / $hz / $messages" | bc -l | xargs printf '%.1f') "
  done
done

# A server's name in the table: the binary's, and its scenario's if any.
label() {
  local sc
  sc=$(scenario_of "$1")
  if [ -z "$sc" ]; then basename "$1"; else echo "$(basename "$(bin_of "$1")")=$(basename "$sc")"; fi
}
median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
echo "load: smtp-source $load; $rounds rounds; medians, then each round"
printf '%-28s %8s %9s %8s %8s\n' server msg/s "cpu µs" user system
for server in "$@"; do
  printf '%-28s %8s %9s %8s %8s\n' "$(label "$server")" \
    "$(median <<<"${rates[$server]}")" "$(median <<<"${cpus[$server]}")" \
    "$(median <<<"${users[$server]}")" "$(median <<<"${systems[$server]}")"
done
# Rates on a virtual machine swing with the time its host steals: an A/B
# is evidence only when the steal row stays near zero.
for server in "$@"; do
  printf '%-28s msg/s: %s\n%-28s cpu:   %s\n%-28s steal: %s(%% of the machine)\n' "$(label "$server")" \
    "${rates[$server]}" "" "${cpus[$server]}" "" "${steals[$server]}"
done
