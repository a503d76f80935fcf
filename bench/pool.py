#!/usr/bin/env python3
"""Pools the raw figures of several bench/run.sh runs into one table.

One run's medians move with the machine: on the 2-core virtual machines a
cell's rate moves by up to a quarter from one repetition to the next, on
every server alike, so a median of five repetitions can land a cell below level
in one run and far above it in the next. Pooling runs gives each cell many
pairs instead of five. For each cell and server it prints the pairs (its
rate over smtp-sink's in the same repetition of the same run), their median
and quartiles, how many are at bench.py's LEVEL or more, and the medians of
server CPU a message, over every pair. A pair in which the host stole more
than bench.py's STEAL_NOTED of the machine on either side is left out, and
counted.

    bench/pool.py bench/results/20261201T223812.tsv bench/results/…tsv
"""
import csv
import statistics
import sys
from collections import defaultdict

from bench import LEVEL, STEAL_NOTED, cell_name, cut, shown

REF = "smtp-sink"


def read(paths):
    """{(path, rep, cell): {server: (rate, cpu, steal)}} of the runs that
    did not fail."""
    runs = defaultdict(dict)
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row["msg_per_s"] == "fail":
                    continue
                # As bench.py's cells, less the message count (runs of
                # different --scale pool together).
                cell = (int(row["sessions"]), row["kept"] == "True", int(row["size"]), 0)
                runs[(path, row["rep"], cell)][row["server"]] = (
                    float(row["msg_per_s"]), float(row["cpu_us_per_msg"]),
                    float(row["steal_pct"]) / 100)
    return runs


def pairs(runs):
    """{cell: {server: [(ratio, cpu, ref cpu)]}} and how many pairs steal
    left out."""
    out, noisy = defaultdict(lambda: defaultdict(list)), 0
    for (_, _, cell), per in runs.items():
        ref = per.get(REF)
        for name, (rate, cpu, steal) in per.items():
            if name == REF or ref is None:
                continue
            if max(steal, ref[2]) > STEAL_NOTED:
                noisy += 1
                continue
            out[cell][name].append((rate / ref[0], cpu, ref[1]))
    return out, noisy


def main():
    paths = sys.argv[1:]
    if not paths:
        sys.exit("usage: bench/pool.py RUN.tsv... (raw figures of bench/run.sh runs)")
    by_cell, noisy = pairs(read(paths))
    names = sorted({n for per in by_cell.values() for n in per})
    print(f"{len(paths)} runs pooled; {noisy} pairs left out for steal above {STEAL_NOTED:.0%}")
    print(f"paired ratio to {REF}: median [quartiles], pairs at {LEVEL} or more; "
          f"CPU µs a message, medians ({REF} / server)")
    level = {n: 0 for n in names}
    for cell in sorted(by_cell, key=lambda c: (c[2], c[1], c[0])):
        for name in names:
            got = by_cell[cell].get(name)
            if not got:
                continue
            ratios = [r for r, _, _ in got]
            q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            mid = statistics.median(ratios)
            level[name] += cut(mid) >= LEVEL
            at = sum(cut(r) >= LEVEL for r in ratios)
            print(f"{cell_name(cell):<28} {name:<14} {shown(mid)} [{shown(q1)}–{shown(q3)}] "
                  f"{at:>3}/{len(ratios):<3} cpu {statistics.median(c for _, _, c in got):7.1f} / "
                  f"{statistics.median(c for _, c, _ in got):7.1f}")
    print(f"\ncells whose pooled paired median is {LEVEL} or more:")
    for name in names:
        print(f"  {name:<16} {level[name]}/{len(by_cell)}")


if __name__ == "__main__":
    main()
