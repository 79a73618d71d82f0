"""Replicas sharing one users folder (service/users_sync.py): two apps in process on one tmp folder serve one
set of people — enrolled through one, served by the other; enrolling shown on both; deleted through either."""

import asyncio
import json
import time

import pytest

from service import enrolment
from tests.service.conftest import serve
from tests.service.test_users import _wait_ready
from tests.service.test_users_race import _post

pytestmark = pytest.mark.anyio
GEN = {"num_samples": 1, "seed": 5, "num_inference_steps": 2, "format": "npy"}


@pytest.fixture
def app_for(app_for):
    """tests/service/conftest.py's, with the periodic scan off unless a test turns it on."""
    return lambda **settings: app_for(**{"users_scan_s": 0, **settings})


async def _until(check, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.05)


async def test_enrolled_through_a_is_served_by_b_on_first_request(app_for, folder):
    a, b = app_for(), app_for()
    async with serve(a) as ca, serve(b) as cb:
        assert (await _post(ca, "dave")).status_code == 202
        assert (await _wait_ready(ca, "dave"))["status"] == "ready"
        assert "dave" not in (await cb.get("/users")).json()["users"]  # no scan here: not yet adopted
        gen_b = await cb.post("/generate", json={"user_id": "dave", **GEN})  # adopted before answering
        assert gen_b.status_code == 200, gen_b.text
        assert gen_b.json()["guidance_scale"] == 4.0  # served as an enrolled person
        gen_a = await ca.post("/generate", json={"user_id": "dave", **GEN})
        assert gen_a.json()["items"] == gen_b.json()["items"]
        assert (await cb.get("/users")).json()["enrolled"] == ["dave"]
        assert (await cb.post("/generate", json={"user_id": "nobody", **GEN})).status_code == 404
        assert (await _post(cb, "dave")).status_code == 409


async def test_get_on_b_adopts_a_committed_entry_and_shows_an_enrolment_running_on_a(app_for, folder,
                                                                                    monkeypatch):
    monkeypatch.setattr(enrolment, "THROTTLE_S", 0.0)  # every progress step reaches the status file
    a, b = app_for(enrol_steps=40), app_for()
    async with serve(a) as ca, serve(b) as cb:
        assert (await _post(ca, "erin")).status_code == 202
        seen = []

        async def progressed():
            r = await cb.get("/users/erin")
            assert r.status_code == 200, r.text
            seen.append(r.json())
            return r.json()["status"] != "enrolling" or r.json()["progress"] > 0

        await _until(progressed, 60)
        assert seen[-1]["status"] == "enrolling" and 0 < seen[-1]["progress"] < 1, seen[-1]
        assert seen[-1]["enrolled"] is True
        assert (await _post(cb, "erin")).status_code == 409  # the name is taken on every replica
        await _until(lambda: _status_is(ca, "erin", "ready"), 120)
        r = await cb.get("/users/erin")  # committed: B adopts it and answers ready
        # adopted from the users folder: the domain check ran on the replica that enrolled erin
        assert r.json() == dict(user_id="erin", status="ready", progress=1.0, error=None, enrolled=True,
                                domain=None)
        assert "erin" in b.state.service.engine.pipe.users
    assert sorted(p.name for p in folder.iterdir()) == ["erin.json", "erin.safetensors"]


async def test_the_scan_adopts_and_drops_people_deleted_through_another_replica(app_for, folder):
    a, b = app_for(users_scan_s=0.1), app_for(users_scan_s=0.1)
    async with serve(a) as ca, serve(b) as cb:
        assert (await _post(ca, "fred")).status_code == 202
        assert (await _wait_ready(ca, "fred"))["status"] == "ready"

        async def b_serves():
            return "fred" in b.state.service.engine.pipe.users

        await _until(b_serves)  # by the scan, no request needed
        r = await cb.delete("/users/fred")
        assert r.status_code == 200 and r.json()["status"] == "deleted", r.text
        assert not list(folder.iterdir())

        async def a_dropped():
            return "fred" not in a.state.service.engine.pipe.users

        await _until(a_dropped)
        assert (await ca.get("/users/fred")).status_code == 404
        assert (await ca.post("/generate", json={"user_id": "fred", **GEN})).status_code == 404
        assert (await ca.get("/users")).json()["enrolled"] == []


async def test_a_delete_through_b_of_a_person_served_only_by_a(app_for, folder):
    a, b = app_for(users_scan_s=0.1), app_for()  # B never scans: its DELETE finds the entry itself
    async with serve(a) as ca, serve(b) as cb:
        assert (await _post(ca, "gil")).status_code == 202
        assert (await _wait_ready(ca, "gil"))["status"] == "ready"
        assert (await cb.delete("/users/gil")).status_code == 200
        assert not list(folder.iterdir())

        async def a_dropped():
            return (await ca.get("/users/gil")).status_code == 404

        await _until(a_dropped)


async def test_two_replicas_posting_one_name_at_once_enrol_it_once(app_for, folder):
    a, b = app_for(), app_for()
    async with serve(a) as ca, serve(b) as cb:
        rs = await asyncio.gather(_post(ca, "hal"), _post(cb, "hal"))
        assert sorted(r.status_code for r in rs) == [202, 409], [r.text for r in rs]
        loser = rs[0] if rs[0].status_code == 409 else rs[1]
        assert loser.json()["error"] == "user_exists"
        winner = ca if rs[0].status_code == 202 else cb
        assert (await _wait_ready(winner, "hal"))["status"] == "ready"
    assert sorted(p.name for p in folder.iterdir()) == ["hal.json", "hal.safetensors"]


async def test_a_delete_through_b_cancels_an_enrolment_running_on_a(app_for, folder, monkeypatch):
    monkeypatch.setattr(enrolment, "THROTTLE_S", 0.0)
    a, b = app_for(enrol_steps=40), app_for()
    async with serve(a) as ca, serve(b) as cb:
        assert (await _post(ca, "ivy")).status_code == 202

        async def running():
            return (await cb.get("/users/ivy")).json()["progress"] > 0

        await _until(running, 60)
        r = await cb.delete("/users/ivy")
        assert r.status_code == 200 and r.json()["status"] == "deleted", r.text

        async def a_forgot():
            return (await ca.get("/users/ivy")).status_code == 404

        await _until(a_forgot)
        await _until(lambda: _no_jobs(a))
        assert "ivy" not in a.state.service.engine.pipe.users
        assert (await cb.get("/users/ivy")).status_code == 404
    assert not list(folder.iterdir())


async def _status_is(client, user, status) -> bool:
    return (await client.get(f"/users/{user}")).json()["status"] == status


async def _no_jobs(app) -> bool:
    return not app.state.service.worker._jobs


async def test_an_abandoned_status_file_is_taken_over_and_a_fresh_one_is_not(app_for, folder):
    folder.mkdir(parents=True)
    old = time.time_ns() - 11 * 60 * 10**9
    (folder / "jo.status").write_text(json.dumps(dict(status="enrolling", progress=0.3, error=None,
                                                       updated_ns=old, token="dead")))
    (folder / "kim.status").write_text(json.dumps(dict(status="enrolling", progress=0.3, error=None,
                                                        updated_ns=time.time_ns(), token="alive")))
    async with serve(app_for()) as c:
        assert (await c.get("/users/kim")).json()["status"] == "enrolling"
        assert (await _post(c, "kim")).status_code == 409
        assert (await _post(c, "jo")).status_code == 202
        assert (await _wait_ready(c, "jo"))["status"] == "ready"
        assert (await c.delete("/users/kim")).status_code == 200  # cancels the other replica's enrolment
        assert (await c.get("/users/kim")).status_code == 404
    assert sorted(p.name for p in folder.iterdir()) == ["jo.json", "jo.safetensors", "kim.cancel"]


async def test_a_failed_enrolment_shows_on_b_and_a_delete_through_b_clears_it_on_a(app_for, folder,
                                                                                 monkeypatch):
    from models.user_encoder import UserEncoder

    with_users = UserEncoder.with_users

    def failing(self, users, rows):
        if users == ["fay"]:
            raise RuntimeError("no room for fay")
        return with_users(self, users, rows)

    monkeypatch.setattr(UserEncoder, "with_users", failing)
    a, b = app_for(users_scan_s=0.1), app_for()
    async with serve(a) as ca, serve(b) as cb:
        assert (await _post(ca, "fay")).status_code == 202
        assert (await _wait_ready(ca, "fay"))["status"] == "failed"
        r = (await cb.get("/users/fay")).json()
        assert r["status"] == "failed" and "no room for fay" in r["error"], r
        assert (await _post(cb, "fay")).status_code == 409  # failed keeps the name until a DELETE
        assert (await cb.delete("/users/fay")).status_code == 200

        async def a_forgot():
            return (await ca.get("/users/fay")).status_code == 404

        await _until(a_forgot)
        assert (await cb.get("/users/fay")).status_code == 404
    assert not list(folder.iterdir())
