"""The sampling flags of the commands that sample (`dopplergen generate`, `dopplergen evaluate`): one
definition, so both say the same and `models.sampling.resolve` fills in whatever is left out."""

from __future__ import annotations

import argparse

from models.sampling import SAMPLERS
from training.cli_types import guidance_scale, positive_int


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """--steps, --guidance, --condition-guidance, --scheduler; None = the pipeline's default."""
    p.add_argument("--steps", type=positive_int, default=None,
                   help="inference steps (default: the pipeline's, else 20)")
    p.add_argument("--guidance", type=guidance_scale, default=None,
                   help="classifier-free guidance scale, 1 = none (default: the pipeline's, else 2.0; "
                        "enrolled people: 4)")
    p.add_argument("--condition-guidance", type=guidance_scale, default=None,
                   help="pipelines with conditions: condition guidance g_c, apart from --guidance which "
                        "then weighs identity (default: the pipeline's condition_guidance_scale, else "
                        "plain guidance)")
    p.add_argument("--scheduler", default=None, choices=SAMPLERS,
                   help="sampler (default: the pipeline's, else the route's own: dpmsolver++ or "
                        "vq-diffusion)")


def check_steps(pipe, steps: int) -> None:
    """--steps against what the pipeline's noise schedule has: no sampler takes more steps than the timesteps
    it was trained with (1000 for the continuous routes; the vq-diffusion route's own, e.g. 20)."""
    most = int(pipe.scheduler_config.get("num_train_timesteps", 1000))
    if steps > most:
        raise SystemExit(f"--steps {steps}: this pipeline's samplers take at most {most} steps (the "
                         "timesteps it was trained with); 20-50 is usual")
