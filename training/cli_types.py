"""Argument types and shared flags of the `dopplergen` subcommands: the one place ranges are checked.

An argparse `type=` that raises ArgumentTypeError gives the usual one-line usage error (exit 2) naming the
flag, before any model is loaded; the subcommands' add_arguments use these instead of a bare `int`/`float`.
"""

from __future__ import annotations

import argparse


def _number(kind: type, text: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and value != value:  # NaN passes every comparison below
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, batch sizes, counts)."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# Guidance scales as the service takes them (service/schemas.py: 0..50): 0 = unconditional, 1 = no guidance.
MAX_GUIDANCE = 50.0


def guidance_scale(text: str) -> float:
    value = _number(float, text)
    if not 0.0 <= value <= MAX_GUIDANCE:
        raise argparse.ArgumentTypeError(f"must be within 0..{MAX_GUIDANCE:g} (1 = no guidance), got {value}")
    return value


def fraction(text: str) -> float:
    """A number within [0, 1] (probabilities, thresholds)."""
    value = _number(float, text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {value}")
    return value


def k_list(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers, e.g. few-shot k values "5,10,20"."""
    values = tuple(positive_int(v) for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def strength(text: str) -> float:
    """A number within (0, 1]: how much of the sampling schedule a sample started from a recording runs."""
    value = _number(float, text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within (0, 1], got {value}")
    return value


# --threads' default on the heavy commands: one thread. On a CPU other jobs share, torch's default (one per
# core) measured 1.9x (autoencoder step) to 9x (UNet step) slower than one thread (benchmarks/threads.py,
# benchmarks/RESULTS.md "Threads"): the extra OpenMP threads wait at barriers for cores that are busy.
DEFAULT_THREADS = 1
THREADS_HELP = ("CPU threads for torch (default 1: on a shared machine 1.9-9x faster than torch's one per "
                "core, benchmarks/RESULTS.md; on an idle many-core machine try the core count)")


def add_threads_argument(p: argparse.ArgumentParser, default: int | None = DEFAULT_THREADS,
                         help: str = THREADS_HELP) -> None:
    p.add_argument("--threads", type=positive_int, default=default, metavar="N", help=help)


def set_threads(n: int | None) -> None:
    """Apply --threads (None: leave torch's default)."""
    if n:
        import torch

        torch.set_num_threads(n)
