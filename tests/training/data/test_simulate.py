"""Simulator physics (f_D = 2 v cos(aspect) / lambda, envelope, cadence) and reproducibility."""

import numpy as np
import pytest

from training.data.radar import SPEED_OF_LIGHT, default_prf, simulate_walk
from training.data.users import make_user, simulate_recording
from training.data.walker import boulic_cycle
from training.eval.metrics import kinematics, torso_line_hz

CLEAN = dict(snr_db=30.0, clutter_db=-10.0, seed=1)


def read_out(s):
    return kinematics(s.db, s.doppler_hz, s.meta["seconds_per_frame"], s.meta["wavelength_m"])


@pytest.mark.parametrize("carrier_hz", [5.8e9, 24e9, 77e9])
def test_torso_doppler_is_2v_over_lambda(carrier_hz):
    v = 1.4
    for size in (None, 64):
        s = simulate_walk(1.75, v, carrier_hz=carrier_hz, size=size, **CLEAN)
        f_torso = np.mean(torso_line_hz(s.db, s.doppler_hz))
        expected = 2 * v * carrier_hz / SPEED_OF_LIGHT
        assert f_torso == pytest.approx(expected, rel=0.05), (size, f_torso, expected)
        assert s.meta["torso_doppler_hz"] == pytest.approx(expected)


@pytest.mark.parametrize("carrier_hz", [24e9, 77e9])
def test_torso_doppler_scales_with_cos_aspect(carrier_hz):
    v = 1.5
    base = read_out(simulate_walk(1.7, v, carrier_hz=carrier_hz, size=64, **CLEAN))["torso_mps"]
    for aspect in (30.0, 45.0):
        k = read_out(simulate_walk(1.7, v, carrier_hz=carrier_hz, size=64, aspect_deg=aspect, **CLEAN))
        assert k["torso_mps"] == pytest.approx(v * np.cos(np.deg2rad(aspect)), rel=0.05)
        assert k["torso_mps"] / base == pytest.approx(np.cos(np.deg2rad(aspect)), rel=0.05)


def test_receding_walker_has_negative_doppler():
    s = simulate_walk(1.7, 1.3, aspect_deg=180.0, **CLEAN)
    assert np.mean(torso_line_hz(s.db, s.doppler_hz)) == pytest.approx(
        -2 * 1.3 / s.meta["wavelength_m"], rel=0.05)


@pytest.mark.parametrize("height, speed", [(1.6, 1.1), (1.75, 1.4), (1.9, 1.7)])
def test_envelope_and_cadence(height, speed):
    s = simulate_walk(height, speed, size=64, **CLEAN)
    k = read_out(s)
    assert 3.0 <= k["envelope_mps"] / k["torso_mps"] <= 6.0, k
    assert k["cycle_s"] == pytest.approx(s.meta["cycle_s"], rel=0.05), k


def test_boulic_cycle_and_prf():
    c = boulic_cycle(1.8, 1.4)  # Ht = 0.491 H, RV = v / Ht, Dc = 1.346 sqrt(RV) / RV
    rv = 1.4 / (0.491 * 1.8)
    assert c["rv"] == pytest.approx(rv)
    assert c["cycle_s"] == pytest.approx(1.346 * np.sqrt(rv) / rv)
    for fc in (5.8e9, 24e9, 77e9):  # +-PRF/2 covers 5x the torso Doppler of a 2 m/s walk
        assert default_prf(fc, 2.0) / 2 >= 5 * 2 * 2.0 * fc / SPEED_OF_LIGHT
    with pytest.raises(ValueError):
        boulic_cycle(1.7, 5.0)  # RV > 3


def test_axes_and_shapes():
    s = simulate_walk(1.7, 1.3, size=(32, 48), **CLEAN)
    assert s.db.shape == (32, 48) and s.db.dtype == np.float32
    assert s.doppler_hz.shape == (32,) and s.time_s.shape == (48,)
    assert np.all(np.diff(s.doppler_hz) < 0)  # row 0 = most positive Doppler
    assert s.db.max() == 0.0 and s.db.min() >= -s.meta["dyn_range_db"]
    assert s.meta["doppler_hz_per_bin"] == pytest.approx(s.doppler_hz[0] - s.doppler_hz[1])
    native = simulate_walk(1.7, 1.3, **CLEAN)
    assert native.db.shape == (native.meta["nfft"], len(native.time_s))
    assert native.doppler_hz[0] == pytest.approx(native.meta["prf_hz"] / 2
                                                 - native.meta["doppler_hz_per_bin"])


def test_reproducible_and_individual():
    a = simulate_walk(1.7, 1.3, size=64, seed=5)
    b = simulate_walk(1.7, 1.3, size=64, seed=5)
    c = simulate_walk(1.7, 1.3, size=64, seed=6)
    assert np.array_equal(a.db, b.db)
    assert not np.array_equal(a.db, c.db)
    u1, u2 = make_user(1), make_user(2)
    assert u1 == make_user(1) and u1 != u2
    r1 = simulate_recording(u1, 0, size=32)
    assert np.array_equal(r1.db, simulate_recording(u1, 0, size=32).db)
    assert np.abs(r1.db - simulate_recording(u2, 0, size=32).db).mean() > 1.0
