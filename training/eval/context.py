"""What every section of `dopplergen evaluate` shares: the log, the real splits, generated pools and
classifiers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.normalization import Normalization
from training.data.dataset import load_dataset
from training.data.generated import derive_seed
from training.eval.augmentation import check_disjoint, select_k_per_user
from training.eval.classifier import train_classifier


class Log:
    """Print a line (main process) and keep it in <out>/evaluate.log, with the elapsed time."""

    def __init__(self, path: Path):
        self.path, self.t0 = path, time.perf_counter()
        path.write_text("")

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f} s] {msg}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


@dataclass
class Data:
    """Real train and test splits restricted to the pipeline's users; labels index `users`."""

    train_x: np.ndarray  # (N, C, H, W) dB
    train_y: np.ndarray
    train_paths: list[str]
    test_x: np.ndarray
    test_y: np.ndarray
    test_paths: list[str]
    users: list[str]
    meta: dict[str, Any]
    fingerprint: str
    train_extra: dict[str, np.ndarray] = field(default_factory=dict)  # the train rows' other manifest columns

    @property
    def dyn_range_db(self) -> float:
        return Normalization.from_meta(self.meta).dyn_range_db

    def k_columns(self, pipe: Any, k: int, seed: int, x_k: np.ndarray) -> dict[str, np.ndarray]:
        """The condition columns of the k recordings a trial drew (select_k_per_user's rows), with the
        data set's fixed activity filled in where it has no activity column: what the few-shot enrolment
        and sampling know of the targets' recordings (training/eval/fewshot.py)."""
        idx = select_k_per_user(self.train_y, k, seed)
        if not np.array_equal(self.train_x[idx], x_k):
            raise ValueError("the trial's k recordings are not select_k_per_user's")
        cols = {n: np.asarray(v)[idx] for n, v in self.train_extra.items()}
        fixed = fixed_conditions(pipe, self.meta) or {}
        if "activity" in fixed and "activity" not in cols:
            cols["activity"] = np.asarray([fixed["activity"]] * len(idx), dtype=object)
        return cols


def load_data(path: str, pipe: Any, log: Log) -> Data:
    h, w = pipe.image_size
    ds = load_dataset(path, channels=pipe.channels)
    if tuple(ds.x.shape[-2:]) != (h, w):
        log(f"resizing {path} from {ds.x.shape[-2:]} to the pipeline's {h}x{w}")
        ds = load_dataset(path, channels=pipe.channels, size=(h, w))
    users = [u for u in ds.users if u in pipe.users]
    if not users:
        raise SystemExit(f"no user of {path} ({ds.users[:5]}...) is known to the pipeline "
                         f"({pipe.users[:5]}...)")
    if len(users) < len(ds.users):
        log(f"warning: evaluating {len(users)} of {len(ds.users)} users (the others are unknown to the "
            "pipeline)")
    remap = np.array([users.index(u) if u in users else -1 for u in ds.users])
    tr, te = ds.filter("train", users=users), ds.filter("test", users=users)
    check_disjoint(tr.paths, te.paths)  # the protocol's first rule: no test recording is a train recording
    return Data(tr.x, remap[tr.labels], tr.paths, te.x, remap[te.labels], te.paths, users, ds.meta,
                ds.fingerprint, tr.extra)


def fixed_conditions(pipe: Any, meta: dict[str, Any]) -> dict[str, Any] | None:
    """Conditions that every recording of a data set shares, for a pipeline conditioned on them: the activity
    of a simulated data set made with one activity (walking, unless `simulate --activities` named another).
    Samples for its people request it rather than drawing one from all the pipeline learnt (an activity
    pipeline would otherwise give walking-only targets falls and runs). None: nothing fixed, all drawn."""
    enc = getattr(pipe, "condition_encoder", None)
    sim = meta.get("simulate")
    if enc is None or "activity" not in enc.names or not isinstance(sim, dict):
        return None
    acts = list(sim.get("activities") or ["walk"])
    if len(acts) != 1 or acts[0] not in (enc.spec("activity").get("values") or []):
        return None  # several, or one the pipeline never learnt: drawn
    return {"activity": acts[0]}


@dataclass
class Pool:
    x: np.ndarray  # (N, C, H, W) dB
    y: np.ndarray  # labels into Data.users
    seeds: list[int]
    seconds: float = 0.0


@dataclass
class Context:
    pipe: Any
    data: Data
    st: Any  # EvalSettings
    steps: int
    guidance: float
    sampler: str  # dpmsolver++, ddim, ddpm or vq-diffusion (the CLI's --scheduler)
    seed: int
    device: str
    out: Path
    log: Log
    threads: int | None = None  # CPU threads for the classifiers (None: training.eval.classifier's choice)
    # --condition-guidance (composes every pipeline's guidance); None: plain
    condition_guidance: float | None = None
    guidance_arg: float | None = None  # --guidance as given (None: each pipeline's own default)
    cache: dict[str, Any] = field(default_factory=dict)
    quiet: bool = False  # no progress bars (worker processes)

    @property
    def gen_per_user(self) -> int:
        return self.st.gen_per_user or min(int(np.median(np.bincount(self.data.train_y))),
                                           getattr(self.st, "max_gen_per_user", 0) or 10**9)

    def sample(self, pipe: Any, y: np.ndarray, seeds: list[int], *, steps: int | None = None,
               guidance: float | None = None, sampler: str | None = None, desc: str = "sample",
               batch_size: int | None = None, users: list[str] | None = None,
               given: dict[str, Any] | None = None, enrolled: bool = False,
               init_db: np.ndarray | None = None, strength: float = 1.0) -> Pool:
        """Batched, batch-invariant sampling (pad_to) for labels y (indices into `users`, default the data's
        people) with explicit seeds: the one sampling loop of the evaluator.

        A pipeline with conditions gets what `POST /generate` gives a request: the conditions in `given`
        (e.g. {"activity": "fall"}) as named, the rest drawn from each person's training distribution, seeded
        by the sample's seed. Guidance as the service resolves it (models.sampling.resolve): a request naming
        a condition, or for an `enrolled` person, takes the pipeline's own guidance unless --guidance (or
        `guidance`) gives one; a request naming none takes the evaluator's guidance. `init_db` (N, C, H, W):
        one recording per sample to start from at `strength` (models.sampling.start_row).
        """
        from models.condition_stats import resolve_conditions
        from models.sampling import encode_init, resolve, sample
        from training.progress import progress

        names = [(users or self.data.users)[int(c)] for c in y]
        idx = [pipe.user_encoder.index_of(u) for u in names]
        cond = None
        enc = getattr(pipe, "condition_encoder", None)
        desc_c = (getattr(pipe, "meta", None) or {}).get("conditions") or {}
        if enc is not None and all(n in desc_c for n in enc.names):  # else every condition absent
            cond = enc.values_tensor([resolve_conditions(desc_c, enc.names, u, given, s)
                                      for u, s in zip(names, seeds, strict=True)])
        b = batch_size or self.st.batch_size
        outs, t0 = [], time.perf_counter()
        named = bool(given)
        if guidance is None:
            guidance = getattr(self, "guidance_arg", None) if (named or enrolled) else self.guidance
        # plain guidance unless a condition is named or --condition-guidance composes it
        chosen = resolve(pipe, guidance=guidance, named=named, enrolled=enrolled,
                         condition_guidance=getattr(self, "condition_guidance", None))
        g, gc = chosen.guidance, chosen.condition_guidance
        for i in progress(range(0, len(idx), b), desc=desc, unit="batch", leave=False,
                          disable=getattr(self, "quiet", False)):
            init = None if init_db is None else encode_init(pipe, init_db[i:i + b])
            outs.append(sample(pipe, idx[i:i + b], seeds[i:i + b], num_inference_steps=steps or self.steps,
                               guidance_scale=g, condition_guidance_scale=gc, sampler=sampler or self.sampler,
                               pad_to=b, conditions=None if cond is None else cond[i:i + b], init=init,
                               strength=strength).numpy())
        return Pool(np.concatenate(outs).astype(np.float32), np.asarray(y, np.int64), list(seeds),
                    time.perf_counter() - t0)

    def plan(self, per_user: int, stream: int = 0) -> tuple[np.ndarray, list[int]]:
        """Labels and seeds of per_user samples per user (user-major); stream 0 = the main generated pool."""
        y = np.repeat(np.arange(len(self.data.users)), per_user)
        base = self.seed if stream == 0 else self.seed * 1_000_003 + stream
        return y, [derive_seed(base, self.data.users[c], i % per_user) for i, c in enumerate(y)]

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int, num_classes: int | None = None,
            epochs: int | None = None, time_flip: bool = True):
        kw: dict[str, Any] = ({"epochs": epochs or self.st.classifier_epochs}
                              if (epochs or self.st.classifier_epochs) else {})
        if self.st.classifier_min_steps:
            kw["min_steps"] = self.st.classifier_min_steps
        return train_classifier(x, y, num_classes or len(self.data.users),
                                dyn_range_db=self.data.dyn_range_db,
                                seed=seed, threads=self.threads, time_flip=time_flip, **kw)
