"""Filters for synthetic spectrograms: draw more candidates than needed, keep the ones that pass.

- `physics`: kinematic sifting (Erol, Gurbuz & Amin, TAES 2020). Each candidate's torso speed, upper-envelope
  speed and cadence (the read-outs of training.eval.metrics) must lie within `z_max` robust standard
  deviations (1.4826 MAD, floored at `rel_floor` of the median) of the requested person's reference read-outs:
  real recordings when given, else the person's own candidates (then it only removes outliers among them).
- `confidence`: classifier affinity, as SynCheck does (MobiSys 2025): a reference classifier trained on real
  recordings must give the requested person a probability >= `tau`.
- `diversity`: k-center greedy selection (Gonzalez 1985; Sener & Savarese, ICLR 2018) in the reference
  classifier's feature space among the candidates the other filters kept, instead of the first n.
Pure functions on arrays; the callers (generate, the augmentation protocol) decide which real data is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FILTERS = ("physics", "confidence", "diversity")
READOUTS = ("torso_mps", "envelope_mps", "cadence_spm")


def parse_filters(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """'physics,confidence' / ['physics'] / 'none' / '' -> a validated tuple in FILTERS order."""
    if spec is None:
        return ()
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    names = [] if names == ["none"] else names
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; choose from {', '.join(FILTERS)} "
                         "(comma-separated) or none")
    return tuple(f for f in FILTERS if f in names)


@dataclass(frozen=True)
class FilterConfig:
    filters: tuple[str, ...] = ()  # subset of FILTERS; () = keep the first n candidates (no over-generation)
    factor: float = 3.0  # candidates drawn per requested sample when any filter is on
    tau: float = 0.5  # confidence: minimum probability of the requested person
    z_max: float = 3.0  # physics: largest robust z-score allowed on any read-out
    # physics: the robust std is at least this fraction of the median (k = 5 has tiny MADs)
    rel_floor: float = 0.05
    fill: bool = False  # too few pass: top up with the best-scored rejects (True) or return fewer (False)

    def __post_init__(self):
        object.__setattr__(self, "filters", parse_filters(self.filters))
        if self.factor < 1 or not 0 <= self.tau <= 1 or self.z_max <= 0 or self.rel_floor < 0:
            raise ValueError("need factor >= 1, 0 <= tau <= 1, z_max > 0, rel_floor >= 0")

    def candidates(self, n: int) -> int:
        """Candidates to draw for n wanted samples."""
        return int(math.ceil(n * self.factor)) if self.filters else n

    @property
    def needs_classifier(self) -> bool:
        return "confidence" in self.filters or "diversity" in self.filters


# ---- physics: kinematic sifting ----------------------------------------------------------------------------
def readouts(x_db: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """(N, 3) torso speed (m/s), upper-envelope speed (m/s), cadence (steps/min) of (N, C, H, W) dB images."""
    from training.eval.metrics import kinematic_readouts

    r = kinematic_readouts(np.asarray(x_db), np.zeros(len(x_db), np.int64), ["all"], meta)["all"]
    return np.stack([np.asarray(r[q], np.float64) for q in READOUTS], axis=1).reshape(
        len(x_db), len(READOUTS))


@dataclass
class KinematicReference:
    """Per person (row = label): median and robust std of each read-out, and the share of valid read-outs."""

    median: np.ndarray  # (U, 3)
    scale: np.ndarray  # (U, 3)
    valid: np.ndarray  # (U, 3) share of finite read-outs
    source: str  # what the statistics were measured on


def kinematic_reference(r: np.ndarray, y: np.ndarray, num_users: int, rel_floor: float,
                        source: str) -> KinematicReference:
    """Median and max(1.4826 MAD, rel_floor |median|) per person and read-out; NaN rows for a person without
    data."""
    med, scale, valid = (np.full((num_users, r.shape[1]), np.nan) for _ in range(3))
    for u in range(num_users):
        ru = r[np.asarray(y) == u]
        for q in range(r.shape[1]):
            v = ru[:, q][np.isfinite(ru[:, q])]
            valid[u, q] = len(v) / len(ru) if len(ru) else np.nan
            if len(v):
                med[u, q] = np.median(v)
                scale[u, q] = max(1.4826 * np.median(np.abs(v - med[u, q])), rel_floor * abs(med[u, q]), 1e-9)
    return KinematicReference(med, scale, valid, source)


def physics_z(r: np.ndarray, y: np.ndarray, ref: KinematicReference) -> np.ndarray:
    """(N,) largest |read-out - median| / scale over the read-outs. A missing read-out (NaN) counts as
    infinitely far when most of the person's reference read-outs are valid; read-outs the reference lacks are
    skipped."""
    y = np.asarray(y, np.int64)
    z = np.abs(r - ref.median[y]) / ref.scale[y]  # (N, 3)
    usable = np.isfinite(ref.median[y]) & (ref.valid[y] >= 0.5)
    z = np.where(usable & ~np.isfinite(r), np.inf, z)
    z = np.where(usable, z, 0.0)
    return z.max(axis=1)


# ---- confidence and diversity: the reference classifier ----------------------------------------------------
def confidence(clf: Any, x_db: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) softmax probability the classifier gives the requested person (label y)."""
    logits = np.asarray(clf.logits(x_db), np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p[np.arange(len(y)), np.asarray(y, np.int64)]


def k_center(feats: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Greedy k-center (farthest-point) selection of n rows, beginning at `start` (Gonzalez 1985)."""
    f = np.asarray(feats, np.float64).reshape(len(feats), -1)
    n = min(n, len(f))
    chosen = [int(start)]
    dist = np.linalg.norm(f - f[start], axis=1)
    while len(chosen) < n:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(f - f[i], axis=1))
    return np.asarray(chosen, np.int64)


# ---- selection ---------------------------------------------------------------------------------------------
@dataclass
class Selection:
    # kept candidates, user-major, candidate order within a person (k-center order with diversity)
    index: np.ndarray
    report: dict[str, Any]


def select(y: np.ndarray, n_per_user: int, num_users: int, cfg: FilterConfig, *, z: np.ndarray | None = None,
           conf: np.ndarray | None = None, feats: np.ndarray | None = None) -> Selection:
    """Keep up to n_per_user candidates per person that pass the hard filters (physics, confidence), picked by
    k-center in feature space (diversity) or in candidate order; report the rejection rate of each filter."""
    y = np.asarray(y, np.int64)
    on = set(cfg.filters)
    for name, arr in (("physics", z), ("confidence", conf), ("diversity", feats)):
        if name in on and arr is None:
            raise ValueError(f"filter {name!r} needs its scores")
    ok_p = z <= cfg.z_max if "physics" in on else np.ones(len(y), bool)
    ok_c = conf >= cfg.tau if "confidence" in on else np.ones(len(y), bool)
    # Ranking for top-ups: confident first, then physically closest.
    rank = np.lexsort(((z if z is not None else np.zeros(len(y))),
                       -(conf if conf is not None else np.zeros(len(y)))))
    kept, topped, short, not_diverse = [], 0, 0, 0
    per_user: dict[int, dict[str, int]] = {}
    for u in range(num_users):
        idx = np.flatnonzero(y == u)
        if len(idx) == 0:
            continue  # a person nobody asked for (e.g. only in the reference data)
        passed = idx[ok_p[idx] & ok_c[idx]]
        if "diversity" in on and len(passed) > n_per_user:
            start = int(np.argmax(conf[passed])) if conf is not None else _nearest_mean(feats[passed])
            chosen = passed[k_center(feats[passed], n_per_user, start)]
            not_diverse += len(passed) - len(chosen)
        else:
            chosen = passed[:n_per_user]
        if len(chosen) < n_per_user and cfg.fill:
            taken = set(chosen.tolist())
            rest = [i for i in rank if y[i] == u and i not in taken][: n_per_user - len(chosen)]
            topped += len(rest)
            chosen = np.concatenate([chosen, np.asarray(rest, np.int64)])
        short += n_per_user - len(chosen)
        per_user[u] = dict(candidates=int(len(idx)), passed=int(len(passed)), kept=int(len(chosen)))
        kept.append(chosen)
    index = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    n = max(len(y), 1)
    per_filter = {}
    if "physics" in on:
        per_filter["physics"] = dict(rejected=int((~ok_p).sum()), rate=float((~ok_p).sum() / n))
    if "confidence" in on:
        per_filter["confidence"] = dict(rejected=int((~ok_c).sum()), rate=float((~ok_c).sum() / n))
    if "diversity" in on:
        per_filter["diversity"] = dict(rejected=not_diverse, rate=not_diverse / n)
    report = dict(config=asdict(cfg), candidates=int(len(y)), requested=int(n_per_user * len(per_user)),
                  kept=int(len(index)),
                  rejection_rate=1.0 - len(index) / n, passed_hard_filters=int((ok_p & ok_c).sum()),
                  per_filter=per_filter, topped_up=topped, shortfall=short, per_user=per_user)
    return Selection(index.astype(np.int64), report)


def _nearest_mean(f: np.ndarray) -> int:
    return int(np.argmin(np.linalg.norm(f - f.mean(axis=0), axis=1)))


def filter_candidates(x_db: np.ndarray, y: np.ndarray, n_per_user: int, num_users: int, cfg: FilterConfig, *,
                      meta: dict[str, Any] | None = None, clf: Any = None,
                      ref_readouts: np.ndarray | None = None,
                      ref_y: np.ndarray | None = None,
                      ref_source: str = "real reference recordings") -> Selection:
    """Score candidates (x_db, labels y) with what `cfg` needs, then `select`.

    physics: against (ref_readouts, ref_y) when given (persons without reference rows fall back to their own
    candidates), else against each person's own candidates. confidence/diversity: `clf`
    (training.eval.classifier).
    """
    on = set(cfg.filters)
    z = conf = feats = None
    source = None
    if "physics" in on:
        if meta is None:
            raise ValueError("the physics filter needs the dataset's radar axes (meta)")
        r = readouts(x_db, meta)
        own = kinematic_reference(r, y, num_users, cfg.rel_floor, "the person's own candidates")
        ref, source = own, own.source
        if ref_readouts is not None and ref_y is not None and len(ref_y):
            real = kinematic_reference(np.asarray(ref_readouts), ref_y, num_users, cfg.rel_floor, ref_source)
            missing = ~np.isfinite(real.median).any(axis=1)  # persons without reference recordings
            for a, b in ((real.median, own.median), (real.scale, own.scale), (real.valid, own.valid)):
                a[missing] = b[missing]
            ref, source = real, ref_source + (f" ({int(missing.sum())} person(s) on their own candidates)"
                                                 if missing.any() else "")
        z = physics_z(r, y, ref)
    if cfg.needs_classifier:
        if clf is None:
            raise ValueError("the confidence and diversity filters need a reference classifier "
                             "trained on real data")
        conf = confidence(clf, x_db, y)
        feats = clf.features(x_db) if "diversity" in on else None
    sel = select(y, n_per_user, num_users, cfg, z=z, conf=conf, feats=feats)
    sel.report["physics_reference"] = source
    return sel


def summary_line(report: dict[str, Any]) -> str:
    """One line: kept / candidates, overall and per-filter rejection rates."""
    parts = ", ".join(f"{k} {100 * v['rate']:.1f}%" for k, v in report["per_filter"].items()) or "no filter"
    extra = (f"; {report['topped_up']} topped up" if report["topped_up"] else "") + (
        f"; {report['shortfall']} short of the {report['requested']} requested"
        if report["shortfall"] else "")
    return (f"filter: kept {report['kept']} of {report['candidates']} candidates (rejection rate "
            f"{100 * report['rejection_rate']:.1f}%; rejected by {parts}{extra})")


def filter_with_reference(x_db: np.ndarray, persons: Sequence[str], n_per_user: int, cfg: FilterConfig, *,
                          meta: dict[str, Any], reference: str | None = None, seed: int = 0) -> Selection:
    """`filter_candidates` for an export: candidates of named persons, reference = a real dataset folder's
    train split (its read-outs for physics; a reference CNN trained on it for confidence and diversity), or
    none (physics only)."""
    from training.data.dataset import load_dataset
    from training.eval.classifier import train_classifier

    names = list(dict.fromkeys(persons))
    clf = ref_r = ref_y = None
    space = names
    if reference is not None:
        ds = load_dataset(reference, channels=x_db.shape[1], size=tuple(x_db.shape[-2:]))
        ds = ds.filter("train") if "train" in set(ds.splits.tolist()) else ds
        # labels: the reference's, then the rest
        space = list(ds.users) + [u for u in names if u not in ds.users]
        missing = [u for u in names if u not in ds.users]
        if cfg.needs_classifier and missing:
            raise SystemExit(f"--reference {reference} has no recordings of {missing}: the confidence and "
                             "diversity filters need every exported person in it")
        if "physics" in cfg.filters:
            ref_r, ref_y = readouts(ds.x, {**meta, **ds.meta}), ds.labels  # its own axes (after any resize)
        meta = {**ds.meta, **meta}  # the candidates' axes: the pipeline's, else the reference's
        if cfg.needs_classifier:
            clf = train_classifier(ds.x, ds.labels, len(ds.users), dyn_range_db=ds.dyn_range_db, seed=seed)
    elif cfg.needs_classifier:
        raise SystemExit("--filter confidence/diversity needs --reference DATA: real recordings of the "
                         "exported persons to train the reference classifier on")
    y = np.array([space.index(p) for p in persons], np.int64)
    try:
        return filter_candidates(x_db, y, n_per_user, len(space), cfg, meta=meta, clf=clf, ref_readouts=ref_r,
                                 ref_y=ref_y, ref_source=f"{reference} (train split)")
    except KeyError as e:
        raise SystemExit("the physics filter needs the radar axes in the pipeline's dataset meta "
                         f"({e})") from None
