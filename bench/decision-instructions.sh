#!/usr/bin/env bash
# Instructions one decision of `benches/decision.rs` takes, counted by
# valgrind's callgrind inside `Engine::decide` only: unlike the Criterion
# times, the count does not move with the load on the machine.
#
#   bench/decision-instructions.sh [FILTER...]
#       needs valgrind (Debian: valgrind)
#
# FILTER   a Criterion filter (a regular expression over the benchmark
#          names), one count each; default: every group at 1, 100 and
#          1,000 rules
# DECISION_BENCH  a decision bench binary to count instead of this tree's
#                 (to compare two commits)
#
# Each filter runs the bench binary under callgrind with Criterion's
# `--profile-time 2`; the count is the instructions inside `decide` over
# the decisions made (its calls of `rules_from`, one a decision).
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
if [ $# -eq 0 ]; then
  set -- 'RCPT/1$' 'RCPT/100$' 'RCPT/1000$' 'time/1$' 'time/100$' 'time/1000$'
fi
bin=${DECISION_BENCH:-}
if [ -z "$bin" ]; then
  bin=$(cargo bench --bench decision --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and m.get("target", {}).get("name") == "decision":
        print(m["executable"])')
fi
[ -x "$bin" ] || { echo "no decision bench binary (cargo bench --bench decision --no-run)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for filter in "$@"; do
  valgrind --tool=callgrind --toggle-collect='*Engine::decide*' \
    --callgrind-out-file="$tmp/out" "$bin" --bench --profile-time 2 "$filter" >/dev/null 2>&1
  python3 - "$tmp/out" "$filter" <<'EOF'
import re, sys
names, total, decisions, callee = {}, 0, 0, ""
for line in open(sys.argv[1]):
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        kind, id_, name = m.groups()
        if name:
            names[id_] = name
        if kind == "cfn":
            callee = names.get(id_, "")
        continue
    m = re.match(r"calls=(\d+)", line)
    if m and re.search(r"Engine::rules_from$", callee):
        decisions += int(m.group(1))
if decisions == 0:
    sys.exit(f"{sys.argv[2]}: no decision counted")
print(f"{sys.argv[2]:<14} {total / decisions:>7.0f} instructions a decision ({decisions} decisions)")
EOF
done
