"""Enrolment on a running `dopplergen serve`: POST /users with 5 files, poll until ready, generate, restart,
still listed."""

import io
import time

import numpy as np
import pytest

from tests.e2e.conftest import run_server

pytestmark = pytest.mark.slow


def _files(n: int) -> list:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        np.save(buf, np.random.default_rng(i).uniform(-60, 0, size=(32, 32)).astype(np.float32))
        out.append(("files", (f"rec{i}.npy", buf.getvalue(), "application/octet-stream")))
    return out


def _wait_enrolled(c, user: str, headers: dict | None = None) -> None:
    deadline = time.monotonic() + 120
    while (s := c.get(f"/users/{user}", headers=headers).json())["status"] == "enrolling":
        assert time.monotonic() < deadline, "enrolment did not finish"
        time.sleep(0.2)
    assert s["status"] == "ready", s


def test_enrol_generate_and_survive_a_restart(tiny_pipeline, tmp_path):
    env = dict(DOPPLERGEN_USERS_DIR=str(tmp_path / "users"), DOPPLERGEN_ENROL_STEPS="5",
               DOPPLERGEN_API_KEY="k")
    key = {"X-API-Key": "k"}
    with run_server(tiny_pipeline, tmp_path, **env) as server, server.client() as c:
        assert c.post("/users", data={"user_id": "dave"}, files=_files(5)).status_code == 401
        r = c.post("/users", data={"user_id": "dave"}, files=_files(5), headers=key)
        assert r.status_code == 202, r.text
        _wait_enrolled(c, "dave", key)
        gen = c.post("/generate", headers=key, json={
            "user_id": "dave", "num_samples": 2, "seed": 3, "num_inference_steps": 2, "format": "npy",
        })
        assert gen.status_code == 200, gen.text
    with run_server(tiny_pipeline, tmp_path, **env) as server, server.client() as c:
        users = c.get("/users", headers=key).json()
        assert "dave" in users["users"] and users["enrolled"] == ["dave"]
        again = c.post("/generate", headers=key, json={
            "user_id": "dave", "num_samples": 2, "seed": 3, "num_inference_steps": 2, "format": "npy",
        })
        # same row after restart
        assert again.status_code == 200 and again.json()["items"] == gen.json()["items"]


def test_a_plain_serve_keeps_enrolled_people_across_a_restart(tiny_pipeline, tmp_path):
    """No users folder configured: the default one under the data directory keeps them (HOME is a tmp
    folder here, XDG_DATA_HOME empty = unset, so that is <tmp>/home/.local/share/dopplergen/users/...)."""
    home = tmp_path / "home"
    env = dict(HOME=str(home), XDG_DATA_HOME="", DOPPLERGEN_ENROL_STEPS="5")
    body = {"user_id": "erin", "num_samples": 2, "seed": 3, "num_inference_steps": 2, "format": "npy"}
    with run_server(tiny_pipeline, tmp_path, **env) as server, server.client() as c:
        r = c.post("/users", data={"user_id": "erin"}, files=_files(5))
        assert r.status_code == 202, r.text
        _wait_enrolled(c, "erin")
        gen = c.post("/generate", json=body)
        assert gen.status_code == 200, gen.text
    kept = list((home / ".local" / "share" / "dopplergen" / "users").glob("*/erin.json"))
    assert len(kept) == 1 and kept[0].parent.name.startswith(f"{tiny_pipeline.name}-"), kept
    assert f"enrolled users are kept in {kept[0].parent}" in server.log_path.read_text()
    with run_server(tiny_pipeline, tmp_path, **env) as server, server.client() as c:
        assert c.get("/users").json()["enrolled"] == ["erin"]
        again = c.post("/generate", json=body)
        assert again.status_code == 200 and again.json()["items"] == gen.json()["items"]


def test_two_replicas_on_one_users_folder_serve_one_set_of_people(tiny_pipeline, tmp_path):
    """`--scale api=2` in miniature: two `dopplergen serve` processes on their own loopback ports share a
    users folder (service/users_sync.py). Enrolled through A -> served by B (B shows the progress while A
    runs it); deleted through B -> gone from A; after both restart, both serve the same people with the same
    samples."""
    env = dict(DOPPLERGEN_USERS_DIR=str(tmp_path / "users"), DOPPLERGEN_ENROL_STEPS="30",
               DOPPLERGEN_USERS_SCAN_S="0.2")
    body = {"user_id": "dave", "num_samples": 2, "seed": 3, "num_inference_steps": 2, "format": "npy"}
    with run_server(tiny_pipeline, tmp_path, **env) as a, run_server(tiny_pipeline, tmp_path, **env) as b, \
            a.client() as ca, b.client() as cb:
        assert ca.post("/users", data={"user_id": "dave"}, files=_files(5)).status_code == 202
        deadline, seen = time.monotonic() + 120, []
        while (s := cb.get("/users/dave").json())["status"] == "enrolling" or not seen:
            assert time.monotonic() < deadline, "enrolment did not finish"
            if s["status"] == "enrolling" and s["progress"] > 0:
                seen.append(s["progress"])
            if s["status"] != "enrolling":
                break
            time.sleep(0.1)
        assert seen and 0 < seen[0] < 1, seen  # B saw A's enrolment move
        _wait_enrolled(ca, "dave")
        _wait_enrolled(cb, "dave")
        gen_a, gen_b = (c.post("/generate", json=body) for c in (ca, cb))
        assert gen_a.status_code == gen_b.status_code == 200, (gen_a.text, gen_b.text)
        assert gen_a.json()["items"] == gen_b.json()["items"]

        assert ca.post("/users", data={"user_id": "erin"}, files=_files(3)).status_code == 202
        _wait_enrolled(ca, "erin")
        assert cb.post("/users", data={"user_id": "erin"}, files=_files(3)).status_code == 409
        r = cb.delete("/users/erin")
        assert r.status_code == 200 and r.json()["status"] == "deleted", r.text
        deadline = time.monotonic() + 30
        while ca.get("/users/erin").status_code != 404:  # A's scan drops the row
            assert time.monotonic() < deadline, "A still serves erin"
            time.sleep(0.1)
        assert ca.get("/users").json()["enrolled"] == cb.get("/users").json()["enrolled"] == ["dave"]
    with run_server(tiny_pipeline, tmp_path, **env) as a, run_server(tiny_pipeline, tmp_path, **env) as b, \
            a.client() as ca, b.client() as cb:
        for c in (ca, cb):
            assert c.get("/users").json()["enrolled"] == ["dave"]
            again = c.post("/generate", json=body)
            assert again.status_code == 200 and again.json()["items"] == gen_a.json()["items"]
