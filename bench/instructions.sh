#!/usr/bin/env bash
# Instructions the server executes per message, counted by valgrind's
# callgrind: unlike a rate or a CPU time, the count does not move with the
# load on the machine, so a change of a few percent shows. One server, one
# session, a fixed number of 1 KB messages from smtp-source; loopback only.
#
#   bench/instructions.sh [--new-conn] [--scenario FILE] [--warm N] [--cache] [MESSAGES]
#       needs valgrind and smtp-source (Debian: valgrind, postfix)
#
# --new-conn     a connection per message (default: one kept connection)
# --scenario F   the scenario to serve (default: no rules)
# --warm N       count only the messages after N others (both runs are sent
#                the N first): 5,000 fill the 50,000-event ring, so what a
#                long-running server pays to evict old events is counted
# --cache        also simulate the caches and print, a message, the data
#                misses in a 2 MiB last level (this machine's L2 a core):
#                memory the message touches that a core no longer holds;
#                and the misses in the first-level instruction cache (32
#                KiB here): code the message runs that is not already there
# MESSAGES       how many (default 2,000)
# MAILFAULT_BIN  a mailfault binary to count instead of this tree's
#                release build (to compare two commits)
#
# Prints the instructions per message, taken from a second run without
# messages, so start-up (the scenario's patterns compiled) is left out; the
# shutdown (every kept message and event freed) stays in. Keeps the
# callgrind profile under target/ for callgrind_annotate.
set -euo pipefail
shopt -s inherit_errexit

mode=(-d)
scenario=""
warm=0
cache=()
while [ $# -gt 0 ]; do
  case "$1" in
    --new-conn) mode=(); shift ;;
    --scenario) scenario=$(realpath "$2"); shift 2 ;;
    --warm) warm=$2; shift 2 ;;
    --cache) cache=(--cache-sim=yes --LL=2097152,16,64); shift ;;
    *) break ;;
  esac
done
messages=${1:-2000}
[ "$messages" -gt 0 ] 2>/dev/null || { echo "MESSAGES must be a positive number" >&2; exit 1; }
[ "$warm" -ge 0 ] 2>/dev/null || { echo "--warm takes a number" >&2; exit 1; }
[ -n "${MAILFAULT_BIN:-}" ] && MAILFAULT_BIN=$(realpath "$MAILFAULT_BIN")
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
command -v smtp-source >/dev/null || { echo "smtp-source not found (apt-get install postfix)" >&2; exit 1; }
if [ -z "${MAILFAULT_BIN:-}" ]; then
  cargo build --release --quiet
  MAILFAULT_BIN=$(realpath target/release/mailfault)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$scenario" ]; then
  printf '[server]\nhostname = "bench.test"\n' > "$tmp/healthy.toml"
  scenario="$tmp/healthy.toml"
fi

# Instructions of one server run that is sent $1 messages, and with --cache
# its last-level data misses (read and write) and first-level instruction
# misses. Only the figures go to standard output.
count() {
  local out="$tmp/callgrind.$1" listening="$tmp/mf.$1.out" server addr sent=0
  valgrind --tool=callgrind "${cache[@]}" --callgrind-out-file="$out" \
    "$MAILFAULT_BIN" serve --listen 127.0.0.1:0="$scenario" --no-api --no-watch \
    > "$listening" 2> "$out.log" &
  server=$!
  for _ in $(seq 300); do
    grep -q '^listening smtp://' "$listening" 2>/dev/null && break
    sleep 0.1
  done
  addr=$(sed -n 's#^listening smtp://\([^ ]*\) .*#\1#p' "$listening")
  if [ -n "$addr" ] && [ "$1" -gt 0 ]; then
    timeout 600 smtp-source -s 1 -m "$1" -l 1024 "${mode[@]}" \
      -f sender@bench.test -t rcpt@bench.test "$addr" >&2 || sent=$?
  fi
  sleep 0.5
  kill -INT "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  [ -n "$addr" ] || { echo "serve printed no listening line (see $out.log)" >&2; return 1; }
  [ "$sent" -eq 0 ] || { echo "smtp-source failed ($sent)" >&2; return 1; }
  local refs misses=0 fetch=0
  refs=$(sed -n 's/.*I *refs: *\([0-9,]*\).*/\1/p' "$out.log" | tr -d ,)
  if [ ${#cache[@]} -gt 0 ]; then
    # "LL misses: N ( R rd + W wr )" counts instruction and data misses;
    # the data line is "LLd misses".
    misses=$(sed -n 's/.*LLd misses: *\([0-9,]*\).*/\1/p' "$out.log" | tr -d ,)
    fetch=$(sed -n 's/.*I1 *misses: *\([0-9,]*\).*/\1/p' "$out.log" | tr -d ,)
  fi
  echo "$refs $misses $fetch"
}

read -r base base_misses base_fetch < <(count "$warm")
read -r total total_misses total_fetch < <(count $((warm + messages)))
[ -n "${base:-}" ] && [ -n "${total:-}" ] || { echo "a counting run failed" >&2; exit 1; }
echo "messages: $messages $([ ${#mode[@]} -eq 0 ] && echo 'a connection each' || echo 'one kept connection'), after $warm; scenario: $scenario"
echo "instructions: $total in all, $base without them"
echo "per message: $(( (total - base) / messages ))"
if [ ${#cache[@]} -gt 0 ]; then
  echo "last-level data misses a message: $(( (total_misses - base_misses) / messages ))"
  echo "first-level instruction misses a message: $(( (total_fetch - base_fetch) / messages ))"
fi
mkdir -p target
profile="target/callgrind.$(date -u +%Y%m%dT%H%M%S).out"
cp "$tmp/callgrind.$((warm + messages))" "$profile"
echo "profile: $profile (callgrind_annotate --inclusive=yes $profile)"
