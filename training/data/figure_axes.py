"""Physical axes of imported figures: `--doppler-range LO:HI` and `--time-range T0:T1` -> meta.json's
`doppler_hz_row0`, `doppler_hz_per_bin`, `doppler_axis`, `seconds_per_frame` (and `carrier_hz`).

LO and HI are the values at the bottom and top edges of the image that is kept (after --crop), read off the
figure's axis as it is drawn: LO at the bottom, HI at the top. Each is a number with an optional unit: Hz
(default), kHz or m/s; a unit written once applies to both ends (`-4:4m/s`). Speeds become Doppler through
f = 2 v f_c / c, so m/s needs --carrier-hz. The image is resized to N rows, so a bin is |HI - LO| / N wide
and row 0 (the top) is centred half a bin inside HI.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

SPEED_OF_LIGHT = 299_792_458.0
UNITS = {"hz": 1.0, "khz": 1e3, "m/s": None}
_END = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*(hz|khz|m/s)?\s*$", re.IGNORECASE)
DESCENDING = "descending (row 0 = most positive Doppler = approaching)"
ASCENDING = "ascending (row 0 = most negative Doppler = receding)"


def _ends(flag: str, text: str, example: str) -> tuple[tuple[float, str | None], tuple[float, str | None]]:
    parts = text.split(":")
    found = [_END.match(p) for p in parts] if len(parts) == 2 else []
    if len(found) != 2 or not all(found):
        raise ValueError(f"{flag} {text!r}: expected LO:HI, e.g. {example}")
    (lo, lo_unit), (hi, hi_unit) = ((float(m[1]), m[2] and m[2].lower()) for m in found)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{flag} {text!r}: the ends must be finite numbers")
    if lo == hi:
        raise ValueError(f"{flag} {text!r}: the two ends are equal")
    return (lo, lo_unit), (hi, hi_unit)


def parse_doppler_range(text: str, carrier_hz: float | None) -> tuple[float, float]:
    """'LO:HI' -> (Doppler at the bottom edge, at the top edge) in Hz; ValueError that says what is wrong."""
    (lo, lo_unit), (hi, hi_unit) = _ends("--doppler-range", text, "-400:400, -400Hz:400Hz, -4m/s:4m/s or "
                                         "-4:4m/s (bottom edge of the image : top edge)")
    if lo_unit and hi_unit and lo_unit != hi_unit:
        raise ValueError(f"--doppler-range {text!r}: the two ends have different units ({lo_unit}, "
                         f"{hi_unit})")
    unit = lo_unit or hi_unit or "hz"
    if unit != "m/s":
        return lo * UNITS[unit], hi * UNITS[unit]
    if carrier_hz is None:
        raise ValueError(f"--doppler-range {text!r} is in m/s: pass --carrier-hz (the radar's carrier, e.g. "
                         "24e9) to turn speeds into Doppler (f = 2 v f_c / c), or give the range in Hz")
    per_mps = 2 * carrier_hz / SPEED_OF_LIGHT
    return lo * per_mps, hi * per_mps


def parse_time_range(text: str) -> tuple[float, float]:
    """'T0:T1' (seconds, an optional 's' suffix) -> (t0, t1) with t1 > t0."""
    parts = [p.strip().removesuffix("s").removesuffix("S") for p in text.split(":")]
    example = "0:3 or 0s:2.5s (seconds at the left edge : right edge)"
    (t0, u0), (t1, u1) = _ends("--time-range", ":".join(parts), example)
    if u0 or u1:
        raise ValueError(f"--time-range {text!r}: expected seconds, e.g. {example}")
    if t1 < t0:
        raise ValueError(f"--time-range {text!r}: the right edge is before the left one")
    return t0, t1


def check(doppler_range: str | None, time_range: str | None, carrier_hz: float | None) -> None:
    """ValueError for a malformed range or carrier."""
    if carrier_hz is not None and not (math.isfinite(carrier_hz) and carrier_hz > 0):
        raise ValueError(f"--carrier-hz {carrier_hz:g}: must be a positive frequency in Hz, e.g. 24e9")
    if doppler_range is not None:
        parse_doppler_range(doppler_range, carrier_hz)
    if time_range is not None:
        parse_time_range(time_range)


def axes_meta(doppler_range: str | None, time_range: str | None, carrier_hz: float | None,
              size: int) -> dict[str, Any]:
    """meta.json's axis keys for images resized to size x size (only those the flags give)."""
    out: dict[str, Any] = {}
    if carrier_hz is not None:
        out["carrier_hz"] = float(carrier_hz)
    if doppler_range is not None:
        lo, hi = parse_doppler_range(doppler_range, carrier_hz)
        step = abs(hi - lo) / size
        out.update(doppler_hz_per_bin=step, doppler_hz_row0=hi - step / 2 if hi > lo else hi + step / 2,
                   doppler_axis=DESCENDING if hi > lo else ASCENDING)
    if time_range is not None:
        t0, t1 = parse_time_range(time_range)
        out["seconds_per_frame"] = (t1 - t0) / size
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--doppler-range", default=None, metavar="LO:HI",
                   help="Doppler at the bottom and top edges of the (cropped) image, as the figure's axis "
                        "reads: Hz (-400:400), kHz, or m/s with --carrier-hz (-4m/s:4m/s); write it with '=' "
                        "when LO is negative: --doppler-range=-4m/s:4m/s. Gives meta.json physical axes")
    p.add_argument("--time-range", default=None, metavar="T0:T1",
                   help="seconds at the left and right edges of the (cropped) image, e.g. 0:3")
    # --carrier-hz (meta.json's carrier, and m/s in --doppler-range) is defined once, with the raw flags
