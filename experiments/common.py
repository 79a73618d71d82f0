"""Set-up shared by the issue-17 measurements (filter_levers, texture): the evaluator's context on a pipeline
and a dataset, and its classifier budget rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# training.eval.classifier defaults, as the evaluator's budget uses them
EPOCHS, FLOOR_STEPS, BATCH = 20, 150, 64


def open_run(pipeline: str, data: str, out: str, threads: int) -> tuple[Any, Any, Any, Any, Path]:
    """(pipe, data, ctx, log, out): the evaluated pipeline, its data, an evaluator Context at the pipeline's
    sampling defaults and default EvalSettings, and a log next to `out`."""
    from models.pipeline import DopplerPipeline
    from models.sampling import resolve
    from training.eval.context import Context, Log, load_data
    from training.eval.evaluate import EvalSettings

    out_p = Path(out)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    log = Log(out_p.with_suffix(".log"))
    pipe = DopplerPipeline.load(pipeline, device="cpu")
    d = load_data(data, pipe, log)
    chosen = resolve(pipe)
    steps, guidance, sched = chosen.steps, chosen.guidance, chosen.sampler
    ctx = Context(pipe=pipe, data=d, st=EvalSettings(), steps=steps, guidance=guidance, sampler=sched, seed=0,
                  device="cpu", out=out_p.parent, log=log, threads=threads)
    return pipe, d, ctx, log, out_p


def fit_score(ctx: Any, x: np.ndarray, y: np.ndarray, seed: int, n_total: int) -> tuple[Any, float]:
    """The reference CNN on (x, y) at the evaluator's optimiser budget for n_total recordings; (clf, test
    accuracy)."""
    from training.eval.classifier import accuracy

    budget = max(FLOOR_STEPS, EPOCHS * -(-n_total // BATCH))
    clf = ctx.fit(x, y, seed=seed, epochs=max(1, -(-budget // -(-len(x) // BATCH))))
    return clf, accuracy(clf, ctx.data.test_x, ctx.data.test_y)
