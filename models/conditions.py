"""Condition encoder: walking speed, aspect angle, activity, ... -> extra cross-attention tokens beside the
user's.

Numeric conditions are normalised to [-1, 1] with the range recorded in the config, expanded into Fourier
features (as SDXL's size/crop micro-conditions and NeRF's positional encoding) and mapped by a small MLP;
categorical ones get an embedding. Each condition has its own learned "absent" token, so training can drop
each one independently (classifier-free guidance, Ho & Salimans 2022) and a request may leave any of them out.

Two routes into the UNet (train-unet --condition-route): "tokens" puts the condition tokens beside the user's
in `encoder_hidden_states` only; "tokens+added" (the default) also sets the stock UNet's
`addition_embed_type="text"`, which attention-pools the whole context (user + condition tokens) into one
vector added to the timestep embedding (models/builders.py). Why both: the tokens keep one per-row tensor and
work with stock diffusers; the added embedding reaches every ResNet block, including the full-resolution ones,
which have no cross-attention in the small presets, and walking speed and aspect move the whole spectrum (the
torso line sits at 2 v cos(aspect) / lambda). Measured (experiments/condition_check.py, 2-core CPU):
fine-tuning the identity-only demo for 400 x 64 steps, the routes are alike and neither follows (median torso
error at (slow,0) / (fast,0) / (mid,0) / (mid,50): tokens +5 / -29 / -19 / +17%, tokens+added +8 / -31 / -17 /
+21%): the conditions only show at high noise, where Min-SNR gives little weight, and a trained model has
already settled on each person's marginal. So the demo is trained with conditions from the start. A pipeline
without conditions keeps the plain UNet and fewer tokens.

Values travel as one float tensor (N, K), one column per condition in config order: numeric conditions in
their own units, categorical ones as the index into their `values`; NaN marks a condition left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

NUMERIC, CATEGORICAL = "numeric", "categorical"
ENCODINGS = {NUMERIC: "fourier-mlp", CATEGORICAL: "embedding"}


class ConditionError(ValueError):
    """A condition value the pipeline cannot take; `field` names the condition (the request field)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_specs(conditions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate condition specs: {"name", "type": numeric, "range": [lo, hi]} or {"name", "type": categorical,
    "values": [...]}; returns plain JSON-able dicts."""
    out, seen = [], set()
    for c in conditions:
        name, kind = str(c.get("name", "")), c.get("type")
        if not name or name in seen:
            raise ValueError(f"condition names must be non-empty and unique, got {name!r}")
        seen.add(name)
        if kind == NUMERIC:
            lo, hi = (float(v) for v in c["range"])
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"condition {name!r}: range must be finite with lo < hi, got {[lo, hi]}")
            out.append({"name": name, "type": NUMERIC, "range": [lo, hi]})
        elif kind == CATEGORICAL:
            values = [str(v) for v in c["values"]]
            if not values or len(set(values)) != len(values):
                raise ValueError(f"condition {name!r}: values must be a non-empty list of unique labels")
            out.append({"name": name, "type": CATEGORICAL, "values": values})
        else:
            raise ValueError(f"condition {name!r}: type must be {NUMERIC!r} or {CATEGORICAL!r}, got {kind!r}")
    return out


def fourier_features(x: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """[x, sin(pi 2^k x), cos(pi 2^k x)] for k < num_frequencies: (N,) -> (N, 2F + 1)."""
    freqs = math.pi * 2.0 ** torch.arange(num_frequencies, device=x.device, dtype=torch.float32)
    arg = x.float()[:, None] * freqs  # (N, F)
    return torch.cat([x.float()[:, None], torch.sin(arg), torch.cos(arg)], dim=1)


class ConditionEncoder(ModelMixin, ConfigMixin):
    """Condition values (N, K) -> tokens (N, K * tokens_per_condition, cross_attention_dim), NaN = absent."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, conditions: list[dict], cross_attention_dim: int = 768, tokens_per_condition: int = 1,
                 num_frequencies: int = 6, hidden_dim: int = 128):
        super().__init__()
        specs = check_specs(conditions)
        if not specs:
            raise ValueError("a ConditionEncoder needs at least one condition")
        width = tokens_per_condition * cross_attention_dim
        self.numeric = nn.ModuleDict()
        self.categorical = nn.ModuleDict()
        for s in specs:
            if s["type"] == NUMERIC:
                self.numeric[s["name"]] = nn.Sequential(
                    nn.Linear(2 * num_frequencies + 1, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, width))
            else:  # the last row is the "absent" value (DiT's null class)
                self.categorical[s["name"]] = nn.Embedding(len(s["values"]) + 1, width)
                nn.init.normal_(self.categorical[s["name"]].weight, std=0.02)
        n_numeric = sum(s["type"] == NUMERIC for s in specs)
        # learned "left out" value per numeric one
        self.absent = nn.Parameter(torch.randn(n_numeric, width) * 0.02)
        self.position = nn.Parameter(
            torch.randn(len(specs) * tokens_per_condition, cross_attention_dim) * 0.02
        )
        self.norm = nn.LayerNorm(cross_attention_dim)

    # ---- the conditions this encoder takes ---------------------------------------------------------------
    @property
    def specs(self) -> list[dict[str, Any]]:
        return check_specs(self.config.conditions)

    @property
    def names(self) -> list[str]:
        return [s["name"] for s in self.config.conditions]

    @property
    def num_tokens(self) -> int:
        return len(self.config.conditions) * self.config.tokens_per_condition

    def spec(self, name: str) -> dict[str, Any]:
        for s in self.specs:
            if s["name"] == name:
                return s
        raise ConditionError(name, f"unknown condition {name!r}; this pipeline takes {self.names}")

    def check_value(self, name: str, value: Any) -> float:
        """One request value -> its column value (the label's index for a categorical), or ConditionError."""
        s = self.spec(name)
        if s["type"] == CATEGORICAL:
            if str(value) not in s["values"]:
                raise ConditionError(name, f"{name} must be one of {s['values']}, got {value!r}")
            return float(s["values"].index(str(value)))
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConditionError(name, f"{name} must be a number, got {value!r}") from None
        lo, hi = s["range"]
        if not lo <= v <= hi:  # also rejects NaN
            raise ConditionError(name, f"{name} must be within the trained range [{lo:g}, {hi:g}], got {v:g}")
        return v

    def values_tensor(self, rows: Sequence[Mapping[str, Any] | None]) -> torch.Tensor:
        """Per-row {name: value} (missing, None or NaN = absent) -> the (N, K) tensor forward() takes."""
        out = torch.full((len(rows), len(self.names)), float("nan"))
        for i, row in enumerate(rows):
            unknown = set(row or {}) - set(self.names)
            if unknown:
                name = sorted(unknown)[0]
                raise ConditionError(name, f"unknown condition {name!r}; this pipeline takes {self.names}")
            for k, name in enumerate(self.names):
                v = (row or {}).get(name)
                if v is not None and not (isinstance(v, float) and math.isnan(v)):  # NaN: an empty cell
                    out[i, k] = self.check_value(name, v)
        return out

    def absent_values(self, n: int) -> torch.Tensor:
        return torch.full((n, len(self.names)), float("nan"))

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(self, values: torch.Tensor) -> torch.Tensor:
        n, k = values.shape
        if k != len(self.names):
            raise ValueError(f"expected {len(self.names)} condition columns {self.names}, got {k}")
        values = values.to(self.device, torch.float32)
        dtype = self.absent.dtype
        parts, slot = [], 0
        for j, s in enumerate(self.specs):
            col = values[:, j]
            missing = torch.isnan(col)
            if s["type"] == NUMERIC:
                lo, hi = s["range"]
                x = (2.0 * (col.nan_to_num(lo) - lo) / (hi - lo) - 1.0).clamp(-1.5, 1.5)
                emb = self.numeric[s["name"]](fourier_features(x, self.config.num_frequencies).to(dtype))
                emb = torch.where(missing[:, None], self.absent[slot].expand_as(emb), emb)
                slot += 1
            else:
                absent_row = len(s["values"])
                idx = torch.where(missing, torch.full_like(col, absent_row), col).long()
                emb = self.categorical[s["name"]](idx.clamp(0, absent_row))
            parts.append(emb.view(n, self.config.tokens_per_condition, self.config.cross_attention_dim))
        tokens = torch.cat(parts, dim=1)  # (N, K * T, D)
        return self.norm(tokens + self.position)


def drop_conditions(values: torch.Tensor, prob: float | Sequence[float],
                    generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Independent classifier-free-guidance dropout: each (row, condition) becomes absent (NaN) with
    `prob`."""
    p = torch.as_tensor(prob, dtype=torch.float32).expand(values.shape[1])
    drop = torch.rand(values.shape, generator=generator) < p
    return values.masked_fill(drop.to(values.device), float("nan"))


def encode_context(user_encoder: nn.Module, condition_encoder: ConditionEncoder | None,
                   user_idx: torch.Tensor,
                   values: torch.Tensor | None = None) -> torch.Tensor:
    """The cross-attention context of each row: its user's tokens, then its condition tokens (N, T_u + T_c,
    D).

    Without a condition encoder (pipelines trained on identity alone) this is the user's tokens unchanged;
    `values=None` means every condition absent.
    """
    tokens = user_encoder(user_idx)  # (N, T_u, D)
    if condition_encoder is None:
        return tokens
    if values is None:
        values = condition_encoder.absent_values(len(user_idx))
    return torch.cat([tokens, condition_encoder(values).to(tokens.dtype)], dim=1)
