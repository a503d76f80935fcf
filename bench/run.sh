#!/usr/bin/env bash
# Benchmark harness: mailfault beside Postfix's smtp-sink, aiosmtpd and
# nodemailer's smtp-server, all driven by Postfix's smtp-source with the
# same loads, interleaved, medians of several repetitions. Loopback only;
# every load is bounded in messages and in time.
#
#   bench/run.sh            # the full table (about 25 minutes on 2 cores)
#   bench/run.sh --quick    # a smoke run: 1 repetition, small loads
#   bench/run.sh --reps 5   # more repetitions
#   bench/run.sh --scale 4  # four times the messages per run (a fast machine)
#
# Installs what it needs the first time: smtp-source and smtp-sink (Debian
# package postfix, installed without starting Postfix), aiosmtpd (PyPI, in
# a virtualenv under bench/.peers) and smtp-server (npm, under bench/.peers).
# Prints messages/s per cell, the ratio to smtp-sink (of the medians, and
# paired: the median of each repetition's ratio), how many cells are at
# 0.95 of smtp-sink or above, server CPU µs per message, how much of the
# machine's time its host stole during the runs (a table with steal time
# is noise, not evidence), peak memory and memory per idle session. Raw
# figures, each run's steal time with them, go to bench/results/. The
# figures belong in docs/performance.md with the machine they were
# measured on.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=bench/.peers

die() { echo "bench/run.sh: $*" >&2; exit 1; }

install_postfix_tools() {
  command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null && return
  [ "$(id -u)" = 0 ] || die "smtp-source/smtp-sink missing: apt-get install postfix (as root)"
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Never start Postfix itself: only its two test programs are wanted.
  local rc=/usr/sbin/policy-rc.d made=""
  if [ ! -e $rc ]; then printf '#!/bin/sh\nexit 101\n' > $rc; chmod +x $rc; made=1; fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postfix >/dev/null
  [ -n "$made" ] && rm -f $rc
  command -v smtp-source >/dev/null || die "postfix installed but smtp-source not found"
}

install_aiosmtpd() {
  [ -x $peers/venv/bin/python ] && $peers/venv/bin/python -c 'import aiosmtpd' 2>/dev/null && return
  python3 -m venv $peers/venv
  $peers/venv/bin/pip install -q 'aiosmtpd==1.4.6'
}

install_smtp_server() {
  [ -d $peers/node/node_modules/smtp-server ] && return
  command -v npm >/dev/null || die "npm not found (apt-get install npm)"
  mkdir -p $peers/node
  npm install --silent --no-audit --no-fund --prefix $peers/node 'smtp-server@3' >/dev/null
}

# 99 rules that never match at MAIL, RCPT and the end of data, then one
# that matches the recipient smtp-source sends to.
gen_rules() {
  printf '# 100 rules for bench/run.sh: 99 that do not match at MAIL, RCPT and the\n'
  printf '# end of data, then one that matches the last recipient (rcpt@bench.test),\n'
  printf '# so every message is checked against all of them. Made by bench/run.sh'"'"'s\n'
  printf '# generator; do not edit by hand.\n\n'
  printf '[server]\nhostname = "bench.test"\nmax_message_size = "100MB"\n\n'
  local i when
  for i in $(seq 99); do
    case $((i % 3)) in
      0) when="{ rcpt = \"nobody$i@*\" }" ;;
      1) when="{ mail_from = \"user$i@example$i.test\" }" ;;
      2) when="{ mail_from = \"/^never$i[0-9]+@/\" }" ;;
    esac
    printf '[[rule]]\nname = "miss %s"\non = ["mail", "rcpt", "message"]\nwhen = %s\nreply = "550 5.7.1 Never sent"\n\n' "$i" "$when"
  done
  printf '[[rule]]\nname = "the recipient"\non = "rcpt"\nwhen = { rcpt = "rcpt@bench.test" }\nreply = "250 2.1.5 Ok"\n'
}

if [ "${1:-}" = "--gen-rules" ]; then gen_rules > bench/rules-100.toml; exit 0; fi

install_postfix_tools
install_aiosmtpd
install_smtp_server
cargo build --release --locked --quiet
target/release/mailfault check bench/rules-100.toml >/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p bench/results
exec python3 bench/bench.py \
  --mailfault target/release/mailfault \
  --rules bench/rules-100.toml \
  --python $peers/venv/bin/python \
  --node-modules $peers/node/node_modules \
  "$@"
