"""The single mapping between dB (relative to peak, <= 0) and model space [-1, 1]."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Normalization:
    """Linear map: clip dB to [-dyn_range_db, 0], then -dyn_range_db -> -1 and 0 dB -> +1."""

    dyn_range_db: float = 60.0  # dB below the peak that are kept; quieter bins are clipped
    kind: str = "linear_db"  # recorded in dopplergen.json so a future mapping can be told apart

    def __post_init__(self) -> None:
        if not (self.dyn_range_db > 0 and np.isfinite(self.dyn_range_db)):
            raise ValueError(f"dyn_range_db must be a positive number, got {self.dyn_range_db!r}")
        if self.kind != "linear_db":
            raise ValueError(f"unknown normalisation kind {self.kind!r} (expected 'linear_db')")

    def to_model(self, db: ArrayT) -> ArrayT:
        """dB -> [-1, 1]."""
        r = float(self.dyn_range_db)
        if isinstance(db, torch.Tensor):
            return db.clamp(-r, 0.0) * (2.0 / r) + 1.0
        return (np.clip(db, -r, 0.0) * (2.0 / r) + 1.0).astype(np.float32, copy=False)

    def to_db(self, x: ArrayT) -> ArrayT:
        """[-1, 1] -> dB; the exact inverse of to_model on [-dyn_range_db, 0]."""
        r = float(self.dyn_range_db)
        if isinstance(x, torch.Tensor):
            return (x.clamp(-1.0, 1.0) - 1.0) * (r / 2.0)
        return ((np.clip(x, -1.0, 1.0) - 1.0) * (r / 2.0)).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Normalization:
        """The mapping of a dataset folder, from its meta.json (60 dB when the folder does not say, e.g. PNG
        folders)."""
        return cls(dyn_range_db=float(meta.get("dyn_range_db", cls.dyn_range_db)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        unknown = set(d) - {"dyn_range_db", "kind"}
        if unknown:
            raise ValueError(f"unknown normalisation fields: {sorted(unknown)}")
        return cls(**d)
