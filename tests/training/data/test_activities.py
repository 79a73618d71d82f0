"""Activities on the simulator (training/data/activities.py): each physics read-out (training/eval/metrics.py,
activity_metrics.py) on the simulator's own clean output, against the kinematics it was given; the fall's
speed range; run vs walk, limp and carry vs walk for the same person; --activities on the command line."""

from functools import cache

import numpy as np
import pytest

from training.data.activities import EVENTS, event_points, gait_variant, parse_activities
from training.data.radar import DEFAULT_DURATION_S, default_prf, simulate_walk
from training.data.users import MAX_SPEED_MPS, make_user, recording_kwargs
from training.data.walker import Gait
from training.eval.metrics import (
    activity_kinematics,
    activity_readouts,
    arm_band_db,
    gait_cycle_s,
    kinematics,
    physics_consistency,
    step_asymmetry,
    torso_line_hz,
    upper_envelope_hz,
)

PEOPLE, RECORDINGS = range(5), (0, 1)  # 10 recordings per activity
PRF = default_prf(24e9, MAX_SPEED_MPS)  # the dataset's PRF (users.simulate_recording)


def kwargs(activity: str, user: int, rec: int) -> dict:
    kw = recording_kwargs(make_user(user), rec, activity=activity)
    kw["snr_db"] = 30.0  # clean; clutter as drawn (-25..-5 dB)
    return kw


@cache
def clean(activity: str, user: int, rec: int):
    return simulate_walk(prf_hz=PRF, size=64, **kwargs(activity, user, rec))


def read_out(s) -> dict[str, float]:
    return activity_kinematics(s.db, s.doppler_hz, s.meta["seconds_per_frame"], s.meta["wavelength_m"],
                               s.meta["activity"])


def errors(activity: str, readout: str, truth) -> np.ndarray:
    """Relative error of `readout` against truth(meta) over the activity's clean recordings."""
    out = []
    for u in PEOPLE:
        for j in RECORDINGS:
            s = clean(activity, u, j)
            out.append(read_out(s)[readout] / truth(s.meta) - 1)
    return np.asarray(out)


@pytest.mark.parametrize("activity", ["walk", "run", "limp", "carry"])
def test_gait_readouts_match_the_kinematics(activity):
    torso = errors(activity, "torso_mps", lambda m: m["speed_mps"] * np.cos(np.radians(m["aspect_deg"])))
    cadence = errors(activity, "cadence_spm", lambda m: 120.0 / m["cycle_s"])  # 2 steps per cycle
    assert np.abs(cadence).max() <= 0.10, cadence
    assert abs(np.median(torso)) <= 0.10, torso
    # The limp's torso surges +-35 % over its long cycle; at its fastest another line (the pelvis) can
    # out-shine the torso, so one recording in ten reads 12 % low (its median is 2 % low).
    assert np.abs(torso).max() <= (0.15 if activity == "limp" else 0.10), torso


@pytest.mark.parametrize("activity", EVENTS)
def test_event_duration_matches_the_kinematics(activity):
    # Against the part of the event inside the recording (a slow pickup can outlast the window). The
    # first and last moments of a movement from and to rest are slower than the clutter band (0.23 m/s at
    # 64 px), the STFT window widens an abrupt end (the fall's impact): both within 10 %.
    duration = errors(activity, "event_duration_s", lambda m: min(
        m["event_onset_s"] + m["event_duration_s"], DEFAULT_DURATION_S) - m["event_onset_s"])
    assert np.abs(duration).max() <= 0.10, duration


@pytest.mark.parametrize("activity", [
    "sit", "stand", "fall",
    pytest.param("pickup", marks=pytest.mark.xfail(strict=True, reason=(
        "the model: a pickup's torso centre moves 0.2-0.4 m/s along the line of sight, within 1-2.5 Doppler "
        "bins (0.156 m/s at 64 px) of the clutter line; its strongest moving line is the head and shoulders "
        "(0.5-1 m/s), so the read-out is ~2x the torso's speed"))),
])
def test_event_peak_speed_matches_the_kinematics(activity):
    # Against the torso centre's peak speed along the line of sight (what a radar can see). The median over
    # recordings is what the evaluator compares; a single recording can read the shoulder line instead
    # (both shoulders move alike in these symmetric events and add up), up to ~1.5x.
    peak = errors(activity, "event_peak_mps", lambda m: m["torso_peak_radial_mps"])
    assert abs(np.median(peak)) <= 0.10, peak
    assert np.all((peak > -0.3) & (peak < 0.6)), peak


def test_event_kinematics_in_the_meta():
    for activity in EVENTS:
        m = clean(activity, 0, 0).meta
        assert np.isnan(m["speed_mps"]) and np.isnan(m["cycle_s"])
        assert 0 < m["torso_peak_radial_mps"] <= m["torso_peak_mps"] * 1.001
    assert "torso_peak_radial_mps" not in clean("walk", 0, 0).meta  # a walk's meta is as it was


def test_fall_peak_torso_speed_is_a_fall():
    """Peak trunk speed of a fall 1.5-4 m/s (Wu 2000; Bourke et al. 2007) over the simulator's people:
    heights 1.5-1.98 m (users.make_user's clip) and a fall's tempo 0.92-1.08 (users.recording_kwargs)."""
    t = np.arange(0.0, DEFAULT_DURATION_S, 1 / 500)
    for height in (1.5, 1.98):
        for tempo in (0.92, 1.08):
            peak = event_points(t, height, Gait(), "fall", 0.2, tempo)[2]["torso_peak_mps"]
            assert 1.5 <= peak <= 4.0, (height, tempo, peak)
    for u in range(20):
        kw = recording_kwargs(make_user(u), 0, activity="fall")
        assert 0.92 <= kw["tempo"] <= 1.08
        peak = event_points(t, kw["height_m"], kw["gait"], "fall", kw["onset_s"], kw["tempo"])[2]
        assert 1.5 <= peak["torso_peak_mps"] <= 4.0, (u, peak)


def test_run_is_faster_and_quicker_than_walk():
    for u in PEOPLE:
        walk = kwargs("walk", u, 0)
        run = {**kwargs("run", u, 0), "aspect_deg": walk["aspect_deg"], "range_m": walk["range_m"]}
        w, r = (read_out(simulate_walk(prf_hz=PRF, size=64, **kw)) for kw in (walk, run))
        # Run: 2-3 m/s; its stride rate 1.30 + 0.05 v Hz is only ~10 % above a brisk walker's (user 1
        # walks at 171 steps/min), more above everyone else's.
        assert r["torso_mps"] > 1.2 * w["torso_mps"], (u, w, r)
        assert r["cadence_spm"] > 1.05 * w["cadence_spm"], (u, w, r)


def test_limp_steps_are_uneven():
    """Step vs stride regularity of the envelope: a walk's two steps look alike, a limp's do not."""
    for u in PEOPLE:
        walk, limp = clean("walk", u, 0), clean("limp", u, 0)
        spf = walk.meta["seconds_per_frame"]
        k = kinematics(walk.db, walk.doppler_hz, spf, walk.meta["wavelength_m"])
        a_walk = step_asymmetry(upper_envelope_hz(walk.db, walk.doppler_hz), spf, k["cycle_s"])
        env = upper_envelope_hz(limp.db, limp.doppler_hz)
        a_limp = step_asymmetry(env, spf, gait_cycle_s(env, spf))
        assert a_walk < 0.4 and a_limp > 0.8 and a_limp > a_walk + 0.6, (u, a_walk, a_limp)


def test_carry_holds_the_arms_still():
    """The same walk with both forearms holding a load: less power just above the torso line (the arms'
    forward swing)."""
    drops = []
    for u in PEOPLE:
        walk = kwargs("walk", u, 1)
        carry = {**walk, "activity": "carry", "gait": gait_variant("carry", walk["gait"], walk["speed_mps"])}
        arms = []
        for kw in (walk, carry):
            s = simulate_walk(prf_hz=PRF, size=64, **kw)
            torso = torso_line_hz(s.db, s.doppler_hz)
            arms.append(arm_band_db(s.db, s.doppler_hz, torso, s.meta["wavelength_m"]))
        drops.append(arms[0] - arms[1])
    assert min(drops) > 1.0 and np.mean(drops) > 3.0, drops


def test_parse_activities():
    assert parse_activities(" walk, fall ") == ("walk", "fall")
    for bad, says in [("", "at least one"), (" , ", "at least one"), ("walk,jump", "unknown activity 'jump'"),
                      ("walk,run,walk", "repeats")]:
        with pytest.raises(ValueError, match=says):
            parse_activities(bad)


def test_simulate_command_writes_the_activity(tmp_path, capsys):
    from training.cli import main
    from training.data.dataset import load_dataset

    out = tmp_path / "d"
    assert main(["simulate", "--activities", "walk,fall", "--users", "2", "--per-user", "6", "--size", "32",
                 "--preview-per-user", "0", "--out", str(out)]) == 0
    ds = load_dataset(out)
    act = ds.extra["activity"]
    assert sorted(set(act)) == ["fall", "walk"] and (act == "fall").sum() == 6
    fall = act == "fall"
    assert np.isnan(ds.extra["speed_mps"][fall]).all() and np.isfinite(ds.extra["speed_mps"][~fall]).all()
    assert np.isnan(ds.extra["torso_peak_radial_mps"][~fall]).all()
    assert (ds.extra["torso_peak_radial_mps"][fall] <= ds.extra["torso_peak_mps"][fall]).all()
    # The evaluator's path: read-outs per activity and user, compared with physics_consistency.
    r = activity_readouts(ds.x, ds.labels, ds.users, ds.meta, act)
    assert set(r) == {"walk", "fall"}
    assert set(r["fall"][ds.users[0]]) == {"event_peak_mps", "event_duration_s"}
    assert set(r["walk"][ds.users[0]]) == {"torso_mps", "envelope_mps", "cadence_spm"}
    assert physics_consistency(r["fall"], r["fall"])["max_rel_error"]["event_peak_mps"] == 0.0
    capsys.readouterr()

    assert main(["simulate", "--activities", "walk,jump", "--users", "2", "--per-user", "6",
                 "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown activity 'jump'" in err, err
    assert not (tmp_path / "e").exists()
