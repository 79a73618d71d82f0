"""Physical axes of the pipeline's output for /info. The axes of dataset meta are the dataset contract's
(models/dataset_folder.py `spectrogram_axes`), shared with the training reader's resize."""

from __future__ import annotations

from typing import Any

from models.dataset_folder import AXIS_KEYS as AXIS_KEYS
from models.dataset_folder import spectrogram_axes as spectrogram_axes


def pipeline_axes(pipeline_meta: dict[str, Any], image_size: tuple[int, int]) -> dict[str, Any]:
    """Axes of the pipeline's output, from the dataset meta that training recorded in dopplergen.json."""
    dataset = pipeline_meta.get("dataset") or {}
    return spectrogram_axes(dataset.get("meta") if isinstance(dataset, dict) else None, image_size)
