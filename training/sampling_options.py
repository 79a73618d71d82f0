"""The sampling flags of the commands that sample (`dopplergen generate`, `dopplergen evaluate`): one
definition, so both say the same and `models.sampling.resolve` fills in whatever is left out."""

from __future__ import annotations

import argparse

from models.sampling import SAMPLERS


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """--steps, --guidance, --condition-guidance, --scheduler; None = the pipeline's default."""
    p.add_argument("--steps", type=int, default=None,
                   help="inference steps (default: the pipeline's, else 20)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale, 1 = none (default: the pipeline's, else 2.0; "
                        "enrolled people: 4)")
    p.add_argument("--condition-guidance", type=float, default=None,
                   help="pipelines with conditions: condition guidance g_c, apart from --guidance which "
                        "then weighs identity (default: the pipeline's condition_guidance_scale, else "
                        "plain guidance)")
    p.add_argument("--scheduler", default=None, choices=SAMPLERS,
                   help="sampler (default: the pipeline's, else the route's own: dpmsolver++ or "
                        "vq-diffusion)")
