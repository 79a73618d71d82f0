"""The activities section's Markdown, figure and headline targets (training/eval/activities.py computes
it)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

TARGETS = dict(activity_ratio=0.8, enrolled_identity_ratio=0.7)
NEAR_CHANCE = 0.10  # real accuracy within this of chance: its ratio is not evidence (shown, not judged)


def near_chance(real: Any, chance: Any) -> bool:
    return real is None or chance is None or not math.isfinite(float(real)) or real < chance + NEAR_CHANCE


def _xc(ratio: Any, real: Any, chance: Any) -> str:
    return _x(ratio) + (" (real near chance)" if near_chance(real, chance) else "")


def _p(v: Any) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.1f}%"


def _x(v: Any) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.2f}x"


def _ci(ci: dict[str, Any]) -> str:
    if not math.isfinite(ci.get("mean", math.nan)):
        return "n/a"
    lo, hi = ci.get("lo", math.nan), ci.get("hi", math.nan)
    band = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if math.isfinite(lo) else ""
    return f"{100 * ci['mean']:+.1f}{band}"


def targets(res: dict[str, Any]) -> list[tuple[str, float, str, str]]:
    """(name, value, TARGETS key, op): the worst activity's activity affinity ratio, and the enrolled people's
    identity ratio while falling."""
    sec = res.get("activities") or {}
    out = []
    rows = (sec.get("trained") or {}).get("rows") or []
    if rows:
        worst = min(rows, key=lambda r: r["activity_ratio"] if math.isfinite(r["activity_ratio"]) else -1)
        out.append((f"activity affinity / real, worst activity ({worst['activity']})",
                    worst["activity_ratio"], "activity_ratio", ">="))
    new = sec.get("new_people") or {}
    for r in new.get("identity") or []:
        if r["activity"] == "fall":  # not judged where real falls are recognised at about chance
            value = math.nan if near_chance(r["real"], new.get("chance")) else r["ratio"]
            out.append(("enrolled person (5 walking) recognised while falling / real", value,
                        "enrolled_identity_ratio", ">="))
    return out


def markdown(res: dict[str, Any], figures: str = "figures") -> list[str]:
    sec = res.get("activities")
    if not sec:
        return []
    L = ["## Activities", ""]
    if "skipped" in sec:
        return L + [f"Skipped: {sec['skipped']}.", ""]
    tr = sec["trained"]
    L += [f"Each of the pipeline's people generated doing each activity ({tr['per_user']} per person and "
          "activity, the activity named in the request and the other conditions drawn for it, as `POST "
          "/generate` does). *Activity*: a fresh activity classifier trained on the real train split "
          f"(real test accuracy {_p(tr['activity_classifier_real_test'])} over all activities) names the "
          "requested activity; *identity*: the reference person classifier names the requested person "
          f"(chance {_p(tr.get('chance'))}; a ratio whose real accuracy is within {100 * NEAR_CHANCE:.0f} "
          "points of chance is shown, not judged). "
          "Each is compared with the same classifier on real test recordings of that activity (target: "
          f"activity >= {TARGETS['activity_ratio']}x real).", "",
          "| activity | activity: real test | activity: generated | ratio | identity: real test | "
          "identity: generated | ratio | physics rel. error (mean over users) |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in tr["rows"]:
        phys = ", ".join(f"{q} {100 * v:.0f}%" for q, v in r["physics_mean_rel_error"].items()
                         if math.isfinite(v)) or "n/a"
        L.append(f"| {r['activity']} | {_p(r['activity_real'])} | {_p(r['activity_generated'])} | "
                 f"{_x(r['activity_ratio'])} | {_p(r['identity_real'])} | {_p(r['identity_generated'])} | "
                 f"{_xc(r['identity_ratio'], r['identity_real'], tr.get('chance'))} | {phys} |")
    L.append("")
    new = sec.get("new_people") or {}
    if "skipped" in new:
        return L + [f"New people: skipped ({new['skipped']}).", ""]
    if new:
        L += [f"### New people enrolled from {new['k']} walking recordings", "",
              f"{new['people']} people the pipeline never saw, simulated like the data (seed {new['seed']}), "
              f"each enrolled from {new['k']} of their walking recordings (`dopplergen enroll`'s defaults) "
              f"and generated doing every activity ({new['synth_per_pair']} per person and activity, "
              f"{new['sample_steps']} sampler steps). Identity: a person classifier over the new people "
              "(their real train split, every activity) names the new person; generated vs their real test "
              f"recordings of the same activity (chance {_p(new.get('chance'))}; target while falling: >= "
              f"{TARGETS['enrolled_identity_ratio']}x).",
              "", "| activity | real test | generated | ratio |", "| --- | --- | --- | --- |"]
        L += [f"| {r['activity']} | {_p(r['real'])} | {_p(r['generated'])} | "
              f"{_xc(r['ratio'], r['real'], new.get('chance'))} |" for r in new["identity"]]
        a, g = new["accuracy"], new["gain"]
        L += ["", f"Few-shot gains over {len(new['seeds'])} seeds (mean and 95% t-interval, points), scored "
              "on the new people's real test recordings of every activity:", "",
              "| classifier | real only | real + generated | gain |", "| --- | --- | --- | --- |",
              f"| activity, k = {new['k']} real per (person, activity) + {new['synth_per_pair']} generated "
              f"per (person, activity) | {_p(a['activity_real']['mean'])} | "
              f"{_p(a['activity_aug']['mean'])} | "
              f"{_ci(g['activity'])} |",
              f"| person, {new['k']} walking recordings + {new['synth_per_pair']} generated per activity | "
              f"{_p(a['person_real']['mean'])} | {_p(a['person_aug']['mean'])} | {_ci(g['person'])} |", ""]
    if tr.get("figure"):
        L += [f"![activities: real and generated per activity]({figures}/{tr['figure']})", ""]
    return L


def figure(path: Path, examples: dict[str, tuple[Any, Any]], meta: dict[str, Any]) -> None:
    """One row per activity: a real test recording and a generated one of the same person."""
    from training.eval.plots import spectrogram_grid

    rows = [(f"{a}\nreal | gen", [r, g]) for a, (r, g) in examples.items()]
    spectrogram_grid(rows, meta, path, title="activities: real (left) and generated (right)")
