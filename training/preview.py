"""PNG grids of spectrograms, one row per label (a user, or "user real" / "user generated"), axes in m/s and s."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.physics import axes_from_meta  # noqa: E402

# Fixed PNG metadata (no software version or timestamp) so the same grid gives the same bytes.
PNG_METADATA = {"Software": None}


def spectrogram_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], meta: dict[str, Any], out_path: str | Path,
                     title: str | None = None, cmap: str = "jet", panel_in: float = 1.3) -> Path:
    """Save a grid: each row is (label, list of (doppler, time) dB arrays), drawn with the dataset's axes."""
    n_rows = len(rows)
    n_cols = max(1, max(len(imgs) for _, imgs in rows))
    dyn = float(meta.get("dyn_range_db", 60.0))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.6 + panel_in * n_cols, 0.5 + panel_in * n_rows),
                             squeeze=False, sharex=True, sharey=True)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(imgs):
                ax.axis("off")
                continue
            img = np.asarray(imgs[c], dtype=np.float32)
            img = img[0] if img.ndim == 3 else img
            extent = None
            if "seconds_per_frame" in meta and ("doppler_hz_row0" in meta or "doppler_hz" in meta):
                f, t = axes_from_meta(meta, img.shape)
                to_v = meta.get("wavelength_m", 299_792_458.0 / meta["carrier_hz"]) / 2
                half_f = abs(f[1] - f[0]) / 2
                extent = (0.0, t[-1] + t[0], (f[-1] - np.sign(f[0] - f[-1]) * half_f) * to_v,
                          (f[0] + np.sign(f[0] - f[-1]) * half_f) * to_v)
            ax.imshow(img, aspect="auto", cmap=cmap, vmin=-dyn, vmax=0.0, extent=extent, interpolation="nearest",
                      origin="upper")
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.set_ylabel(f"{label}\nm/s" if extent else label, fontsize=7)
            if r == n_rows - 1:
                ax.set_xlabel("s" if extent else "frame", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out_path)
    fig.savefig(out, dpi=80, metadata=PNG_METADATA)
    plt.close(fig)
    return out
