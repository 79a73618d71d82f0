"""Physical axes of a spectrogram (Doppler in Hz per row, seconds per time frame, carrier) from dataset meta."""

from __future__ import annotations

from typing import Any

AXIS_KEYS = ("doppler_hz_row0", "doppler_hz_per_bin", "doppler_axis", "seconds_per_frame", "carrier_hz")


def spectrogram_axes(meta: dict[str, Any] | None, image_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """The axes of an (H, W) image: row 0's Doppler, the step between rows, the row order, time per column and
    the carrier; each None when the dataset meta does not record it (e.g. a pipeline trained on bare images).

    Row i is at `doppler_hz_row0 - i * doppler_hz_per_bin` for a "descending" axis (row 0 = most positive
    Doppler = approaching), `+` for "ascending". When the dataset was stored at another size than the model's,
    the steps are rescaled the way the training reader resizes (edges kept, bins stretched).
    """
    meta = dict(meta or {})
    old_h, old_w = (meta.get("image_size") or image_size or (1, 1))[:2]
    h, w = image_size or (old_h, old_w)  # None: the size the meta describes
    descending = str(meta.get("doppler_axis", "descending")).startswith("desc")
    row0 = step = None
    if isinstance(meta.get("doppler_hz"), list) and len(meta["doppler_hz"]) >= 2:  # an explicit axis
        axis = [float(f) for f in meta["doppler_hz"]]
        row0, step, old_h = axis[0], abs(axis[1] - axis[0]), len(axis)
        descending = axis[0] > axis[-1]
    elif "doppler_hz_row0" in meta and "doppler_hz_per_bin" in meta:
        row0, step = float(meta["doppler_hz_row0"]), float(meta["doppler_hz_per_bin"])
    if row0 is not None and old_h != h:
        edge = row0 + (step / 2 if descending else -step / 2)  # outer edge of row 0
        step = step * old_h / h
        row0 = edge - (step / 2 if descending else -step / 2)
    spf = meta.get("seconds_per_frame")
    spf = None if spf is None else float(spf) * old_w / w
    carrier = meta.get("carrier_hz")
    return {
        "doppler_hz_row0": row0,
        "doppler_hz_per_bin": step,
        "doppler_axis": "descending" if descending else "ascending",
        "seconds_per_frame": spf,
        "carrier_hz": None if carrier is None else float(carrier),
    }


def pipeline_axes(pipeline_meta: dict[str, Any], image_size: tuple[int, int]) -> dict[str, Any]:
    """Axes of the pipeline's output, from the dataset meta that training recorded in dopplergen.json."""
    dataset = pipeline_meta.get("dataset") or {}
    return spectrogram_axes(dataset.get("meta") if isinstance(dataset, dict) else None, image_size)
