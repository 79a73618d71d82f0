"""Raw recordings through `dopplergen import`: the simulator's raw output and an independent Glasgow-style
simulator (written here, sharing no code with training/data) come back as spectrograms whose torso line sits
at the walkers' speed, with physical axes in meta.json, and no recording spans two splits."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from models.dataset_folder import axes_from_meta, spectrogram_axes
from models.raw import format_dat
from training.cli import main
from training.data.dataset import DatasetError, load_dataset
from training.data.importer import ImportConfig, import_dataset
from training.data.simulate import SimulateConfig, user_profiles
from training.data.users import Variation, simulate_recording

C = 299_792_458.0


def torso_mps(db: np.ndarray, meta: dict) -> float:
    """Median over time of the strongest Doppler row, in m/s through meta's axes."""
    doppler, _ = axes_from_meta(meta, db.shape)
    return float(np.median(doppler[db.argmax(axis=0)]) * C / meta["carrier_hz"] / 2)


def close(a: float, b: float, row_mps: float) -> bool:
    return abs(a - b) <= max(0.1 * abs(b), row_mps)


@pytest.mark.parametrize("kind", ["fmcw-dat", "slow-time"])
def test_simulate_raw_then_import_matches_the_simulators_own_spectrograms(tmp_path, capsys, kind) -> None:
    src = tmp_path / "raw"
    args = ["simulate", "--raw", kind, "--out", str(src), "--users", "2", "--per-user", "3", "--carrier-ghz",
            "5.8", "--size", "64", "--duration-s", "2.5"]
    assert main(args) == 0
    command = capsys.readouterr().out.strip().splitlines()[-1].strip()
    assert command.startswith(f"dopplergen import {src} --out {src}-dataset --size 64")
    assert ("--carrier-hz 5800000000 --prf-hz 930" in command) == (kind == "slow-time")
    if kind == "slow-time":  # without the printed parameters: one line naming the flag
        assert main(["import", str(src), "--out", str(tmp_path / "bad"), "--size", "64"]) == 2
        assert "pass --carrier-hz" in capsys.readouterr().err
    assert main(shlex.split(command)[1:]) == 0
    ds = load_dataset(f"{src}-dataset")
    meta = ds.meta
    assert meta["carrier_hz"] == 5.8e9 and meta["prf_hz"] == pytest.approx(930.0)
    assert meta["doppler_axis"].startswith("descending") and meta["raw_chain"]["windows"] == 6
    axes = spectrogram_axes(meta)  # what /info and the web page show
    assert axes["doppler_hz_per_bin"] == pytest.approx(meta["doppler_hz_per_bin"])
    assert axes["seconds_per_frame"] == pytest.approx(2.5 / 64, rel=0.1)
    row_mps = meta["doppler_hz_per_bin"] * meta["wavelength_m"] / 2
    cfg = SimulateConfig(users=2, per_user=3, carrier_ghz=5.8, size=64, duration_s=2.5)
    profiles = {p.user_id: p for p in user_profiles(cfg)}
    for x, path in zip(ds.x, ds.paths, strict=True):
        user, j = path.split("/")[0], int(Path(path).stem)
        own = simulate_recording(profiles[user], j, carrier_hz=5.8e9, size=64, duration_s=2.5,
                                 variation=Variation(**cfg.variation))
        v_own = float(np.median(own.velocity_mps[own.db.argmax(axis=0)]))
        own_row = own.meta["doppler_hz_per_bin"] * own.meta["wavelength_m"] / 2
        assert close(torso_mps(x[0], meta), v_own, max(row_mps, own_row)), path


def glasgow_recording(v: float, r0: float, cadence_hz: float, seconds: float, rng) -> np.ndarray:
    """An independent FMCW model: torso at v (approaching), two legs and two arms swinging around it, a
    wall; 5.8 GHz, 1 ms sweeps of 128 complex samples over 400 MHz, IF = TX x conj(RX); (fast time, sweeps)
    like the Glasgow set's recordings."""
    fc, sweep, n_fast, bw = 5.8e9, 1e-3, 128, 400e6
    t = np.arange(int(seconds / sweep)) * sweep
    torso = r0 - v * t
    swing = [(0.6 * v / (2 * np.pi * cadence_hz), 0.25), (0.3 * v / (2 * np.pi * cadence_hz), 0.1)]
    parts = [(torso, 1.0), (np.full_like(t, r0 + 3.0), 0.5)]
    for amp_m, a in swing:
        for sign in (1, -1):
            parts.append((torso + sign * amp_m * np.sin(2 * np.pi * cadence_hz * t), a))
    tf = np.arange(n_fast) * sweep / n_fast
    x = np.zeros((n_fast, t.size), np.complex128)
    for r, a in parts:
        f_beat = 2 * bw * r / (C * sweep)
        x += a * np.exp(1j * (2 * np.pi * f_beat[None] * tf[:, None] + 4 * np.pi * r * fc / C))
    x += 0.05 * (rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape))
    return x


def test_independent_glasgow_files_import_with_patterns_and_windows(tmp_path, capsys) -> None:
    src, out = tmp_path / "glasgow", tmp_path / "data"
    src.mkdir()
    rng = np.random.default_rng(1)
    speeds = {"40": 1.2, "41": 1.6}
    for person, v in speeds.items():
        for rep in (1, 2, 3):
            x = glasgow_recording(v * (1 + 0.03 * rep), 14.0, 0.9, 4.0, rng)
            (src / f"1P{person}A01R{rep:02d}.dat").write_bytes(format_dat(x, 5.8e9, 1e-3, 400e6))
    (src / "notes.txt").write_text("not a recording")
    code = main(["import", str(src), "--out", str(out), "--size", "64", "--user-pattern", r"P(\d+)",
                 "--activity-pattern", r"^(\d+)P", "--clip-seconds", "2", "--clip-hop-seconds", "1"])
    assert code == 0, capsys.readouterr().err
    assert "6 raw recordings of 2 people -> 18 spectrograms" in capsys.readouterr().out
    ds = load_dataset(out)
    meta = json.loads((out / "meta.json").read_text())
    for key in ("carrier_hz", "prf_hz", "doppler_hz_row0", "doppler_hz_per_bin", "seconds_per_frame"):
        assert key in meta
    assert meta["prf_hz"] == pytest.approx(1000.0) and meta["seconds_per_frame"] == pytest.approx(2 / 64, 0.1)
    assert sorted(ds.users) == ["40", "41"] and {float(a) for a in ds.extra["activity"]} == {1.0}
    splits_of: dict[str, set[str]] = {}
    for src_file, split in zip(ds.extra["source"], ds.splits, strict=True):
        splits_of.setdefault(src_file, set()).add(split)
    assert len(splits_of) == 6 and all(len(s) == 1 for s in splits_of.values())  # a recording: one split
    assert {s for v in splits_of.values() for s in v} == {"train", "val", "test"}
    row_mps = meta["doppler_hz_per_bin"] * C / meta["carrier_hz"] / 2
    for person, v in speeds.items():
        measured = [torso_mps(x[0], meta) for x, u in zip(ds.x, ds.extra["source"], strict=True)
                    if f"P{person}A" in u]
        assert len(measured) == 9 and close(float(np.median(measured)), v * 1.06, row_mps), (person, measured)
    # a person of it enrols into the demo: from the imported spectrograms, and from the raw .dat files as they
    # are (the one reader sends them through the same chain)
    demo = str(Path(__file__).resolve().parents[3] / "checkpoints" / "demo")
    raw40 = tmp_path / "raw40"
    raw40.mkdir()
    for f in src.glob("1P40*.dat"):
        (raw40 / f.name).write_bytes(f.read_bytes())
    for i, folder in enumerate((out / "40", raw40)):
        code = main(["enroll", "--pipeline", demo, "--user", "p40", "--data", str(folder), "--steps", "2",
                     "--out", str(tmp_path / f"enrolled{i}")])
        assert code == 0, capsys.readouterr().err
        meta = json.loads((tmp_path / f"enrolled{i}" / "dopplergen.json").read_text())
        assert "p40" in meta["enrolled_users"]


def test_raw_import_failures_name_the_file(tmp_path) -> None:
    src = tmp_path / "mixed"
    (src / "a").mkdir(parents=True)
    (src / "a" / "r1.dat").write_bytes(format_dat(np.ones((8, 400), np.complex64), 5.8e9, 1e-3, 4e8))
    (src / "a" / "img.npy").write_bytes(b"")
    with pytest.raises(DatasetError, match="mixes raw recordings"):
        import_dataset(src, tmp_path / "o1", ImportConfig(size=16), progress=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "1P40A01R01.dat").write_bytes(b"")
    (flat / "walk.dat").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"walk\.dat: --user-pattern 'P\(\\d\+\)' does not match"):
        import_dataset(flat, tmp_path / "o2", ImportConfig(size=16, user_pattern=r"P(\d+)"), progress=False)
    short = tmp_path / "short" / "p"
    short.mkdir(parents=True)
    for i in range(3):
        (short / f"r{i}.dat").write_bytes(format_dat(np.ones((8, 400), np.complex64) * (i + 1), 5.8e9, 1e-3,
                                                     4e8))
    cfg = ImportConfig(size=16, raw={"clip_seconds": 1.0})
    with pytest.raises(DatasetError, match=r"p/r0\.dat: 0\.4 s long, shorter than --clip-seconds 1"):
        import_dataset(short.parent, tmp_path / "o3", cfg, progress=False)
    assert not (tmp_path / "o3").exists()
    with pytest.raises(ValueError, match="--range-bins"):
        ImportConfig(size=16, raw={"range_bins": "9:3"}).validate()
