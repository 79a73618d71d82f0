"""Raw recordings: every file type reads back to the same complex samples, parameters come from the file or
the caller, and every unusable file is a one-line DatasetError naming it and the flag to pass."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.io

from models.raw import (
    ChainConfig,
    RadarParams,
    format_dat,
    is_raw,
    parse_dat,
    raw_spectrograms,
    raw_to_db,
    read_raw,
)
from models.recording import DatasetError

C = 299_792_458.0


def beat(n_fast: int = 32, sweeps: int = 600, v: float = 1.5, fc: float = 5.8e9, sweep_s: float = 1e-3,
         bw: float = 400e6, r0: float = 5.0) -> np.ndarray:
    """(fast time, sweeps) FMCW beat samples of one point approaching at v m/s, plus a static wall."""
    t = np.arange(sweeps) * sweep_s
    tf = np.arange(n_fast) * sweep_s / n_fast
    out = np.zeros((n_fast, sweeps), np.complex128)
    for r, a in ((r0 - v * t, 1.0), (np.full_like(t, 3.0), 2.0)):
        out += a * np.exp(1j * (2 * np.pi * (2 * bw * r / (C * sweep_s))[None] * tf[:, None]
                                + 4 * np.pi * r[None] * fc / C))
    return out.astype(np.complex64)


def test_dat_round_trip_keeps_header_and_samples() -> None:
    x = beat()
    rec = parse_dat(format_dat(x, 5.8e9, 1e-3, 400e6), "1P40A01R02.dat")
    assert rec.layout == "fast-time" and rec.samples.shape == x.shape
    assert np.abs(rec.samples - x).max() < 1e-5 * np.abs(x).max()
    assert rec.params == RadarParams(carrier_hz=5.8e9, sweep_s=1e-3, bandwidth_hz=400e6)
    assert rec.params.complete("f").prf_hz == pytest.approx(1000.0)


def test_dat_reads_any_whitespace_exponents_and_drops_a_part_sweep() -> None:
    text = b"5.8e+09 1 2 4e8\n1.5e-03+2i -1-2.5E-01i\n 0.5-0.5i\t3+0i 7+7i"
    rec = parse_dat(text, "odd.dat")
    assert rec.samples.shape == (2, 2)
    assert rec.samples[:, 0].tolist() == [pytest.approx(1.5e-3 + 2j), pytest.approx(-1 - 0.25j)]
    assert rec.samples[:, 1].tolist() == [0.5 - 0.5j, 3 + 0j]


@pytest.mark.parametrize("text, words", [
    (b"hello world", "Ancortek header"),
    (b"5.8e9 1 128.5 4e8 1+1i", "Ancortek header"),
    (b"5.8e9 1 2 4e8 1+1i 2+xi 3+3i 4+4i", "not complex numbers"),
    (b"5.8e9 1 2 4e8 1+1i 2+2i", "fewer than two sweeps"),
    (b"5.8e9 1 2 4e8 1+1i nan+2i 3+3i 4+4i", "NaN"),
])
def test_bad_dat_is_one_line_naming_the_file(text: bytes, words: str) -> None:
    with pytest.raises(DatasetError) as e:
        read_raw(text, "rec.dat")
    assert str(e.value).startswith("rec.dat: ") and words in str(e.value) and "\n" not in str(e.value)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_npy_npz_and_mat_v5_read_the_same_samples(tmp_path) -> None:
    x = beat()[:8]
    (tmp_path / "r.npy").write_bytes(_npy(x))
    np.savez(tmp_path / "r.npz", data=x, carrier_hz=24e9, prf_hz=2000.0)
    scipy.io.savemat(tmp_path / "r.mat", {"iq": x.T, "carrier_hz": 24e9, "prf_hz": 2000.0, "note": "x"})
    (tmp_path / "img.npy").write_bytes(_npy(np.zeros((4, 4), np.float32)))
    for name in ("r.npy", "r.npz", "r.mat"):
        rec = read_raw(tmp_path / name, name, RadarParams(prf_hz=2000.0) if name == "r.npy" else None)
        assert rec.layout == "range-time" and np.array_equal(rec.samples, x), name  # longer axis = sweeps
        assert rec.params.prf_hz == 2000.0
    assert read_raw(tmp_path / "r.mat", "r.mat").params.carrier_hz == 24e9
    flag = RadarParams(carrier_hz=5e9)
    assert read_raw(tmp_path / "r.mat", "r.mat", flag).params.carrier_hz == 5e9  # the flag wins
    assert read_raw(tmp_path / "r.npy", "r.npy", layout="fast-time").layout == "fast-time"
    assert read_raw(_npy(x[0]), "slow.npy").layout == "slow-time"
    assert is_raw(tmp_path / "r.npy") and is_raw(tmp_path / "r.mat") and not is_raw(tmp_path / "img.npy")


def _mat73(path, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 after a 512-byte header, complex as a real/imag compound,
    arrays transposed."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for k, v in arrays.items():
            v = np.asarray(v).T
            if np.iscomplexobj(v):
                comp = np.empty(v.shape, dtype=[("real", "<f8"), ("imag", "<f8")])
                comp["real"], comp["imag"] = v.real, v.imag
                v = comp
            f[k] = v
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(head.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM")


def test_mat_v73_and_h5_read_through_h5py(tmp_path) -> None:
    import h5py

    x = beat()[:8]
    _mat73(tmp_path / "r.mat", {"data": x, "carrier_hz": np.array([[5.8e9]]), "prf_hz": np.array([[1000.0]])})
    rec = read_raw(tmp_path / "r.mat", "r.mat")
    assert np.allclose(rec.samples, x) and rec.params.carrier_hz == 5.8e9 and rec.params.prf_hz == 1000.0
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f["group/iq"] = x[0]
        f.attrs["carrier_hz"] = 24e9
        f.attrs["sweep_s"] = 5e-4
    rec = read_raw(tmp_path / "r.h5", "r.h5")
    assert rec.layout == "slow-time" and np.array_equal(rec.samples, x[0])
    assert rec.params.complete("r.h5").prf_hz == pytest.approx(2000.0)


@pytest.mark.parametrize("params, flag", [(RadarParams(prf_hz=1000.0), "--carrier-hz"),
                                          (RadarParams(carrier_hz=5.8e9), "--prf-hz")])
def test_missing_parameters_name_the_flag(params: RadarParams, flag: str) -> None:
    with pytest.raises(DatasetError, match=rf"^walk\.npy: .* pass {flag}"):
        raw_spectrograms(_npy(beat()[0]), "walk.npy", ChainConfig(size=16), params)


@pytest.mark.parametrize("arr, words", [
    (np.zeros((0, 5), np.complex64), "empty"),
    (np.ones(10, np.float32), "complex (I/Q)"),
    (np.ones((2, 3, 4), np.complex64), "several channels"),
    (np.array([1, np.nan], np.complex64), "NaN"),
])
def test_bad_arrays_are_refused(arr: np.ndarray, words: str) -> None:
    with pytest.raises(DatasetError, match=r"^x\.npy: ") as e:
        read_raw(_npy(arr), "x.npy")
    assert words in str(e.value)


def test_several_complex_arrays_need_one_named_data(tmp_path) -> None:
    np.savez(tmp_path / "two.npz", a=np.ones(9, np.complex64), b=np.ones(9, np.complex64))
    with pytest.raises(DatasetError, match="several complex arrays"):
        read_raw(tmp_path / "two.npz", "two.npz")


def test_chain_finds_the_approaching_walker_above_zero_doppler() -> None:
    """1.5 m/s approaching, 5.8 GHz: the strongest row of the spectrogram sits at +1.5 m/s (one row), the
    static wall is gone, and the same holds for its slow-time signal as a range-time array."""
    x = beat(sweeps=2000)
    lam = C / 5.8e9
    chain = ChainConfig(size=32, max_speed_mps=4.0)
    db, axes = raw_to_db(parse_dat(format_dat(x, 5.8e9, 1e-3, 400e6), "w.dat"), chain)
    assert db.shape == (32, 32) and db.max() == 0 and db.min() >= -60 and axes["beat_half"] == "positive"
    f = axes["doppler_hz_row0"] - np.arange(32) * axes["doppler_hz_per_bin"]
    v = np.median(f[db.argmax(axis=0)]) * lam / 2
    assert abs(v - 1.5) <= max(0.1 * 1.5, axes["doppler_hz_per_bin"] * lam / 2)
    # mixed the other way round (IF = RX x conj(TX)): negative beat frequencies, the same picture
    db2, axes2 = raw_to_db(parse_dat(format_dat(np.conj(x), 5.8e9, 1e-3, 400e6), "w.dat"), chain)
    assert axes2["beat_half"] == "negative" and np.abs(db2 - db).mean() < 0.5
    windows = raw_spectrograms(_npy(np.conj(x).T), "w.npy",
                               ChainConfig(size=16, clip_seconds=1.0, clip_hop_seconds=0.5),
                               RadarParams(carrier_hz=5.8e9, prf_hz=1000.0), layout="fast-time")
    assert [w[1]["window_start_s"] for w in windows] == [0.0, 0.5, 1.0]
