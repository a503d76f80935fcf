#!/usr/bin/env python3
"""The measuring half of bench/run.sh (which installs the peers and builds
mailfault first; run that, not this).

Starts each server on loopback, measures memory per idle session with
bench/hold.py, then drives every server with Postfix's smtp-source over the
same loads, interleaved (each repetition runs every cell on every server
before the next repetition starts, the servers' order rotated by one each
repetition), and prints medians. Every load is bounded in messages and in
time.
"""
import argparse
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
HERE = os.path.dirname(os.path.abspath(__file__))
SESSIONS = [1, 10, 50, 200]
SIZES = [1024, 100 * 1024]
# Messages per run: (per-connection, kept connections), by message size.
MESSAGES = {1024: (5000, 20000), 100 * 1024: (1000, 2000)}
RUN_LIMIT = 120  # seconds for one smtp-source run (times --scale)
# A ratio to smtp-sink this high counts as level with it: a run's rate
# moves about ±10% from one repetition to the next on the 2-core machines,
# at times by a quarter (docs/performance.md, bench/pool.py).
LEVEL = 0.95
# A run during which the host stole more than this share of the machine's
# time is counted as noisy in the summary.
STEAL_NOTED = 0.05


def cut(ratio):
    """A ratio to two places, cut, not rounded (0.9485 is 0.94): what is
    printed and what is counted at LEVEL are the same number."""
    return math.floor(ratio * 100 + 1e-9) / 100


def shown(ratio):
    return f"{cut(ratio):4.2f}"


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--mailfault", required=True)
    p.add_argument("--rules", required=True)
    p.add_argument("--python", required=True)
    p.add_argument("--node-modules", required=True)
    p.add_argument("--quick", action="store_true", help="1 repetition, small loads")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--scale", type=int, default=1,
                   help="messages per run times N: on a fast machine a 1 KB run "
                        "lasts well under a second, and start-up and the 10 ms "
                        "CPU clock tick weigh on it")
    p.add_argument("--idle", type=int, default=10000, help="idle sessions held")
    p.add_argument("--only", default="", help="comma-separated server names")
    a = p.parse_args()
    if a.scale < 1:
        p.error("--scale must be at least 1")
    if a.quick:
        a.reps = 1
        a.idle = min(a.idle, 2000)
    return a


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"server on {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"no server on {port} after {limit} s")


class Server:
    def __init__(self, name, argv, env=None):
        self.name, self.port = name, free_port()
        argv = [a.replace("PORT", str(self.port)) for a in argv]
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def cpu_ticks(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def status_kib(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def servers(a, tmp):
    healthy = os.path.join(tmp, "no-rules.toml")
    with open(healthy, "w") as f:
        f.write('[server]\nhostname = "bench.test"\nmax_message_size = "100MB"\n')
    mf = [a.mailfault, "serve", "--no-watch", "--max-connections", "30000", "--listen"]
    node_env = dict(os.environ, NODE_PATH=a.node_modules)
    specs = [
        ("smtp-sink", ["smtp-sink", "-u", "nobody", "-m", "30000", "127.0.0.1:PORT", "4096"], None),
        ("mailfault", mf + [f"127.0.0.1:PORT={healthy}"], None),
        ("mailfault-100", mf + [f"127.0.0.1:PORT={a.rules}"], None),
        ("aiosmtpd", [a.python, "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:PORT",
                      "-c", "aiosmtpd.handlers.Sink"], None),
        ("nodemailer", ["node", os.path.join(HERE, "sink.js"), "PORT"], node_env),
    ]
    only = set(filter(None, a.only.split(",")))
    return [Server(n, argv, env) for n, argv, env in specs if not only or n in only]


def idle_memory(s, n):
    """KiB per idle session with n held open, from VmRSS before and after."""
    before = s.status_kib("VmRSS")
    hold = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "hold.py"), str(s.port), str(n), "120"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = hold.stdout.readline().split()
    time.sleep(0.5)  # let the server settle the last sessions
    during = s.status_kib("VmRSS")
    hold.stdin.close()
    hold.wait(30)
    held = int(line[1]) if len(line) > 1 else 0
    time.sleep(1.0)
    return held, (during - before) / held if held else float("nan")


def cells(quick, scale):
    for size in SIZES:
        for kept in (False, True):
            for sessions in SESSIONS:
                m = MESSAGES[size][1 if kept else 0] * scale
                if quick:
                    m = max(m // 10, 2 * sessions)
                yield (sessions, kept, size, m)


def cpu_times():
    """The machine's CPU time so far, in ticks: (all, stolen). Stolen is the
    time the host ran something else while this machine had work (the
    `steal` column of /proc/stat, `st` in vmstat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]:
    # guest time is already counted in user.
    return sum(ticks[:8]), ticks[7] if len(ticks) > 7 else 0


def steal_share(before, after):
    """The share of the machine's time stolen between two cpu_times()."""
    total, stolen = after[0] - before[0], after[1] - before[1]
    return stolen / total if total > 0 else 0.0


def load(s, cell, limit):
    """One smtp-source run, stopped after `limit` seconds: (messages/s,
    server CPU µs per message, share of the machine's time stolen by its
    host meanwhile)."""
    sessions, kept, size, m = cell
    argv = ["smtp-source", "-s", str(sessions), "-m", str(m), "-l", str(size),
            "-f", "sender@bench.test", "-t", "rcpt@bench.test", "-M", "client.bench.test"]
    if kept:
        argv.append("-d")
    argv.append(f"127.0.0.1:{s.port}")
    cpu0, t0, machine0 = s.cpu_ticks(), time.monotonic(), cpu_times()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        print(f"  {s.name}: smtp-source over {limit} s, stopped", file=sys.stderr)
        return None
    secs = time.monotonic() - t0
    cpu = (s.cpu_ticks() - cpu0) * 1e6 / CLK_TCK
    stolen = steal_share(machine0, cpu_times())
    if r.returncode != 0:
        print(f"  {s.name}: smtp-source failed: {r.stderr.strip()[:200]}", file=sys.stderr)
        return None
    return m / secs, cpu / m, stolen


def cell_name(cell):
    sessions, kept, size, _ = cell
    how = "kept" if kept else "new conn"
    return f"{sessions:>3} sess, {how:<8}, {size // 1024:>3} KB"


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    mem = next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores "
            f"({cpu}); {int(mem) // 1024 // 1024} GiB; Linux {platform.release()}; "
            f"load average {os.getloadavg()[0]:.2f} at start")


def table(srvs, results, raw):
    names = [s.name for s in srvs]
    ref = "smtp-sink" if "smtp-sink" in names else None
    w = 24
    print("\nmessages/s (median)" + (
        ", ratio to smtp-sink: of the medians, and paired (the median of each\n"
        "repetition's ratio: the servers of a cell run one after another, so\n"
        "drift between repetitions falls on both sides of each ratio)" if ref else ""))
    print(f"{'cell':<28}" + "".join(f"{n:>{w}}" for n in names))
    level = {n: [0, 0, 0] for n in names if n != ref}
    for cell, per in results.items():
        row = f"{cell_name(cell):<28}"
        base = per.get(ref, {}).get("rate") if ref else None
        for n in names:
            rate = per.get(n, {}).get("rate")
            if base and n != ref:
                # A cell smtp-sink ran counts; one this server failed is
                # below level.
                level[n][0] += 1
            if rate is None:
                row += f"{'failed':>{w}}"
            elif base and n != ref:
                paired = paired_ratio(raw[cell].get(n, []), raw[cell].get(ref, []))
                row += f"{rate:>12,.0f} ({shown(rate / base)} " + (
                    f"{shown(paired)})" if paired is not None else "   -)")
                level[n][1] += cut(rate / base) >= LEVEL
                level[n][2] += paired is not None and cut(paired) >= LEVEL
            else:
                row += f"{rate:>{w},.0f}"
        print(row)
    if ref:
        print(f"\ncells where the ratio is {LEVEL} or more (of the medians / paired):")
        for n, (cells_, of_medians, paired) in level.items():
            print(f"  {n:<16} {of_medians}/{cells_} / {paired}/{cells_}")
    print("\nserver CPU µs per message (median)")
    print(f"{'cell':<28}" + "".join(f"{n:>{w}}" for n in names))
    for cell, per in results.items():
        print(f"{cell_name(cell):<28}" + "".join(
            f"{per[n]['cpu']:>{w}.1f}" if per.get(n, {}).get("cpu") is not None else f"{'-':>{w}}"
            for n in names))


def steal_summary(raw):
    """How much of the machine its host took during the runs: rates on a
    virtual machine whose host steals time swing far more than the code
    moves them, so a table is evidence only when this is near zero."""
    shares = [r[2] for per in raw.values() for runs in per.values()
              for r in runs if r is not None]
    if not shares:
        return
    over = sum(x > STEAL_NOTED for x in shares)
    print(f"\nhost steal time during the runs (/proc/stat): median {statistics.median(shares):.1%}, "
          f"most {max(shares):.1%}; {over} of {len(shares)} runs above {STEAL_NOTED:.0%}"
          + (" (a noisy table: compare runs with little steal)" if over else ""))


def paired_ratio(runs, ref_runs):
    """The median over the repetitions of a server's rate over smtp-sink's
    in the same repetition (both runs there: None if none were)."""
    ratios = [r[0] / b[0] for r, b in zip(runs, ref_runs) if r is not None and b is not None]
    return statistics.median(ratios) if ratios else None


def median(xs, i):
    vals = [x[i] for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def main():
    a = args()
    print("machine:", machine())
    print(f"repetitions: {a.reps}{' (quick: noisy, smoke run only)' if a.quick else ''}"
          f"{f'; messages per run times {a.scale}' if a.scale > 1 else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        srvs = servers(a, tmp)
        try:
            run(a, srvs)
        finally:
            for s in srvs:
                s.stop()


def turn(srvs, rep):
    """The servers in the order repetition `rep` runs them: rotated by one
    each repetition, so no server always follows the same one (and meets
    the machine in whatever state that one leaves it) and each takes each
    place in turn."""
    k = rep % len(srvs)
    return srvs[k:] + srvs[:k]


def run(a, srvs):
    idle = {}
    for s in srvs:
        idle[s.name] = idle_memory(s, a.idle)
    raw = {}
    all_cells = list(cells(a.quick, a.scale))
    log = open(os.path.join(HERE, "results", time.strftime("%Y%m%dT%H%M%S.tsv")), "w")
    log.write("rep\tserver\tsessions\tkept\tsize\tmessages\tmsg_per_s\tcpu_us_per_msg"
              "\tsteal_pct\n")
    for rep in range(a.reps):
        for cell in all_cells:
            for s in turn(srvs, rep):
                r = load(s, cell, RUN_LIMIT * a.scale)
                raw.setdefault(cell, {}).setdefault(s.name, []).append(r)
                log.write(f"{rep}\t{s.name}\t" + "\t".join(map(str, cell)) +
                          (f"\t{r[0]:.1f}\t{r[1]:.2f}\t{r[2] * 100:.1f}\n" if r
                           else "\tfail\tfail\tfail\n"))
                log.flush()
        print(f"repetition {rep + 1}/{a.reps} done", file=sys.stderr)
    results = {c: {n: {"rate": median(v, 0), "cpu": median(v, 1)} for n, v in per.items()}
               for c, per in raw.items()}
    table(srvs, results, raw)
    steal_summary(raw)
    print(f"\nmemory: peak (VmHWM) over the whole run; per idle session with N held open")
    for s in srvs:
        held, per = idle[s.name]
        print(f"{s.name:<16} peak {s.status_kib('VmHWM') / 1024:8.1f} MiB   "
              f"idle: {per:6.1f} KiB per session ({held} held)")
    print(f"\nraw figures: {log.name}")


if __name__ == "__main__":
    main()
