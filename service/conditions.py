"""A request's conditions (speed_mps, aspect_deg, activity): checked against the pipeline, omitted ones drawn.

A condition the request leaves out is drawn from that user's training distribution (dopplergen.json
"conditions", models/condition_stats.py), seeded by each sample's own seed: the same (user, seed,
conditions) always resolves the same way, alone or batched, and every item echoes the values it used.
A value outside the trained range, or a condition the pipeline was not trained on, is a 422 naming the field.
"""

from __future__ import annotations

from typing import Any

import torch

from models.condition_stats import resolve_conditions
from models.conditions import ConditionError
from models.pipeline import DopplerPipeline
from service.errors import invalid

CONDITION_FIELDS = ("speed_mps", "aspect_deg", "activity")  # request fields = the manifest's column names


def request_conditions(pipe: DopplerPipeline, user_id: str, given: dict[str, Any], seeds: list[int]
                       ) -> tuple[dict[int, torch.Tensor] | None, list[dict[str, Any]] | None]:
    """(seed -> (K,) condition values for the row, the resolved values per sample); (None, None) when the
    pipeline has no conditions and none was asked for."""
    given = {k: v for k, v in given.items() if v is not None}
    enc = pipe.condition_encoder
    if enc is None:
        if given:
            field = next(iter(given))
            raise invalid(field, "this model was trained without conditions (GET /info lists none)")
        return None, None
    for field, value in given.items():
        if field not in enc.names:
            raise invalid(field, f"this model was not trained on {field}; it takes {enc.names} (GET /info)")
        try:
            enc.check_value(field, value)
        except ConditionError as e:
            raise invalid(e.field, str(e)) from None
    resolved = [
        resolve_conditions(pipe.meta.get("conditions") or {}, enc.names, user_id, given, s) for s in seeds
    ]
    values = enc.values_tensor(resolved)  # (N, K)
    return {int(s): values[i] for i, s in enumerate(seeds)}, resolved
