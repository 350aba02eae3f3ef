#!/usr/bin/env python3
"""Prints the tables of BENCHMARKS.md from the output folder of bench/sitting.sh.

    bench/tables.py OUT [BEFORE_LABEL]

Per row: before's and after's median over their runs with the range, after / before (marked
low below 0.85 embedded and below 1.0 over two nodes, issue 11's bar), Ray's figure and after /
Ray. Then the rows measured while both cores are busy. Standard library only.
"""
import glob
import os
import re
import statistics
import sys

ROW = re.compile(r"^(.*?) per second ([\d.]+) \+- ([\d.]+)")


def parse(path):
    """Row name -> (mean, std) of one output file."""
    rows = {}
    if os.path.exists(path):
        for line in open(path):
            m = ROW.match(line.strip())
            if m:
                rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return rows


def runs(out, prefix, who):
    """The runs of one binary: files PREFIX-WHO-ROW-RUN.txt, the rows of a run merged."""
    merged = {}
    for path in sorted(glob.glob(f"{out}/{prefix}-{who}-*-*.txt")):
        run = path.rsplit("-", 1)[1][:-4]
        merged.setdefault(run, {}).update(parse(path))
    return [merged[k] for k in sorted(merged)]


def short(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def full(x):
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.0f}" if x >= 100 else f"{x:.2f}"


def ray_cell(v):
    m, s = v
    if m >= 1000:
        return f"{m:,.0f} ± {s:,.0f}"
    return f"{m:.0f} ± {s:.2f}" if m >= 100 else f"{m:.2f} ± {s:.2f}"


def table(out, prefix, label, ray):
    before, after = runs(out, prefix, "B"), runs(out, prefix, "A")
    names = []
    for r in after:
        names += [n for n in r if n not in names]
    bar = 0.85 if prefix == "emb" else 1.0
    lines = [
        f"| metric | before ({label}), median (range) | after, median (range) | after / before "
        "| Ray 2.60 (1 node) | after / Ray |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        a = [r[n][0] for r in after if n in r]
        b = [r[n][0] for r in before if n in r]
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        q = ma / mb
        mark = " **(low)**" if q < bar else ""
        rv = ray.get(n)
        vs_ray = "—"
        if rv:
            vs_ray = f"{ma / rv[0]:.0f}×" if ma / rv[0] >= 100 else f"{ma / rv[0]:.3g}×"
        lines.append(
            f"| {n} | {full(mb)} ({short(min(b))}–{short(max(b))}) | {full(ma)} "
            f"({short(min(a))}–{short(max(a))}) | {q:.2f}{mark} | "
            f"{ray_cell(rv) if rv else '—'} | {vs_ray} |"
        )
    return "\n".join(lines)


def load(out):
    keys = ["B-1", "B-2", "A-1", "A-2"]
    runs_ = {k: parse(f"{out}/load-{k}.txt") for k in keys}
    lines = [
        "| metric | before, run 1 | before, run 2 | after, run 1 | after, run 2 |",
        "|---|---|---|---|---|",
    ]
    for n in runs_["A-1"]:
        cells = []
        for k in keys:
            v = runs_[k].get(n)
            cells.append(f"{v[0]:,.0f} ± {v[1]:,.0f}" if v else "—")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    label = sys.argv[2] if len(sys.argv) > 2 else "before"
    ray = {}
    for path in glob.glob(f"{out}/ray-*.txt"):
        ray.update(parse(path))
    print("## Embedded\n\n" + table(out, "emb", label, ray) + "\n")
    print("## Two nodes\n\n" + table(out, "2n", label, ray) + "\n")
    print("## The sync rows while both cores are busy\n\n" + load(out))


if __name__ == "__main__":
    main()
