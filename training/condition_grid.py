"""Conditions for bulk generation: `--speed-mps 1.2`, `--aspect-deg 0:60:4` (start:stop:count) or `0,30,60`,
and the grid of settings they span. Every setting gets the same seeds, so a sweep changes only the condition.

A condition left out is drawn per sample from that user's training distribution (models/condition_stats.py),
seeded by the sample's seed, and the value used is written to the manifest like any recorded condition.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from models.condition_stats import resolve_conditions
from models.conditions import ConditionError


def parse_values(text: str | None, name: str) -> list[float] | None:
    """'1.2' -> [1.2]; '0.8:1.6:5' -> 5 evenly spaced values from 0.8 to 1.6; '0,30,60' -> those; None ->
    None."""
    if text is None:
        return None
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            if int(count) < 1:
                raise ValueError
            return [round(float(v), 6) for v in np.linspace(float(start), float(stop), int(count))]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--{name.replace('_', '-')}: expected a value, a list a,b,c or start:stop:count, "
                         f"got {text!r}") from None


def condition_grid(pipe: Any, given: dict[str, list[Any] | None]) -> list[dict[str, Any]]:
    """Every combination of the requested values ([{}] when none is asked), checked against the pipeline."""
    asked = {k: v for k, v in given.items() if v}
    if asked and pipe.condition_encoder is None:
        raise SystemExit(f"{sorted(asked)} given but this pipeline was trained without conditions")
    for name, values in asked.items():
        for v in values:
            try:
                pipe.condition_encoder.check_value(name, v)
            except ConditionError as e:
                raise SystemExit(f"--{name.replace('_', '-')}: {e}") from None
    names = list(asked)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*asked.values())] or [{}]


def resolved(pipe: Any, user: str, seed: int, setting: dict[str, Any]) -> dict[str, Any]:
    """The conditions one sample is generated with ({} for a pipeline without conditions)."""
    if pipe.condition_encoder is None:
        return {}
    return resolve_conditions(pipe.meta.get("conditions") or {}, pipe.conditions, user, setting, seed)
