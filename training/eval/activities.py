"""The activities section of `dopplergen evaluate`, for a pipeline conditioned on `activity` and data with an
`activity` column (docs/evaluation.md, "Activities").

Trained people, per activity (samples requested with that activity, the other conditions drawn for it):
- activity affinity: a fresh activity classifier (the reference CNN, trained on the real train split's
  activities) names the requested activity for generated samples, against its accuracy on real test
  recordings of that activity (ratio; target >= 0.8);
- identity affinity: the reference person classifier on the same samples vs real test recordings;
- physics: the activity's read-outs (training/eval/metrics.activity_readouts) generated vs real.

New people (simulated like the data, with another seed: people the pipeline never saw), enrolled from k = 5
*walking* recordings each (models.enrolment at `dopplergen enroll`'s defaults) and generated doing every
activity:
- identity per activity: a person classifier over the new people (their real train split, every activity)
  names the new person for their generated samples, against their real test recordings (target >= 0.7x);
- few-shot gains over `seeds`, with 95% t-intervals: an activity classifier from k = 5 real per (person,
  activity) vs the same plus m generated per (person, activity); and a person classifier from the 5 walking
  recordings alone vs plus m generated per activity, both scored on the new people's real test recordings of
  every activity.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.eval.classifier import accuracy
from training.eval.stats import t_interval

K = 5  # real recordings per (person, activity), and walking recordings per enrolment


@dataclass(frozen=True)
class Sizes:
    per_user: int = 6  # generated per trained person and activity
    new_people: int = 4  # enrolled people of the second part
    new_per_activity: int = 24  # their recordings per activity (about 17 train / 3-4 val / 3-4 test)
    synth_per_pair: int = 10  # m: generated per (person, activity) in the few-shot runs


QUICK_SIZES = Sizes(per_user=2, new_people=2, new_per_activity=6, synth_per_pair=2)


def applies(pipe: Any, data_extra: dict[str, np.ndarray]) -> bool:
    enc = getattr(pipe, "condition_encoder", None)
    return enc is not None and "activity" in enc.names and "activity" in data_extra


def _activity(ds: Any) -> np.ndarray:
    return np.asarray(ds.extra["activity"]).astype(str)


def _labels(values: np.ndarray, vocab: list[str]) -> np.ndarray:
    return np.asarray([vocab.index(str(v)) for v in values], np.int64)


def _per_activity_accuracy(clf: Any, x: np.ndarray, y: np.ndarray, act: np.ndarray, vocab: list[str]
                           ) -> dict[str, float]:
    return {a: accuracy(clf, x[act == a], y[act == a]) for a in vocab if (act == a).any()}


def trained_people(ctx: Any, ref: Any, ds: Any, vocab: list[str], per_user: int) -> dict[str, Any]:
    """Activity and identity affinity and physics per activity for the pipeline's own people."""
    from training.data.generated import derive_seed
    from training.eval.metrics import activity_readouts, physics_consistency

    users = ctx.data.users
    tr, te = ds.filter("train", users=users), ds.filter("test", users=users)
    remap = np.array([users.index(u) if u in users else -1 for u in ds.users])
    act_tr, act_te = _activity(tr), _activity(te)
    clf_act = ctx.fit(tr.x, _labels(act_tr, vocab), seed=ctx.seed, num_classes=len(vocab), time_flip=False)
    real_act = _per_activity_accuracy(clf_act, te.x, _labels(act_te, vocab), act_te, vocab)
    real_id = _per_activity_accuracy(ref.clf, te.x, remap[te.labels], act_te, vocab)
    rows, physics, examples = [], {}, {}
    for a in vocab:
        names = [u for u in users for _ in range(per_user)]
        seeds = [derive_seed(ctx.seed * 1_000_003 + 77, f"{u}:{a}", i % per_user)
                 for i, u in enumerate(names)]
        y = np.repeat(np.arange(len(users)), per_user)
        x = ctx.sample(ctx.pipe, y, seeds, given={"activity": a}, desc=f"activities: {a}").x
        acc_act = accuracy(clf_act, x, np.full(len(x), vocab.index(a)))
        acc_id = accuracy(ref.clf, x, y)
        keep = act_te == a
        first = np.flatnonzero(keep & (remap[te.labels] == 0))
        if len(first):  # the figure: the first person's real test recording and first sample
            examples[a] = (te.x[first[0], 0], x[0, 0])
        real_r = activity_readouts(te.x[keep], remap[te.labels][keep], users, ds.meta, [a] * int(keep.sum()))
        gen_r = activity_readouts(x, y, users, ds.meta, [a] * len(x))
        physics[a] = physics_consistency(real_r.get(a, {}), gen_r.get(a, {}))
        rows.append(dict(activity=a, n_generated=len(x), activity_real=real_act.get(a),
                         activity_generated=acc_act,
                         activity_ratio=_ratio(acc_act, real_act.get(a)), identity_real=real_id.get(a),
                         identity_generated=acc_id, identity_ratio=_ratio(acc_id, real_id.get(a)),
                         physics_mean_rel_error=physics[a]["mean_rel_error"]))
        ctx.log(f"activities: {a}: activity {acc_act:.3f} vs real {real_act.get(a, float('nan')):.3f}, "
                f"identity {acc_id:.3f} vs real {real_id.get(a, float('nan')):.3f}")
    figure = None
    if examples:
        from training.eval.activities_report import figure as draw

        draw(ctx.out / "figures" / "activities.png", examples, ds.meta)
        figure = "activities.png"
    return dict(rows=rows, physics=physics, per_user=per_user, figure=figure, chance=1.0 / len(users),
                # over the whole test split: the per-activity accuracies weighted by their recordings
                activity_classifier_real_test=float(sum(real_act[a] * np.sum(act_te == a) for a in real_act)
                                                    / len(act_te)))


def _ratio(a: float | None, b: float | None) -> float:
    return float(a / b) if a is not None and b and np.isfinite(a) and np.isfinite(b) else float("nan")


def new_people_data(meta: dict[str, Any], seed: int, size: tuple[int, int], sizes: Sizes) -> Any:
    """`sizes.new_people` people simulated like the data (same activities, variation, radar), another
    seed."""
    from training.data.dataset import load_dataset
    from training.data.simulate import SimulateConfig, simulate_dataset

    sim = dict(meta["simulate"])
    acts = tuple(sim.get("activities") or ("walk",))
    cfg = SimulateConfig(users=sizes.new_people, per_user=sizes.new_per_activity * len(acts),
                         size=int(sim["size"]),
                         carrier_ghz=float(sim["carrier_ghz"]), seed=seed,
                         dyn_range_db=float(sim["dyn_range_db"]),
                         duration_s=float(sim["duration_s"]), preview_per_user=0,
                         variation=dict(sim["variation"]), activities=acts)
    with tempfile.TemporaryDirectory(prefix="dopplergen-new-people-") as tmp:
        simulate_dataset(Path(tmp), cfg, progress=False)
        return load_dataset(tmp, size=size)


def _pick(labels: np.ndarray, act: np.ndarray, vocab: list[str], k: int, seed: int) -> np.ndarray:
    """k indices per (person, activity), drawn by seed."""
    rng = np.random.default_rng([seed, k, 0xAC7])
    out = []
    for c in np.unique(labels):
        for a in vocab:
            idx = np.flatnonzero((labels == c) & (act == a))
            out.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(out))


def new_people(ctx: Any, ds: Any, vocab: list[str], seed_people: int, sizes: Sizes) -> dict[str, Any]:
    """Enrol new people from 5 walking recordings; identity per activity and the two few-shot gains."""
    from training.data.generated import derive_seed
    from training.eval.fewshot import adapt_new_users
    from training.eval.ood import enrol_config

    new = new_people_data(ds.meta, seed_people, tuple(ctx.pipe.image_size), sizes)
    m = sizes.synth_per_pair
    names = [f"new{i:02d}" for i in range(len(new.users))]
    tr, te = new.filter("train"), new.filter("test")
    act_tr, act_te = _activity(tr), _activity(te)
    # identity: a person classifier over the new people, on their real train recordings of every activity
    clf_id = ctx.fit(tr.x, tr.labels, seed=ctx.seed, num_classes=len(names))
    real_id = _per_activity_accuracy(clf_id, te.x, te.labels, act_te, vocab)
    steps = ctx.st.fewshot_sample_steps or ctx.steps
    gen_id: dict[str, list[float]] = {a: [] for a in vocab}
    gains: dict[str, list[float]] = {"activity": [], "person": []}
    accs: dict[str, list[float]] = {k: [] for k in ("activity_real", "activity_aug", "person_real",
                                                    "person_aug")}
    for s in ctx.st.seeds:
        pick = _pick(tr.labels, act_tr, vocab, K, s)
        walk = pick[act_tr[pick] == "walk"]
        pipe_k, _ = adapt_new_users(ctx.pipe, tr.x[walk], tr.labels[walk], names, enrol_config(s))
        xs, ys, acts = [], [], []
        for a in vocab:
            who = [n for n in names for _ in range(m)]
            seeds = [derive_seed(s * 1_000_003 + 78, f"{n}:{a}", i) for i, n in enumerate(who)]
            ys.append(np.repeat(np.arange(len(names)), m))
            xs.append(ctx.sample(pipe_k, ys[-1], seeds, steps=steps, users=names, given={"activity": a},
                                 enrolled=True, desc=f"activities: new people, {a}").x)
            acts += [a] * len(who)
            gen_id[a].append(accuracy(clf_id, xs[-1], ys[-1]))
        x_syn, y_syn, a_syn = np.concatenate(xs), np.concatenate(ys), np.asarray(acts)
        rep = max(1, m // K)  # real repeated to about m per pair: as frequent as the synthetic
        # (i) activity classifier, k per (person, activity)
        y_real = _labels(act_tr[pick], vocab)
        real = ctx.fit(tr.x[pick], y_real, seed=s, num_classes=len(vocab), time_flip=False)
        aug = ctx.fit(np.concatenate([np.repeat(tr.x[pick], rep, 0), x_syn]),
                      np.concatenate([np.repeat(y_real, rep), _labels(a_syn, vocab)]), seed=s,
                      num_classes=len(vocab), time_flip=False)
        accs["activity_real"].append(accuracy(real, te.x, _labels(act_te, vocab)))
        accs["activity_aug"].append(accuracy(aug, te.x, _labels(act_te, vocab)))
        # (ii) person classifier, walking-only enrolment recordings + generated activities
        rep_w = max(1, len(vocab) * m // K)
        real_p = ctx.fit(tr.x[walk], tr.labels[walk], seed=s, num_classes=len(names))
        aug_p = ctx.fit(np.concatenate([np.repeat(tr.x[walk], rep_w, 0), x_syn]),
                        np.concatenate([np.repeat(tr.labels[walk], rep_w), y_syn]), seed=s,
                        num_classes=len(names))
        accs["person_real"].append(accuracy(real_p, te.x, te.labels))
        accs["person_aug"].append(accuracy(aug_p, te.x, te.labels))
        gains["activity"].append(accs["activity_aug"][-1] - accs["activity_real"][-1])
        gains["person"].append(accs["person_aug"][-1] - accs["person_real"][-1])
        ctx.log(f"activities: new people, seed {s}: activity classifier {accs['activity_real'][-1]:.3f} -> "
                f"{accs['activity_aug'][-1]:.3f}, person classifier {accs['person_real'][-1]:.3f} -> "
                f"{accs['person_aug'][-1]:.3f}")
    identity = [dict(activity=a, real=real_id.get(a), generated=float(np.mean(gen_id[a])),
                     ratio=_ratio(float(np.mean(gen_id[a])), real_id.get(a))) for a in vocab]
    return dict(people=len(names), seed=seed_people, k=K, chance=1.0 / len(names), synth_per_pair=m,
                sample_steps=steps,
                identity=identity, seeds=list(ctx.st.seeds),
                accuracy={key: t_interval(v) for key, v in accs.items()},
                gain={key: t_interval(v) for key, v in gains.items()}, gains=gains)


def activity_section(ctx: Any, ref: Any, data_path: str, *, population_seed: int) -> dict[str, Any]:
    """Both parts; {"skipped": why} when the pipeline or the data has no activity."""
    from training.data.dataset import load_dataset

    ds = load_dataset(data_path, channels=ctx.pipe.channels, size=tuple(ctx.pipe.image_size))
    if not applies(ctx.pipe, ds.extra):
        return {"skipped": "the pipeline is not conditioned on activity, or the data has no activity column"}
    vocab = list(ctx.pipe.condition_encoder.spec("activity")["values"])
    sizes = QUICK_SIZES if ctx.st.quick else Sizes()
    out = {"activities": vocab, "trained": trained_people(ctx, ref, ds, vocab, sizes.per_user)}
    if "simulate" not in ds.meta:
        out["new_people"] = {"skipped": "the data was not simulated: no new people to simulate like it"}
        return out
    seed_people = population_seed + 1 + int(ds.meta["simulate"].get("seed", 0))
    out["new_people"] = new_people(ctx, ds, vocab, seed_people, sizes)
    return out

