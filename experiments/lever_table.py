"""One Markdown table from one or more `experiments/filter_levers.py --population-pipeline` runs on the same
seeds: each row's gain (95% Student-t interval over the seeds) and its paired difference to the default row
(unfiltered, the evaluator's m, default adaptation), matched by seed across the runs.

    python -m experiments.lever_table runs/levers-fs/levers.json runs/levers-fs2/levers.json --m 30
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from training.eval.stats import format_ci, paired_difference, t_interval


def label(r: dict) -> str:
    if r["kind"] == "filter":
        return "unfiltered (default)" if r["variant"] == "none" else f"filter {r['variant']}"
    if r["kind"] == "ratio":
        return f"ratio {r['ratio']:g} : 1 (m = {r['m']})"
    return r["kind"].removeprefix("adapt:")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--m", type=int, default=30, help="the default row's m")
    a = p.parse_args()
    rows = [r for f in a.runs for r in json.load(open(f))["rows"]]
    base = {r["seed"]: r["gain"] for r in rows
            if r["kind"] == "filter" and r["variant"] == "none" and r["m"] == a.m}
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(label(r), []).append(r)
    print("| lever (k = 5) | real only | real + synthetic | gain, points [95% CI] | vs default [95% CI] | "
          "identity | rejected |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        seeds = [r["seed"] for r in rs]
        g = [r["gain"] for r in rs]
        diff = (format_ci(paired_difference(g, [base[s] for s in seeds]))
                if name != "unfiltered (default)" and all(s in base for s in seeds) else "—")
        print(f"| {name} | {100 * np.mean([r['acc_real'] for r in rs]):.1f}% | "
              f"{100 * np.mean([r['acc_augmented'] for r in rs]):.1f}% | {format_ci(t_interval(g))} | {diff} "
              f"| {np.mean([r['identity'] for r in rs]):.2f} | "
              f"{100 * np.mean([r['rejection_rate'] for r in rs]):.0f}% |"
              + ("" if len(seeds) == len(base) else f" (seeds {seeds})"))


if __name__ == "__main__":
    main()
