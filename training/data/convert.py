"""One published file to a dB array: read it, crop it, invert its colour map, resize it; explain a misfit.

Used by `dopplergen import` (training/data/importer.py). Errors name the file and say what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from models import colormap, safe_files
from training.data.dataset import DatasetError

AUTO_PASSES = 3  # --crop auto: crops inside the first one while a frame line is still found


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """'Y0:Y1,X0:X1' (Python slice bounds, negative counts from the end) -> (y0, y1, x0, x1); 'auto' ->
    None."""
    if not text or text == "auto":
        return None
    try:
        (y0, y1), (x0, x1) = (tuple(int(v) for v in part.split(":")) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--crop {text!r}: expected Y0:Y1,X0:X1 (pixel rows then columns), e.g. "
                         "40:440,80:600, or auto") from None
    return y0, y1, x0, x1


def read_source(path: Path, rel: str) -> np.ndarray:
    """An image as (H, W, 3) uint8, or a .npy value array as (H, W) float64; DatasetError naming the file.

    Opened through the shared checks of every way in (models/safe_files.py): PNG/JPEG by content, pixel limit
    from the header, .npy header before data, finite values."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{rel}: listed in manifest.csv but the file is missing") from None
    except OSError as e:
        raise DatasetError(f"{rel}: cannot read ({e.strerror or e})") from None
    if path.suffix.lower() != ".npy":
        return colormap.to_rgb_uint8(safe_files.load_image(data, rel))  # grey in [0, 1] or RGB uint8
    arr = safe_files.load_npy(data, rel)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return colormap.to_rgb_uint8(arr)  # an RGB array of a colour-mapped image
    if arr.ndim != 2:
        raise DatasetError(f"{rel}: expected a 2-D numeric array or an (H, W, 3) image, got {arr.dtype} "
                           f"{arr.shape}")
    return arr.astype(np.float64)


def values_to_db(arr: np.ndarray, unit: str, dyn_range_db: float) -> np.ndarray:
    """A .npy value array in dB relative to its own peak, clipped to [-dyn_range_db, 0]."""
    if unit == "power":
        arr = 10 * np.log10(np.maximum(arr, 1e-30))
    elif unit == "amplitude":
        arr = 20 * np.log10(np.maximum(np.abs(arr), 1e-30))
    return np.clip(arr - arr.max(), -dyn_range_db, 0.0)


def colours_to_db(rgb: np.ndarray, name: str, crop: str | None,
                  dyn_range_db: float) -> tuple[np.ndarray, colormap.Inversion, colormap.Problem | None]:
    """Crop, invert the colour map `name`, diagnose: (dB image, inversion, problem or None)."""
    _, inv, problem = crop_and_invert(rgb, name, crop)
    return ((inv.value - 1.0) * dyn_range_db).astype(np.float32), inv, problem


def crop_and_invert(rgb: np.ndarray, name: str, crop: str | None
                    ) -> tuple[tuple[int, int, int, int], colormap.Inversion, colormap.Problem | None]:
    """(box kept as (y0, y1, x0, x1) in `rgb`'s pixels, its inversion through `name`, problem or None).

    'auto' crops to the detected plot area, again inside it while a frame line is still found (anti-aliased
    spines leave a line or two), up to AUTO_PASSES times."""
    h, w = rgb.shape[:2]
    box = parse_crop(crop)
    if box is not None:
        y0, y1, x0, x1 = (slice(box[0], box[1]).indices(h)[:2] + slice(box[2], box[3]).indices(w)[:2])
        if min(y1 - y0, x1 - x0) < 4:
            raise ValueError(f"--crop {crop} leaves {max(y1 - y0, 0)}x{max(x1 - x0, 0)} pixels of this image")
    else:
        y0, y1, x0, x1 = 0, h, 0, w
    return _refine(rgb, name, (y0, y1, x0, x1), AUTO_PASSES if crop == "auto" else 0)


def _refine(rgb: np.ndarray, name: str, box: tuple[int, int, int, int], passes: int):
    """Read `box` of `rgb`; while a frame is found and passes are left, crop to what it suggests."""
    y0, y1, x0, x1 = box
    inv = colormap.invert(rgb[y0:y1, x0:x1], name)
    problem = colormap.diagnose(inv, name, (y0, x0))
    for _ in range(passes):
        if problem is None or problem.kind != "frame" or problem.crop is None:
            break
        y0, y1, x0, x1 = problem.crop
        inv = colormap.invert(rgb[y0:y1, x0:x1], name)
        problem = colormap.diagnose(inv, name, (y0, x0))
    return (y0, y1, x0, x1), inv, problem


def resize_db(db: np.ndarray, n: int, dyn_range_db: float) -> np.ndarray:
    """Antialiased resize to n x n in dB (Pillow's Lanczos, its support widened when shrinking), clipped
    back."""
    img = Image.fromarray(np.ascontiguousarray(db, dtype=np.float32), mode="F").resize((n, n), Image.LANCZOS)
    return np.clip(np.asarray(img, dtype=np.float32), -dyn_range_db, 0.0)


def explain(rel: str, rgb: np.ndarray, problem: colormap.Problem, name: str, crop: str | None,
            box: tuple[int, int, int, int] | None = None) -> str:
    """A failure message that says what to do: the crop to pass (in the file's pixels, never the one given),
    or the colour maps that fit better. `box`: the part of `rgb` that was read (the crop applied)."""
    msg = f"{rel}: {problem.message}"
    y0, y1, x0, x1 = box or (0, rgb.shape[0], 0, rgb.shape[1])
    if problem.kind == "frame" and problem.crop is not None:
        final, _, left = _refine(rgb, name, problem.crop, AUTO_PASSES - 1)  # the crop that reads clean
        a, b, c, d = final if left is None else problem.crop
        if (a, b, c, d) != (y0, y1, x0, x1):
            how = "" if crop == "auto" else " (or --crop auto, per image)"
            return f"{msg}. Crop to the spectrogram: --crop {a}:{b},{c}:{d}{how}"
    kept = rgb[y0:y1, x0:x1]
    best = colormap.rank_candidates(kept, exclude=name)
    names = ", ".join(f"{n} ({e:.1f}/255)" for n, e in best)
    if problem.kind == "margin" and not (best and best[0][1] < 255 * colormap.plot_fit(kept, name)):
        return f"{msg}. Crop to the spectrogram by hand: --crop Y0:Y1,X0:X1 (rows, then columns, in pixels)"
    if best and best[0][1] >= 255 * colormap.plot_fit(kept, name):
        return (f"{msg}, and no other map fits better ({names}): heavy JPEG compression, overlays (text, "
                "markers) on the spectrogram, or a map matplotlib does not have")
    return f"{msg}. Best-fitting colour maps: {names}; pass --colormap NAME"
