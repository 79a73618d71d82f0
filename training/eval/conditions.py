"""Condition following in `dopplergen evaluate`: does a sample walk at the requested speed and aspect angle,
and is it still the requested person?

- torso-speed read-out (training.eval.metrics.torso_line_hz, median over frames) against the requested radial
  speed v cos(aspect), per (speed, aspect) setting; speeds are each user's own 10th / 50th / 90th percentile
  training speeds (dopplergen.json "conditions"), aspects 0, 30 and 60 degrees (clipped to the trained range);
- affinity per aspect bin: the reference classifier (trained on real data) names the requested user;
- a figure of one person swept over speed (rows) and aspect (columns).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.dataset_folder import axes_from_meta
from models.sampling import resolve, sample
from training.eval import metrics as fm
from training.eval.plots import spectrogram_grid

SPEED, ASPECT = "speed_mps", "aspect_deg"
# index into the 21 recorded quantiles (10 / 50 / 90 %)
SPEED_LEVELS = (("slow", 2), ("mid", 10), ("fast", 18))
ASPECTS_DEG = (0.0, 30.0, 60.0)
ASPECT_BINS_DEG = (0.0, 20.0, 40.0, 90.0)  # |aspect| bins of the affinity table


def settings_for(desc: dict[str, Any], user: str) -> list[tuple[str, float, float]]:
    """(label, speed, aspect) settings of one user: own slow / mid / fast speed x aspects in the trained
    range."""
    speed = _walking(desc[SPEED])
    q = (speed["per_user"].get(user) or speed["all"])["quantiles"]
    lo, hi = desc[ASPECT]["range"]
    aspects = sorted({float(np.clip(a, lo, hi)) for a in ASPECTS_DEG})
    return [(f"{name}, {a:g} deg", float(q[i]), a) for name, i in SPEED_LEVELS for a in aspects]


def _walking(entry: dict[str, Any]) -> dict[str, Any]:
    """A condition's statistics over the walks, where the pipeline also takes an activity (the read-out is a
    walking torso's), else over everything."""
    return (entry.get("per_activity") or {}).get("walk") or entry


def _walk(pipe: Any) -> dict[str, str]:
    """{"activity": "walk"} for a pipeline conditioned on activity (every setting is a walk), else {}."""
    if "activity" in pipe.conditions and "walk" in pipe.condition_encoder.spec("activity")["values"]:
        return {"activity": "walk"}
    return {}


def _named_guidance(ctx: Any) -> tuple[float, float | None]:
    """(g, g_c) of a request that names its conditions: compositional, with the pipeline's defaults."""
    chosen = resolve(ctx.pipe, guidance=getattr(ctx, "guidance_arg", None),
                     condition_guidance=getattr(ctx, "condition_guidance", None), named=True)
    return chosen.guidance, chosen.condition_guidance


def _guidance_text(ctx: Any) -> str:
    g, gc = _named_guidance(ctx)
    return f"plain guidance {g:g}." if gc is None else f"identity guidance {g:g}, condition guidance {gc:g}."


def _generate(ctx: Any, users: list[int], values: list[dict[str, float]], seeds: list[int]) -> np.ndarray:
    pipe, b = ctx.pipe, ctx.st.batch_size
    enc = pipe.condition_encoder
    idx = [pipe.user_encoder.index_of(ctx.data.users[u]) for u in users]
    g, gc = _named_guidance(ctx)
    out = []
    for i in range(0, len(idx), b):
        cond = enc.values_tensor(values[i:i + b])
        out.append(sample(pipe, idx[i:i + b], seeds[i:i + b], num_inference_steps=ctx.steps,
                          guidance_scale=g, sampler=ctx.sampler, pad_to=b, conditions=cond,
                          condition_guidance_scale=gc).numpy())
    return np.concatenate(out)  # (N, C, H, W) dB


def torso_mps(x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Median torso-line radial speed of each spectrogram (m/s)."""
    f, _ = axes_from_meta(meta, x.shape[-2:])
    to_v = float(meta.get("wavelength_m", 299_792_458.0 / float(meta["carrier_hz"]))) / 2
    return np.array([np.median(fm.torso_line_hz(s[0], f)) * to_v for s in x])


def condition_following(ctx: Any, ref: Any, per_setting: int) -> dict[str, Any]:
    """The section: per-setting read-out errors, affinity per aspect bin, sweep figure."""
    pipe, d = ctx.pipe, ctx.data
    desc = pipe.meta.get("conditions") or {}
    if pipe.condition_encoder is None or not {SPEED, ASPECT} <= set(pipe.conditions) or not desc:
        return dict(skipped="the pipeline takes no speed_mps / aspect_deg conditions",
                    rows=[], aspect_bins=[])
    if "carrier_hz" not in d.meta:
        return dict(skipped="meta.json lacks the radar axes", rows=[], aspect_bins=[])
    users, values, seeds, labels = [], [], [], []
    for u, user in enumerate(d.users):
        for s_i, (label, v, a) in enumerate(settings_for(desc, user)):
            for j in range(per_setting):
                users.append(u)
                values.append({SPEED: v, ASPECT: a, **_walk(pipe)})
                seeds.append(ctx.seed * 1_000_003 + 7919 * u + 101 * s_i + j)
                labels.append(label)
    x = _generate(ctx, users, values, seeds)
    got = torso_mps(x, d.meta)
    want = np.array([v[SPEED] * np.cos(np.deg2rad(v[ASPECT])) for v in values])
    err = got / want - 1
    hit = ref.clf.predict(x) == np.asarray(users)
    labels_arr = np.asarray(labels)
    rows = []
    for label in dict.fromkeys(labels):
        m = labels_arr == label
        rows.append(dict(setting=label, n=int(m.sum()), requested_radial_mps=float(np.median(want[m])),
                         readout_mps=float(np.median(got[m])), median_rel_error=float(np.median(err[m])),
                         within_10pct=float(np.mean(np.abs(err[m]) <= 0.1)), affinity=float(np.mean(hit[m]))))
    aspect = np.abs([v[ASPECT] for v in values])
    bins = []
    for lo, hi in zip(ASPECT_BINS_DEG[:-1], ASPECT_BINS_DEG[1:], strict=True):
        m = (aspect >= lo) & (aspect < hi)
        if m.any():
            bins.append(dict(aspect_deg=[lo, hi], n=int(m.sum()), affinity=float(np.mean(hit[m])),
                             ratio_to_trtr=float(np.mean(hit[m]) / ref.trtr) if ref.trtr else None))
    _sweep_figure(ctx, desc)
    worst = max(rows, key=lambda r: abs(r["median_rel_error"]))
    ctx.log(f"conditions: worst torso read-out error {worst['median_rel_error']:+.3f} at "
            f"({worst['setting']}); affinity per aspect bin "
            + ", ".join(f"{b['aspect_deg'][0]:g}-{b['aspect_deg'][1]:g}: {b['affinity']:.2f}" for b in bins))
    return dict(rows=rows, aspect_bins=bins, worst_abs_rel_error=abs(worst["median_rel_error"]),
                method=("Per user: its own 10th/50th/90th percentile training speed x aspect 0/30/60 deg "
                        f"(clipped to the trained range), {per_setting} samples each. Read-out: the median "
                        "over frames of training.eval.metrics.torso_line_hz (strongest line away from the 0 "
                        "Hz clutter) in m/s, against the requested v cos(aspect); affinity: the reference "
                        "classifier names the user. Guidance as for a request that names its conditions: "
                        + _guidance_text(ctx)))


def _sweep_figure(ctx: Any, desc: dict[str, Any]) -> None:
    """One person (the first user), one seed, swept over speed (rows) and aspect (columns)."""
    user = ctx.data.users[0]
    speed = _walking(desc[SPEED])
    lo, hi = speed["per_user"].get(user, speed["all"])["quantiles"][::20]
    a_lo, a_hi = desc[ASPECT]["range"]
    speeds, aspects = np.linspace(lo, hi, 4), np.linspace(max(a_lo, 0.0), min(a_hi, 70.0), 5)
    walk = _walk(ctx.pipe)
    grid = [(0, {SPEED: float(v), ASPECT: float(a), **walk}, ctx.seed) for v in speeds for a in aspects]
    x = _generate(ctx, [g[0] for g in grid], [g[1] for g in grid], [g[2] for g in grid])
    rows = [(f"{user} {v:.2f} m/s", [x[r * len(aspects) + c] for c in range(len(aspects))])
            for r, v in enumerate(speeds)]
    spectrogram_grid(rows, ctx.data.meta, ctx.out / "figures" / "condition_sweep.png",
                     title=f"{user}, one seed: speed (rows) x aspect "
                     + ", ".join(f"{a:.0f}" for a in aspects) + " deg (columns)")



def markdown(sec: dict[str, Any], figures: str = "figures") -> list[str]:
    """The report's condition-following section."""
    L = ["## Condition following (speed, aspect)", ""]
    if sec.get("skipped"):
        return L + [f"Skipped: {sec['skipped']}.", ""]
    L += [sec["method"], "", "| setting | n | requested v cos(aspect) m/s | read-out m/s | median error | "
                             "within 10% | affinity |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in sec["rows"]:
        L.append(f"| {r['setting']} | {r['n']} | {r['requested_radial_mps']:.3f} | {r['readout_mps']:.3f} | "
                 f"{r['median_rel_error']:+.3f} | {r['within_10pct']:.2f} | {r['affinity']:.2f} |")
    L += ["", "| \\|aspect\\| deg | n | affinity | / real test accuracy |", "| --- | --- | --- | --- |"]
    for b in sec["aspect_bins"]:
        ratio = "n/a" if b["ratio_to_trtr"] is None else f"{b['ratio_to_trtr']:.2f}x"
        L.append(f"| {b['aspect_deg'][0]:g}-{b['aspect_deg'][1]:g} | {b['n']} | {b['affinity']:.2f} | "
                 f"{ratio} |")
    return L + ["", f"![one person swept over speed and aspect]({figures}/condition_sweep.png)", ""]
