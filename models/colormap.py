"""Colour-mapped spectrogram images back to values: the nearest colour on a matplotlib colour map's curve.

A published micro-Doppler image shows a value v in [0, 1] as the colour cmap(v). Inverting it is a
nearest-neighbour search of each pixel's RGB among a dense sampling of the map's curve (scipy cKDTree). The
distance to the curve is the inversion error: a few 8-bit levels for a clean PNG or JPEG in that map, large
for pixels that are not map colours at all (axes, tick labels, white margins, another map). Where those
pixels sit tells a frame or colour bar (rows and columns at the edges, crop it) from a wrong map (everywhere).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

# Tried, in this order, when the asked map does not fit; any matplotlib name (and its "_r" twin) is accepted.
CANDIDATES = ("jet", "turbo", "viridis", "plasma", "inferno", "magma", "cividis", "gray", "hot", "rainbow",
              "nipy_spectral", "gist_ncar", "hsv", "coolwarm", "bone", "copper", "cubehelix")
# samples of the map's curve: 1/2047 of the value range between neighbours (0.03 dB of 60)
CURVE_POINTS = 2048
OFF_MAP = 0.15  # a pixel this far from the curve (Euclidean RGB in [0, 1], ~38 of 255) is not a map colour
# JPEG's 4:2:0 chroma subsampling smears jet's sharp hue changes: a quality-90 JPEG of a jet spectrogram
# measured 10/255 mean error with 4% of pixels off the map; the plot area of a small matplotlib figure (3x2.5
# in at 60 dpi, colours blended when resampled, strong zero-Doppler line) saved at quality 75 measured up to
# 23/255 with 17% off, and still read within 3 dB of the truth; a wrong map measured 50..120/255 with 70..100%
# off.
FIT_OK = 0.10  # largest mean inversion error of a usable image in its map (25 of 255)
OFF_OK = 0.20  # largest fraction of off-map pixels in a usable image
FRAME_LINE = 0.5  # a row/column with more off-map pixels than this is frame, margin or label, not spectrogram
BG_NEAR = 0.1  # a pixel this close to the figure's background colour (RGB in [0, 1]) is background
MIN_PLOT = 0.2  # a plot area covers at least this fraction of a figure
MARGIN_MAX = 0.25  # ... and at most this fraction of it has the figure's margin colour
MIN_SPREAD = 0.15  # ... and its values span at least this much of the map (9 dB of 60)
BG_LINE = 0.5  # a line with at least this fraction of background pixels is a margin or gap, not data


@dataclass(frozen=True)
class Inversion:
    """One image read through one colour map: values on the map and each pixel's distance from it."""

    value: np.ndarray  # (H, W) float in [0, 1]: position on the map's curve (0 = its first colour)
    distance: np.ndarray  # (H, W) float: RGB distance from the curve (0..sqrt(3))
    rgb: np.ndarray | None = None  # (H, W, 3) uint8: the pixels read (tells a figure's background colour)

    @property
    def mean_error(self) -> float:
        return float(self.distance.mean())

    @property
    def off_fraction(self) -> float:
        return float((self.distance > OFF_MAP).mean())


@functools.lru_cache(maxsize=32)
def _curve(name: str):
    """(K, 3) dense RGB samples along the map, linearly interpolated between its table entries, and a
    KD-tree."""
    import matplotlib
    from scipy.spatial import cKDTree

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        hint = " (MATLAB's parula is not in matplotlib; try viridis or turbo)" if name == "parula" else ""
        raise ValueError(f"unknown colour map {name!r}{hint}; use a matplotlib name such as "
                         f"{', '.join(CANDIDATES[:8])}") from None
    table = cmap(np.linspace(0.0, 1.0, cmap.N))[:, :3]  # (N, 3)
    t = np.linspace(0.0, 1.0, CURVE_POINTS)
    dense = np.stack([np.interp(t, np.linspace(0.0, 1.0, len(table)), table[:, c]) for c in range(3)], axis=1)
    return dense, cKDTree(dense)


def check_name(name: str) -> None:
    """Raise ValueError for a colour map matplotlib does not know."""
    _curve(name)


def invert(rgb: np.ndarray, name: str) -> Inversion:
    """Nearest point of the map's curve for every pixel of an (H, W, 3) uint8 image (unique colours queried
    once)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    _, tree = _curve(name)
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    uniq, inverse = np.unique(codes.ravel(), return_inverse=True)
    colours = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1) / 255.0  # (U, 3)
    dist, idx = tree.query(colours)
    value = (idx / (CURVE_POINTS - 1))[inverse].reshape(codes.shape)
    return Inversion(value=value.astype(np.float32),
                     distance=dist[inverse].reshape(codes.shape).astype(np.float32), rgb=rgb)


def _longest_run(ok: np.ndarray) -> tuple[int, int]:
    """(start, stop) of the longest run of True in a 1-D mask ((0, 0) when there is none)."""
    best, start = (0, 0), None
    for i, flag in enumerate([*ok.tolist(), False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            best = max(best, (start, i), key=lambda r: r[1] - r[0])
            start = None
    return best


def ring_mask(rgb: np.ndarray, side_min: float = 0.0) -> np.ndarray:
    """(H, W) bool: pixels of the colour most of the outermost ring has (>= 80% of it, and >= `side_min` of
    each of its four sides); all False when the ring has no such colour."""
    f = rgb.astype(np.float32) / 255
    lines = [f[0], f[-1], f[:, 0], f[:, -1]]
    colour = np.median(np.concatenate(lines), axis=0)
    near = [np.linalg.norm(line - colour, axis=-1) < BG_NEAR for line in lines]
    if np.concatenate(near).mean() < 0.8 or min(n.mean() for n in near) < side_min:
        return np.zeros(rgb.shape[:2], dtype=bool)
    return np.linalg.norm(f - colour, axis=-1) < BG_NEAR


def margin_mask(inv: Inversion) -> np.ndarray:
    """(H, W) bool: a figure's margin, the colour of most of its outermost ring, when that is not a bare
    spectrogram's noise floor: off the map (white on jet), or on it in its upper half (white is 0 dB on
    gist_ncar, gray or hot) and filling >= 90% of all four sides (a spectrogram's lines cross its left and
    right edges). All False without rgb."""
    none = np.zeros(inv.value.shape, dtype=bool)
    ring = none if inv.rgb is None else ring_mask(inv.rgb)
    if not ring.any():
        return none
    if inv.distance[ring].mean() > OFF_MAP:
        return ring
    return ring if inv.value[ring].mean() > 0.5 and ring_mask(inv.rgb, side_min=0.9).any() else none


def _separates(band: np.ndarray, bg_frac: np.ndarray, n: int) -> bool:
    """Whether a band of off-map lines between two blocks of map lines is a frame (the end of a plot) rather
    than data: a gap to a colour bar or margin holds a straight, full-length line of the figure's background
    (uniform: >= BG_LINE of its pixels the border's colour); a sharp line of the spectrogram (a zero-Doppler
    line smeared by JPEG's chroma subsampling) has map colours on both sides and none."""
    return band.size > max(2, n // 100) and (band.size > n // 8 or bool((bg_frac[band] >= BG_LINE).any()))


def _run_of_map_lines(off: np.ndarray, bg: np.ndarray) -> tuple[int, int]:
    """(start, stop) of the longest block of rows that are mostly map colours, bridging bands of off-map
    rows that do not `_separates` (off, bg: (n, k) masks over the current box's columns)."""
    n = off.shape[0]
    ok = off.mean(axis=1) < FRAME_LINE
    bg_frac = bg.mean(axis=1) if bg.size else np.zeros(n)
    idx = np.flatnonzero(ok)
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        if b - a > 1 and not _separates(np.arange(a + 1, b), bg_frac, n):
            ok[a + 1 : b] = True
    return _longest_run(ok)


def _plot_box(off: np.ndarray, margin: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the largest block of mostly-map lines: columns over the block's rows and back,
    twice.

    Margins, axes and labels fill whole lines with off-map pixels; a gap of background between the plot and
    a colour bar separates them. Bands of off-map lines inside the plot (blended or JPEG-smeared colours of a
    sharp line, e.g. a strong zero-Doppler line) are bridged: they hold no line of the figure's background
    (`_separates`).
    """
    h, w = off.shape
    is_bg = np.zeros((h, w), dtype=bool) if margin is None else margin
    y0, y1, x0, x1 = 0, h, 0, w
    for _ in range(2):
        x0, x1 = _run_of_map_lines(off[y0:y1].T, is_bg[y0:y1].T)
        if x1 == x0:
            return 0, 0, 0, 0  # no column is mostly map colours: nothing to crop to
        y0, y1 = _run_of_map_lines(off[:, x0:x1], is_bg[:, x0:x1])
        if y1 == y0:
            return 0, 0, 0, 0
    return y0, y1, x0, x1


def _bar_run(value: np.ndarray, axis: int) -> tuple[int, int] | None:
    """A colour bar along `axis`: >= 3 neighbouring lines, alike, each running monotonically over most of the
    map."""
    v = value if axis == 1 else value.T  # columns of v are the candidate bar lines
    h, w = v.shape
    if w < 8 or h < 8:
        return None
    ramp = np.arange(h) - (h - 1) / 2
    vc = v - v.mean(axis=0)
    corr = (ramp @ vc) / (np.linalg.norm(ramp) * np.linalg.norm(vc, axis=0) + 1e-9)
    alike = np.r_[np.abs(np.diff(v, axis=1)).mean(axis=0) < 0.01, False]
    alike |= np.r_[False, alike[:-1]]
    bar = (np.abs(corr) > 0.98) & (np.ptp(v, axis=0) > 0.5) & alike
    start, stop = _longest_run(bar)
    if stop - start < 3 or (start > 0.3 * w and stop < 0.7 * w):  # colour bars sit at an edge
        return None
    return start, stop


@dataclass(frozen=True)
class Problem:
    """Why an image cannot be read through the map as it is, and the crop (y0, y1, x0, x1) that would help."""

    # "frame" (axes, margins, labels or a colour bar around the spectrogram), "colormap" (a misfit), or
    # "margin" (what fits the map is the figure's margin: a map ending in the margin's colour, or a misfit)
    kind: str
    message: str
    crop: tuple[int, int, int, int] | None = None


def diagnose(inv: Inversion, name: str, origin: tuple[int, int] = (0, 0)) -> Problem | None:
    """None for a clean image in this map; else a frame/colour bar (with a suggested crop) or a misfit map.

    `origin`: where this image's pixel (0, 0) sits in the file (after a crop), so that the rows, columns and
    crop the problem names are the file's, ready to paste."""
    h, w = inv.value.shape
    oy, ox = origin
    margin = margin_mask(inv)
    y0, y1, x0, x1 = _plot_box(inv.distance > OFF_MAP, margin)
    framed = (y1 - y0, x1 - x0) != (h, w)
    clean = inv.mean_error <= FIT_OK and inv.off_fraction <= OFF_OK
    if y1 > y0 and x1 > x0 and margin[y0:y1, x0:x1].mean() > MARGIN_MAX:  # the figure's margin, not a plot
        return Problem("margin", f"has no plot area in the {name} colour map: what fits it is mostly the "
                       f"figure's margin colour (which covers {margin.mean():.0%} of the image)")
    if clean and not framed:
        for axis in (1, 0):
            run = _bar_run(inv.value, axis)
            if run is not None:
                c = _crop_beside(run, axis, h, w)
                what, o = ("columns", ox) if axis == 1 else ("rows", oy)
                return Problem("frame", f"looks like it carries a colour bar ({what} {o + run[0]}.."
                               f"{o + run[1] - 1} are a ramp through the {name} map)",
                               (oy + c[0], oy + c[1], ox + c[2], ox + c[3]))
        return None
    if framed and (y1 - y0) * (x1 - x0) >= MIN_PLOT * h * w:
        inner = Inversion(inv.value[y0:y1, x0:x1], inv.distance[y0:y1, x0:x1])
        if inner.mean_error <= FIT_OK and _spread(inner.value) >= MIN_SPREAD:
            pad = 1  # step inside anti-aliased frame lines
            crop = (oy + y0 + pad, oy + y1 - pad, ox + x0 + pad, ox + x1 - pad)
            return Problem("frame", "looks like it carries axes, margins or a colour bar: "
                                    f"{inv.off_fraction:.0%} of its pixels are not {name} colours, in whole "
                                    f"rows/columns around rows {oy + y0}..{oy + y1 - 1}, columns "
                                    f"{ox + x0}..{ox + x1 - 1}", crop)
    return Problem("colormap", f"does not fit the {name} colour map: mean inversion error "
                   f"{255 * inv.mean_error:.1f}/255, {inv.off_fraction:.0%} of pixels off the map")


def _crop_beside(run: tuple[int, int], axis: int, h: int, w: int) -> tuple[int, int, int, int]:
    """The larger side of the image next to a colour bar at `run` (columns if axis == 1, else rows)."""
    n = w if axis == 1 else h
    lo, hi = (0, run[0]) if run[0] >= n - run[1] else (run[1], n)
    return (0, h, lo, hi) if axis == 1 else (lo, hi, 0, w)


def plot_fit(rgb: np.ndarray, name: str) -> float:
    """Mean inversion error of a figure through `name` where a spectrogram would be: inside the plot area
    that map finds (when >= MIN_PLOT of the image), without the pixels of the figure's margin colour (white
    margins lie on maps that end in white, such as gist_ncar, and would make them look best)."""
    inv = invert(rgb, name)
    h, w = inv.value.shape
    ring = ring_mask(rgb)
    y0, y1, x0, x1 = _plot_box(inv.distance > OFF_MAP, margin_mask(inv))
    if ((y1 - y0) * (x1 - x0) < MIN_PLOT * h * w or ring[y0:y1, x0:x1].mean() > MARGIN_MAX
            or _spread(inv.value[y0:y1, x0:x1]) < MIN_SPREAD):  # not a plot: margin, labels, one colour
        y0, y1, x0, x1 = 0, h, 0, w
    dist, margin = inv.distance[y0:y1, x0:x1], ring[y0:y1, x0:x1]
    return float(dist[~margin].mean()) if (~margin).mean() >= MIN_PLOT else float(dist.mean())


def _spread(value: np.ndarray) -> float:
    """How much of the map an image's values span (1st to 99th percentile): a spectrogram's noise floor and
    lines span much of it, a margin, a label or a plain patch of noise floor hardly any."""
    return float(np.subtract(*np.percentile(value, [99, 1]))) if value.size else 0.0


def rank_candidates(rgb: np.ndarray, exclude: str = "", top: int = 3) -> list[tuple[str, float]]:
    """The `top` maps of CANDIDATES that fit `rgb` best (`plot_fit`), as (name, mean error of 255)."""
    scores = [(name, 255 * plot_fit(rgb, name)) for name in CANDIDATES if name != exclude]
    return sorted(scores, key=lambda s: s[1])[:top]


def to_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3/4) colour, uint8/uint16/float in [0, 1], as (H, W, 3) uint8."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"expected a grey (H, W) or colour (H, W, 3|4) image, got shape {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a // 257).astype(np.uint8)
    return np.clip(np.rint(a.astype(np.float64) * 255), 0, 255).astype(np.uint8)
