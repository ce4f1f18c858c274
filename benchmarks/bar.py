"""The issue's bar from a bench_cpu.py results.json: spc's geometric-mean speedup
over the best of the named baselines per matrix, per (op, N, family).

    python benchmarks/bar.py bench_out/final/results.json --against scipy torch
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict


def speedups(records, against, op):
    best = defaultdict(float)
    mine = {}
    for rec in records:
        if rec["op"] != op or rec.get("status") != "ok":
            continue
        key = (rec["n"], rec["family"], rec["matrix"])
        if rec["system"] == "spc":
            mine[key] = rec["gflops"]
        elif rec["system"] in against:
            best[key] = max(best[key], rec["gflops"])
    out = defaultdict(list)
    for key, g in mine.items():
        if best.get(key):
            out[key[:2]].append(g / best[key])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("--against", nargs="+", default=["scipy", "torch"])
    p.add_argument("--op", default="spmm")
    args = p.parse_args(argv)
    records = json.load(open(args.results))["records"]
    print(f"spc {args.op} over the best of {', '.join(args.against)} (geometric mean per family)")
    print("| N | family | geomean | spc wins | matrices |\n|---|---|---|---|---|")
    for (n, fam), ratios in sorted(speedups(records, set(args.against), args.op).items()):
        gm = statistics.geometric_mean(ratios)
        wins = sum(x > 1 for x in ratios)
        print(f"| {n} | {fam} | {gm:.2f}x | {wins} | {len(ratios)} |")


if __name__ == "__main__":
    main()
