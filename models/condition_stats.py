"""Per-user training distributions of the conditions, recorded in dopplergen.json["conditions"], and the rule
for a condition a request leaves out: it is drawn from that user's training distribution, seeded by the
sample's seed.

The block written into dopplergen.json, one entry per condition:

    "speed_mps": {"type": "numeric", "range": [0.62, 2.0], "encoding": "fourier-mlp",
                  "per_user": {"user00": {"n": 98, "mean": 1.31, "std": 0.2,
                                          "quantiles": [21 values, 0..100 %]}},
                  "all": {...the same over every user...}}
    "activity":  {"type": "categorical", "values": ["walk", "run"], "encoding": "embedding",
                  "per_user": {"user00": {"n": 98, "counts": {"walk": 60, "run": 38}}}, "all": {...}}

A user without recorded stats (e.g. enrolled from recordings without condition columns) draws from "all".

With an "activity" condition, each numeric one also records "per_activity": {activity: {"all", "per_user"}}
(or {"absent": true} where that activity has no value, e.g. no walking speed for a fall, which the manifest
leaves empty), and an omitted numeric condition is drawn for the request's activity: a fall is never given a
walking speed, a run never a walking one. Empty (NaN) cells train as "absent".
Drawing from the user's own distribution, rather than feeding the model "absent", keeps the value that was
used known: it is echoed with the sample, and the same (user, seed, given conditions) always resolves the same
way.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.conditions import CATEGORICAL, ENCODINGS, NUMERIC

# by column-name suffix
UNITS = {"_mps": "m/s", "_deg": "deg", "_m": "m", "_db": "dB", "_hz": "Hz", "_s": "s"}
QUANTILES = 21  # 0, 5, ..., 100 %: enough to redraw a uniform or a bell-shaped spread faithfully
ROUND = 100.0  # ranges are widened outward to 1/ROUND of a unit, so the training data is always inside


def is_numeric(column: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(column).dtype, np.number)


def _numeric_stats(x: np.ndarray) -> dict[str, Any]:
    x = np.asarray(x, dtype=np.float64)
    return {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std()),
            "quantiles": [float(q) for q in np.quantile(x, np.linspace(0, 1, QUANTILES))]}


def _categorical_stats(x: np.ndarray, values: list[str]) -> dict[str, Any]:
    labels = [str(v) for v in x]
    return {"n": len(labels), "counts": {v: labels.count(v) for v in values if v in labels}}


def _numeric_block(col: np.ndarray, users: np.ndarray) -> dict[str, Any]:
    """{"all", "per_user"} stats over the finite values, or {"absent": True} when there are none."""
    ok = np.isfinite(col)
    if not ok.any():
        return {"absent": True}
    return {"all": _numeric_stats(col[ok]),
            "per_user": {str(u): _numeric_stats(col[ok & (users == u)])
                         for u in sorted(set(users[ok]))}}


def describe_conditions(columns: Mapping[str, np.ndarray], row_users: Sequence[str],
                        names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The dopplergen.json "conditions" block from the training rows' condition columns and users."""
    users = np.asarray(row_users)
    desc: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in columns:
            raise KeyError(f"no column {name!r} in the dataset; it has {sorted(columns)}")
        col = np.asarray(columns[name])
        if len(col) != len(users) or len(col) == 0:
            raise ValueError(f"column {name!r} has {len(col)} rows for {len(users)} users")
        if is_numeric(col):
            ok = np.isfinite(col)
            if not ok.any() or np.isinf(col).any():
                raise ValueError(f"condition column {name!r} has no finite values, or infinite ones")
            lo, hi = math.floor(col[ok].min() * ROUND) / ROUND, math.ceil(col[ok].max() * ROUND) / ROUND
            hi = hi if hi > lo else lo + 1.0 / ROUND
            entry = {"type": NUMERIC, "range": [lo, hi], **_numeric_block(col, users)}
            if not ok.all():
                entry["missing"] = int((~ok).sum())
            if "activity" in names and "activity" in columns and name != "activity":
                act = np.asarray([str(a) for a in columns["activity"]])
                entry["per_activity"] = {a: _numeric_block(col[act == a], users[act == a])
                                         for a in sorted(set(act))}
        else:
            values = sorted({str(v) for v in col})
            entry = {
                "type": CATEGORICAL, "values": values, "all": _categorical_stats(col, values),
                "per_user": {
                    str(u): _categorical_stats(col[users == u], values) for u in sorted(set(users))
                },
            }
        entry["encoding"] = ENCODINGS[entry["type"]]
        desc[name] = entry
    return desc


def encoder_specs(desc: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """ConditionEncoder(conditions=...) specs, in `names` order, from a description block."""
    out = []
    for name in names:
        d = desc[name]
        key = "range" if d["type"] == NUMERIC else "values"
        out.append({"name": name, "type": d["type"], key: list(d[key])})
    return out


def offered_conditions(
    encoder: Any, desc: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """GET /info's "conditions": what the pipeline's condition encoder takes ({} without one), with how an
    omitted value is chosen."""
    if encoder is None:
        return {}
    desc = desc or {}
    out = {}
    for spec in encoder.specs:
        entry = {k: v for k, v in spec.items() if k != "name"}
        entry["encoding"] = desc.get(spec["name"], {}).get("encoding", ENCODINGS[spec["type"]])
        unit = [u for suffix, u in UNITS.items() if spec["name"].endswith(suffix)]
        if spec["type"] == NUMERIC and unit:
            entry["unit"] = unit[0]
        entry["omitted"] = "drawn from the user's training distribution (seeded by the sample's seed)"
        out[spec["name"]] = entry
    return out


def user_stats(desc_entry: Mapping[str, Any], user_id: str) -> dict[str, Any]:
    """A user's recorded distribution of one condition, else the whole training set's."""
    return desc_entry.get("per_user", {}).get(user_id) or desc_entry["all"]


def draw_condition(desc_entry: Mapping[str, Any], user_id: str, rng: np.random.Generator,
                   activity: str | None = None) -> float | str | None:
    """One value from the user's training distribution (inverse-CDF through the recorded quantiles), for
    `activity` where the entry records per-activity stats; None where that activity has no value."""
    per_activity = desc_entry.get("per_activity") or {}
    if activity is not None and activity in per_activity:
        desc_entry = {**per_activity[activity], "type": desc_entry["type"]}
        if desc_entry.get("absent"):
            return None
    stats = user_stats(desc_entry, user_id)
    u = float(rng.uniform())
    if desc_entry["type"] == NUMERIC:
        q = np.asarray(stats["quantiles"], dtype=np.float64)
        return float(np.interp(u, np.linspace(0, 1, len(q)), q))
    labels, counts = zip(*sorted(stats["counts"].items()), strict=True)
    cdf = np.cumsum(counts) / float(sum(counts))
    return labels[int(np.searchsorted(cdf, u, side="right").clip(0, len(labels) - 1))]


def resolve_conditions(desc: Mapping[str, Mapping[str, Any]], names: Sequence[str], user_id: str,
                       given: Mapping[str, Any] | None, seed: int) -> dict[str, float | str]:
    """Every condition of `names`: the given value where there is one, else a draw from the user's training
    distribution. Deterministic in (user, seed, given): each condition has its own stream, so giving one
    condition never changes the draw of another."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    out: dict[str, float | str | None] = {}
    # the activity first: the numeric conditions are drawn for it
    for name in sorted(names, key=lambda n: n != "activity"):
        if name in given:
            out[name] = given[name]
        else:
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, 0xC0DD, zlib.crc32(name.encode())])
            act = out.get("activity")
            out[name] = draw_condition(desc[name], user_id, rng, None if act is None else str(act))
    return {name: out[name] for name in names}


def known_columns(encoder: Any, columns: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The recordings' condition columns that the pipeline takes, as values it accepts: numeric ones finite
    and clipped into the trained range (NaN stays NaN: absent), categorical ones among the trained values
    (others become None: absent). Conditions the columns lack are left out."""
    out: dict[str, np.ndarray] = {}
    for spec in encoder.specs if encoder is not None else []:
        name = spec["name"]
        if name not in columns:
            continue
        col = np.asarray(columns[name])
        if len(col) != n:
            raise ValueError(f"column {name!r} has {len(col)} rows for {n} recordings")
        if spec["type"] == NUMERIC:
            if not is_numeric(col):
                continue
            v = np.asarray(col, np.float64)
            v = np.where(np.isfinite(v), v, np.nan)
            out[name] = np.clip(v, *spec["range"])
        else:
            out[name] = np.asarray([str(c) if str(c) in spec["values"] else None for c in col], dtype=object)
    return out


def value_rows(encoder: Any, columns: Mapping[str, np.ndarray], n: int) -> list[dict[str, Any]]:
    """Per recording, {condition: value} of `known_columns` (absent ones left out): what
    ConditionEncoder.values_tensor takes."""
    cols = known_columns(encoder, columns, n)
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, col in cols.items():
        for i, v in enumerate(col):
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                rows[i][name] = v
    return rows


def add_people(desc: Mapping[str, Mapping[str, Any]], encoder: Any, columns: Mapping[str, np.ndarray],
               row_users: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`desc` (a pipeline's "conditions" block) with per-user entries for the people of `row_users` from
    their recordings' condition columns (`known_columns`), per activity too where the columns have one, so
    that a condition a request leaves out is drawn from the person's own recordings, not from everyone's.
    The pipeline's ranges, values and "all" stay; a person's entry replaces an older one of the same name."""
    users = np.asarray([str(u) for u in row_users])
    cols = known_columns(encoder, columns, len(users))
    out = {n: {**e} for n, e in desc.items()}
    acts = cols.get("activity")
    for name, col in cols.items():
        if name not in out:
            continue
        e = out[name]
        if e["type"] == NUMERIC:
            block = _numeric_block(col, users)
            e["per_user"] = {**e.get("per_user", {}), **block.get("per_user", {})}
            if acts is not None and "per_activity" in e:
                per_act = {a: {**b} for a, b in e["per_activity"].items()}
                for a in sorted({a for a in acts if a is not None}):
                    blk = _numeric_block(col[acts == a], users[acts == a])
                    if a in per_act and not blk.get("absent") and not per_act[a].get("absent"):
                        per_act[a]["per_user"] = {**per_act[a].get("per_user", {}), **blk["per_user"]}
                e["per_activity"] = per_act
        else:
            ok = np.asarray([v is not None for v in col])
            if ok.any():
                e["per_user"] = {**e.get("per_user", {}), **{
                    str(u): _categorical_stats(col[ok & (users == u)], list(e["values"]))
                    for u in sorted(set(users[ok]))}}
    return out


def forget_people(desc: Mapping[str, Mapping[str, Any]],
                  users: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """`desc` without the per-user entries of `users` (per activity too): a person enrolled again starts
    from no recorded conditions. None: without anyone's (only "all" and the ranges stay)."""
    gone = None if users is None else set(users)

    def keep(block: Mapping[str, Any]) -> dict[str, Any]:
        out = {**block}
        if "per_user" in out:
            if gone is None:
                del out["per_user"]
            else:
                out["per_user"] = {u: v for u, v in out["per_user"].items() if u not in gone}
        return out

    out = {}
    for name, e in desc.items():
        out[name] = keep(e)
        if "per_activity" in e:
            out[name]["per_activity"] = {a: keep(b) for a, b in e["per_activity"].items()}
    return out
