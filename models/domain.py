"""How far recordings are from a pipeline's domain: its stage 1's reconstruction error on them against its own
held-out error.

A pipeline reconstructs the recordings of the radar it was trained on to within a few dB; another radar's
(other carrier, STFT, clutter, noise, Doppler span) it reconstructs worse, and then enrolment learns a row for
a person the generator cannot draw. The reference is measured when a pipeline is made (train-unet's export,
`dopplergen adapt`) on held-out recordings of its own data and stored in dopplergen.json["domain"]; a check
divides the recordings' error by it. Past WARN_RATIO the check says so and names `dopplergen adapt`
(docs/adapt.md). Used by `dopplergen enroll`, `POST /users` (its status) and `dopplergen import --pipeline`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from models.texture import reconstructions

# Error ratio above which recordings are called out of domain. Measured on the demo (docs/adapt.md): 6 people
# of its own simulator it never saw 0.99x (2.23 dB); the same simulator's walkers as another radar renders
# them (experiments/other_radar.py: 5.8 GHz, +-5 m/s, strong clutter) 1.56-1.57x (3.49-3.52 dB).
WARN_RATIO = 1.3
ADAPT_HINT = ("dopplergen adapt --pipeline P --data YOUR_DATASET --out P_ADAPTED, and check the samples with "
              "dopplergen generate --check-with (docs/adapt.md)")


@dataclass(frozen=True)
class DomainCheck:
    """Reconstruction error of some recordings (mean |x - D(E(x))| in dB) against the pipeline's own."""

    recon_error_db: float
    reference_db: float | None  # None: the pipeline records no reference (made before this check existed)

    @property
    def ratio(self) -> float | None:
        return None if not self.reference_db else self.recon_error_db / self.reference_db

    @property
    def out_of_domain(self) -> bool:
        return self.ratio is not None and self.ratio > WARN_RATIO

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": None if self.ratio is None else round(self.ratio, 3),
                "out_of_domain": self.out_of_domain, "warn_ratio": WARN_RATIO}

    def line(self) -> str:
        """One line for a log or a status: the numbers, and the command to run when out of domain."""
        if self.ratio is None:
            return (f"stage-1 reconstruction error {self.recon_error_db:.2f} dB (this pipeline records no "
                    "reference of its own)")
        head = (f"stage-1 reconstruction error {self.recon_error_db:.2f} dB, {self.ratio:.2f}x the "
                f"pipeline's own held-out {self.reference_db:.2f} dB")
        if not self.out_of_domain:
            return head + ": within its domain"
        return (f"{head}: these recordings look unlike the pipeline's data (another radar?); samples may not "
                f"help a classifier. Adapt it first: {ADAPT_HINT}")


@torch.no_grad()
def recon_error_db(pipe: Any, x_db: np.ndarray | torch.Tensor, limit: int = 64) -> float:
    """Mean absolute dB error of stage 1's reconstruction of (up to `limit` of) recordings (N, C, H, W)."""
    x = torch.as_tensor(np.asarray(x_db, np.float32))[:limit]
    _, resid = reconstructions(pipe.vae, pipe.normalization, x)
    return float(resid.abs().mean())


def reference_db(meta: dict[str, Any]) -> float | None:
    ref = (meta.get("domain") or {}).get("heldout_recon_error_db")
    return float(ref) if ref else None


def check(pipe: Any, x_db: np.ndarray | torch.Tensor) -> DomainCheck:
    return DomainCheck(round(recon_error_db(pipe, x_db), 4), reference_db(pipe.meta))


def reference(pipe: Any, heldout_db: np.ndarray | torch.Tensor, source: str) -> dict[str, Any]:
    """dopplergen.json["domain"] for a pipeline: its error on held-out recordings of its own data."""
    return {"heldout_recon_error_db": round(recon_error_db(pipe, heldout_db, limit=256), 4),
            "source": source, "n": int(min(len(heldout_db), 256))}
