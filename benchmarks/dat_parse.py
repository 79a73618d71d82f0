"""`.dat` parse speed: models/raw's vectorised parser against a straightforward line-by-line reader.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dat_parse.py [--seconds 5] [--repeats 5]

The file is a Glasgow/Ancortek-layout recording (5.8 GHz, 1 ms sweeps of 128 complex samples, 400 MHz) of
`--seconds` of noise-like beat samples, written by models.raw.format_dat (a 5 s one is ~12-18 MB of text,
depending on the digits kept). Both readers return the same (128, sweeps) complex array from the file's bytes;
the line-by-line one is what a first port of the MATLAB textscan would be: decode, one `complex()` per
token. Medians over --repeats, measured in the same run, with the load average printed (the machine is
shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.raw import format_dat, parse_dat  # noqa: E402


def line_by_line(data: bytes) -> np.ndarray:
    """The straightforward reader: every line, every token, one Python complex() each."""
    values = []
    for line in data.decode().splitlines():
        for token in line.split():
            values.append(complex(token.replace("i", "j")))
    n_fast = int(values[2].real)
    z = np.array(values[4:], dtype=np.complex64)
    return z[: z.size // n_fast * n_fast].reshape(-1, n_fast).T


def timed(fn, data: bytes, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(data)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="recording length (default 5 s, Glasgow's)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sweeps = int(args.seconds * 1000)
    x = (rng.standard_normal((128, sweeps)) + 1j * rng.standard_normal((128, sweeps))) * 1e-2
    data = format_dat(x, 5.8e9, 1e-3, 400e6)
    mb = len(data) / 1e6
    print(f"# {args.seconds:g} s recording: {128 * sweeps} complex samples, {mb:.1f} MB of text; "
          f"cpus={os.cpu_count()} loadavg={' / '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    t_fast, fast = timed(lambda d: parse_dat(d, "bench.dat").samples, data, args.repeats)
    t_slow, slow = timed(line_by_line, data, args.repeats)
    assert np.array_equal(fast, slow), "the two readers disagree"
    print(f"vectorised (models.raw.parse_dat): {t_fast:.3f} s = {t_fast / mb * 1000:.1f} ms/MB")
    print(f"line by line (complex() per token): {t_slow:.3f} s = {t_slow / mb * 1000:.1f} ms/MB")
    print(f"speed-up {t_slow / t_fast:.1f}x (median of {args.repeats}); "
          f"loadavg now {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
