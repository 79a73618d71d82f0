"""A reduced `evaluate --baselines` (issue 36) for a machine too small for the full one: only the "Versus the
alternatives" section (training/eval/baselines.py), on chosen k, seeds and ACGAN budget, without the rest of
the report. Without `--population-pipeline`, ours is not measured (a population pipeline would have to be
trained first); the population data the classic tuning and the ACGAN need is simulated under the output
folder with the population recipe, as `evaluate --baselines` does.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/baselines_reduced.py --pipeline checkpoints/demo \
        --data data/sim10c --k 5 --seeds 3 --gan-pretrain 600 --gan-finetune 150 --out runs/baselines/b.json

Writes the section's JSON (b.json), its Markdown (b.md), the figures beside them, and the load average at the
start and the end.

`--ours-from REPORT.json` compares with ours as an earlier `evaluate --fewshot` measured it (its augmentation
trials at the same k and seeds), without re-running it: the trials pair only when that run's real-only
accuracy equals this run's on every seed (same k selection, classifier seed and budget), which is checked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from experiments.common import open_run
    from training.eval import acgan, baselines_report
    from training.eval.baselines import BaselineConfig, baselines_section, summarize
    from training.eval.classic_aug import GRID, ClassicConfig
    from training.eval.context import Pool
    from training.eval.report import _jsonable

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="JSON path; the Markdown and figures go beside it")
    p.add_argument("--k", type=int, nargs="+", default=[5])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-list", type=int, nargs="+", default=None,
                   help="these seeds instead of range(--seeds)")
    p.add_argument("--merge", default=None,
                   help="b.json of an earlier run with the same settings: its trials join these (the classic "
                        "strengths it tuned are reused, not tuned again)")
    p.add_argument("--gan-pretrain", type=int, default=acgan.GanConfig.pretrain_steps)
    p.add_argument("--gan-finetune", type=int, default=acgan.GanConfig.finetune_steps)
    p.add_argument("--grid", choices=("full", "small"), default="full",
                   help="classic tuning grid: full (classic_aug.GRID) or small (its middle values only)")
    p.add_argument("--population-pipeline", default=None, help="measure ours too (few-shot from it)")
    p.add_argument("--population-seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--ours-from", default=None,
                   help="report.json of an earlier evaluate --fewshot run: pair its few-shot trials with "
                        "these")
    args = p.parse_args(argv)

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    pipe, data, ctx, log, out = open_run(args.pipeline, args.data, args.out, args.threads)
    ctx.st = replace(ctx.st, k_values=tuple(args.k), seeds=tuple(args.seed_list or range(args.seeds)))
    earlier = json.loads(Path(args.merge).read_text()) if args.merge else None
    grid = GRID if args.grid == "full" else {k: (v[len(v) // 2],) for k, v in GRID.items()}
    cfg = BaselineConfig(gan=replace(acgan.GanConfig(), pretrain_steps=args.gan_pretrain,
                                     finetune_steps=args.gan_finetune), grid=grid)
    pool = Pool(np.zeros((0, *data.train_x.shape[1:]), np.float32), np.zeros(0, np.int64), [])
    aug = {"population": {"path": args.population_pipeline}} if args.population_pipeline else None
    log(f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} on {os.cpu_count()} cores")
    classic = ClassicConfig(**{k: tuple(v) if k == "transforms" else v
                               for k, v in earlier["classic"]["config"].items()}) if earlier else None
    res = baselines_section(ctx, pool, aug, population_seed=args.population_seed, workers=args.workers,
                            cfg=cfg, classic=classic)
    if earlier:
        if earlier["gan"]["config"] != res["gan"]["config"]:
            raise SystemExit(f"{args.merge} ran another ACGAN budget: {earlier['gan']['config']}")
        res["merged_from"] = dict(path=args.merge, seeds=sorted({t["seed"] for t in earlier["trials"]}),
                                  run=earlier.get("run"))
        res["trials"] = earlier["trials"] + res["trials"]
        res["summary"] = summarize(res["trials"], res["arms"])
        res["classic"].update({k: earlier["classic"][k] for k in ("tuning", "seconds")})
        baselines_report.figures(res, {}, data, data.test_x, data.test_y, ctx.out / "figures")
    load1 = os.getloadavg()
    res["run"] = dict(seconds=time.perf_counter() - t0, load_start=load0, load_end=load1,
                      cores=os.cpu_count(), threads=args.threads, workers=args.workers, argv=sys.argv[1:])
    log(f"done in {res['run']['seconds']:.0f} s; load average at end {load1[0]:.2f} {load1[1]:.2f} "
        f"{load1[2]:.2f}")
    md_extra = ours_from(res, args.ours_from) if args.ours_from else []
    out.write_text(json.dumps(_jsonable(res), indent=2) + "\n")
    md = baselines_report.markdown(json.loads(out.read_text()), figures="figures") + md_extra
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def ours_from(res: dict, report: str) -> list[str]:
    """Pair an earlier run's few-shot trials (ours) with this run's arms: res["ours_from"], Markdown lines."""
    from training.eval.baselines import OURS_ARMS
    from training.eval.stats import format_ci, paired_difference, t_interval

    aug = json.loads(Path(report).read_text())["augmentation"]["trials"]
    lines = ["", f"Ours from `{report}` (not re-run; paired by k and seed):", ""]
    res["ours_from"] = {}
    for k, s in res["summary"].items():
        recs = [r for r in res["trials"] if r["k"] == k]
        theirs = {t["seed"]: t for t in aug if t["k"] == k}
        if any(r["seed"] not in theirs for r in recs):
            lines.append(f"- k = {k}: {report} lacks some of the seeds {[r['seed'] for r in recs]}")
            continue
        gap = max(abs(theirs[r["seed"]]["acc_real"] - r["acc_real"]) for r in recs)
        ours = [theirs[r["seed"]]["acc_augmented"] for r in recs]
        gain = t_interval([o - r["acc_real"] for o, r in zip(ours, recs, strict=True)])
        best = s["best_alternative"]  # by mean gain over (a), real only (gain 0) included
        assert best not in OURS_ARMS
        best_acc = [r["acc_real"] if best == "real" else r["arms"][best]["acc"] for r in recs]
        vs = paired_difference(ours, best_acc)
        res["ours_from"][k] = dict(report=report, real_only_max_gap=gap, acc=ours, gain_ci95=gain,
                                   best_alternative=best, versus_best=vs)
        lines += [f"- k = {k}: real-only accuracies agree within {100 * gap:.1f} points on every seed; ours "
                  f"gain {format_ci(gain)} over (a); ours minus the best alternative here ({best}): "
                  f"{format_ci(vs)} points over {vs['n']} seeds."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
