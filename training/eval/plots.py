"""Every figure of the project (matplotlib, Agg backend): spectrogram grids with the dataset's axes, loss
curves, the evaluation report's charts and the route comparison's bars. Fixed PNG metadata, so a figure's
bytes repeat."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset_folder import axes_from_meta
from training.data.dataset import DEFAULT_DYN_RANGE_DB

# Fixed PNG metadata (no software version or timestamp) so the same grid gives the same bytes.
PNG_METADATA = {"Software": None}
CMAP = "jet"  # one colour map for every spectrogram: the dataset previews, training grids and the report


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, imported on first use (so importing this module is
    cheap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---- spectrograms ------------------------------------------------------------------------------------------
def spectrogram_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], meta: dict[str, Any],
                     out_path: str | Path,
                     title: str | None = None, cmap: str = CMAP, panel_in: float = 1.3) -> Path:
    """Save a grid: each row is (label, list of (doppler, time) dB arrays), drawn with the dataset's axes."""
    plt = pyplot()
    n_rows = len(rows)
    n_cols = max(1, max(len(imgs) for _, imgs in rows))
    dyn = float(meta.get("dyn_range_db", DEFAULT_DYN_RANGE_DB))
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
            ax.imshow(img, aspect="auto", cmap=cmap, vmin=-dyn, vmax=0.0, extent=extent,
                      interpolation="nearest",
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


# ---- training curves ---------------------------------------------------------------------------------------
def plot_losses(rows: list[dict[str, Any]], keys: list[str], path: str | Path, title: str) -> Path | None:
    """Loss curves from the JSONL rows, raw and smoothed, log-scale."""
    rows = [r for r in rows if any(k in r for k in keys)]
    if not rows:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None and r[key] > 0]
        if not pts:
            continue
        s, v = map(np.asarray, zip(*pts, strict=True))
        ax.plot(s, v, alpha=0.35, lw=0.8)
        k = max(1, len(v) // 20)
        if k > 1:
            ax.plot(s[k - 1:], np.convolve(v, np.ones(k) / k, mode="valid"), lw=1.6)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# ---- the evaluation report ---------------------------------------------------------------------------------
def real_vs_generated_figure(rows: list[tuple[str, list[np.ndarray], list[np.ndarray]]], meta: dict[str, Any],
                             path: Path, title: str) -> Path:
    """Per user a 'real' row above a 'generated' row: same colour map, colour limits and axes
    (spectrogram_grid)."""
    grid = []
    for user, real, gen in rows:
        grid += [(f"{user} real", real), (f"{user} generated", gen)]
    return spectrogram_grid(grid, meta, path, title=title, cmap=CMAP)


def metrics_figure(targets: list[dict[str, Any]], path: Path) -> Path:
    """Bar chart: each headline metric against its target (green = met, red = missed)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(targets) + 1.2))
    names = [t["name"] for t in targets]
    vals = [t["value"] if t["value"] is not None and math.isfinite(t["value"]) else 0.0 for t in targets]
    colours = ["tab:green" if t["pass"] else ("tab:gray" if t["pass"] is None else "tab:red")
               for t in targets]
    y = np.arange(len(targets))
    ax.barh(y, vals, color=colours)
    for i, t in enumerate(targets):
        ax.plot([t["target"]] * 2, [i - 0.4, i + 0.4], "k--", lw=1)
        ax.text(max(vals[i], 0) + 0.01, i, f"{t['display']} (target {t['op']} {t['target_display']})",
                va="center",
                fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(min(0.0, min(vals) - 0.05), max(1.3, max(vals) + 0.6))
    ax.set_title("headline metrics vs targets (dashed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def sweep_figure(sweep: list[dict[str, Any]], path: Path) -> Path:
    """Affinity and Fréchet distance against sampler/steps (left) and against guidance scale (right)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6))
    samplers = [s for s in sweep if s["kind"] == "sampler"]
    guid = sorted((s for s in sweep if s["kind"] == "guidance"), key=lambda s: s["guidance"])
    labels = [f"{s['scheduler']}\n{s['steps']} steps" for s in samplers]
    x = np.arange(len(samplers))
    for row, (key, name) in enumerate((("affinity", "affinity (GAN-test acc.)"),
                                       ("fd_small", "Fréchet distance (N small)"))):
        axes[row][0].bar(x, [s[key] for s in samplers], color="tab:blue")
        axes[row][0].set_xticks(x, labels, fontsize=7)
        axes[row][0].set_ylabel(name, fontsize=8)
        axes[row][1].plot([s["guidance"] for s in guid], [s[key] for s in guid], "o-")
        axes[row][1].set_xlabel("guidance scale", fontsize=8)
        axes[row][1].set_ylabel(name, fontsize=8)
    n_small = samplers[0]["n_small"] if samplers else 0
    fig.suptitle(f"sampler sweep (Fréchet distance on the same {n_small} seeds for every setting)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def augmentation_figure(summary: dict[str, dict[str, Any]], path: Path) -> Path:
    """Test accuracy vs real recordings per user: real only vs real + synthetic (mean ± std over seeds)."""
    plt = pyplot()
    ks = list(summary)
    x = np.arange(len(ks))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, name, off in (("acc_real", "real only", -0.1), ("acc_augmented", "real + synthetic", 0.1)):
        ax.errorbar(x + off, [summary[k][key]["mean"] for k in ks], yerr=[summary[k][key]["std"] for k in ks],
                    fmt="o-", capsize=3, label=name)
    ax.set_xticks(x, [f"k={k}" for k in ks])
    ax.set_ylabel("real test accuracy")
    ax.set_title("augmentation gain", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# ---- the route comparison ----------------------------------------------------------------------------------
def metric_bars(rows: list[dict[str, Any]], metrics: Sequence[tuple[str, str, bool, Any]],
                path: Path) -> Path:
    """One bar chart per metric (key, label, higher is better?, tolerance), one bar per route."""
    plt = pyplot()
    keys = list(metrics)
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(2.3 * ((len(keys) + 1) // 2), 5.2),
                             squeeze=False)
    colours = {"kl": "tab:blue", "vq-latent": "tab:orange", "vq-diffusion": "tab:green"}
    for ax, (key, label, higher, _) in zip(axes.flat, keys, strict=False):
        vals = [r.get(key) for r in rows]
        ax.bar(range(len(rows)), [v if v is not None else 0 for v in vals],
               color=[colours.get(r["route"], "grey") for r in rows])
        ax.set_xticks(range(len(rows)), [r["route"] for r in rows], rotation=30, fontsize=7)
        ax.set_title(f"{label}\n({'higher' if higher else 'lower'} is better)", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata=PNG_METADATA)
    plt.close(fig)
    return Path(path)
