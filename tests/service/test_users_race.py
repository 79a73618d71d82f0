"""Enrolment under concurrency: one enrolment per user_id at a time, and whatever the interleaving of POST,
DELETE and a restart, GET /users, GET /users/{id}, the served pipeline's users (and their rows) and the
users folder agree."""

import asyncio

import pytest
import torch
from safetensors.torch import load_file

from service.routes import users as users_routes
from tests.service.conftest import serve
from tests.service.test_users import _files, _wait_ready

pytestmark = pytest.mark.anyio
TRAINED = ["alice", "bob", "carol"]


def _post(client, user):
    return client.post("/users", data={"user_id": user}, files=_files())


async def _later(delay_s, make):
    await asyncio.sleep(delay_s)
    return await make()


async def _settle(app) -> None:
    """Until no device job is queued or running and nobody is enrolling."""
    svc = app.state.service
    for _ in range(1000):
        if not svc.worker._jobs and all(e.status != "enrolling" for e in svc.enroller.entries.values()):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the enrolments never settled")


async def _agree(app, client, folder, names) -> dict[str, str | None]:
    """Check that every view of `names` tells the same story; return each one's status (None: unknown)."""
    await _settle(app)
    pipe = app.state.service.engine.pipe
    listed = (await client.get("/users")).json()
    on_disk = {p.stem for p in folder.glob("*.json")}
    failed = {p.stem for p in folder.glob("*.status")}  # a failed enrolment's status file stays until DELETE
    # only committed entries, each complete: no orphan row, no temporary file
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{u}{ext}" for u in on_disk
                                                               for ext in (".json", ".safetensors")]
                                                              + [f"{u}.status" for u in failed])
    assert listed["users"] == pipe.users and listed["users"][:3] == TRAINED
    states = {}
    for name in names:
        r = await client.get(f"/users/{name}")
        assert r.status_code in (200, 404), r.text
        state = r.json()["status"] if r.status_code == 200 else None
        assert state in (None, "ready", "failed"), (name, state)
        assert (state == "failed") == (name in failed), (name, state, failed)
        ready = state == "ready"
        assert ready == (name in pipe.users) == (name in listed["enrolled"]) == (name in on_disk), (
            name, state, pipe.users, listed, on_disk)
        assert pipe.users.count(name) <= 1
        if ready:  # the served row is the one on disk
            served = pipe.user_encoder.embedding.weight[pipe.user_encoder.index_of(name)].detach()
            assert torch.equal(served, load_file(str(folder / f"{name}.safetensors"))["rows"][0].to(served))
        states[name] = state
    return states


async def test_two_posts_for_one_user_id_at_once_enrol_it_once(app_for, folder):
    app = app_for()
    async with serve(app) as client:
        codes = [r.status_code for r in await asyncio.gather(_post(client, "dave"), _post(client, "dave"))]
        assert sorted(codes) == [202, 409]
        assert (await _wait_ready(client, "dave"))["status"] == "ready"
        assert await _agree(app, client, folder, ["dave"]) == {"dave": "ready"}
        r = await client.delete("/users/dave")
        assert r.status_code == 200 and r.json()["status"] == "deleted"
        assert (await client.delete("/users/dave")).status_code == 404  # not trained_user: it is gone
        assert await _agree(app, client, folder, ["dave"]) == {"dave": None}
    assert not list(folder.iterdir())


async def test_a_delete_while_the_upload_is_read_cancels_the_enrolment(app_for, folder, monkeypatch):
    reading, go_on = asyncio.Event(), asyncio.Event()
    read = users_routes._read

    async def slow_read(files, service, *rest):
        reading.set()
        await go_on.wait()
        return await read(files, service, *rest)

    monkeypatch.setattr(users_routes, "_read", slow_read)
    app = app_for()
    async with serve(app) as client:
        posted = asyncio.ensure_future(_post(client, "dave"))
        await asyncio.wait_for(reading.wait(), 10)
        # the name is taken from the start (a second POST never reaches the read)
        assert (await asyncio.wait_for(_post(client, "dave"), 10)).status_code == 409
        assert (await client.get("/users/dave")).json()["status"] == "enrolling"
        r = await client.delete("/users/dave")
        assert r.status_code == 200 and r.json()["status"] == "deleted"
        go_on.set()
        r = await asyncio.wait_for(posted, 10)
        assert r.status_code == 409 and r.json()["error"] == "user_deleted", r.text
        assert await _agree(app, client, folder, ["dave"]) == {"dave": None}
    assert not list(folder.iterdir())


async def test_a_failed_enrolment_leaves_nothing_served_or_on_disk(app_for, folder, monkeypatch):
    from models.user_encoder import UserEncoder

    with_users = UserEncoder.with_users

    def failing(self, users, rows):
        if users == ["fay"]:
            raise RuntimeError("no room for fay")
        return with_users(self, users, rows)

    monkeypatch.setattr(UserEncoder, "with_users", failing)
    app = app_for()
    async with serve(app) as client:
        assert (await _post(client, "fay")).status_code == 202
        assert (await _wait_ready(client, "fay"))["status"] == "failed"
        assert await _agree(app, client, folder, ["fay"]) == {"fay": "failed"}
        assert (await client.delete("/users/fay")).status_code == 200  # forgotten
        assert (await client.get("/users/fay")).status_code == 404
    assert not list(folder.iterdir())


async def test_concurrent_posts_and_deletes_agree_in_every_interleaving_and_after_a_restart(app_for, folder):
    app = app_for()
    names = []
    async with serve(app) as client:
        t0 = asyncio.get_running_loop().time()
        await _post(client, "warm")  # how long one enrolment takes here, to spread the DELETEs over it
        await _wait_ready(client, "warm")
        took = asyncio.get_running_loop().time() - t0
        names.append("warm")

        # POST and DELETE of one name, the DELETE at points across the enrolment's life
        for i, frac in enumerate((0.0, 0.02, 0.1, 0.3, 0.6, 0.9, 1.0, 1.3)):
            name = f"p{i}"
            names.append(name)
            post, delete = await asyncio.gather(
                _post(client, name), _later(frac * took, lambda n=name: client.delete(f"/users/{n}")))
            assert post.status_code in (202, 409) and delete.status_code in (200, 404), (post.text,
                                                                                        delete.text)
            assert (post.status_code == 409) <= (delete.status_code == 200)  # only a DELETE refuses a POST
            states = await _agree(app, client, folder, [name])
            if delete.status_code == 200:
                assert states[name] is None, (frac, states)

        # two POSTs and a DELETE at once
        names.append("q")
        codes = [r.status_code for r in await asyncio.gather(_post(client, "q"), _post(client, "q"),
                                                              client.delete("/users/q"))]
        assert codes[:2].count(202) <= 1, codes
        await _agree(app, client, folder, ["q"])

        # a ready user: two DELETEs and a POST at once, at a few offsets
        for i, frac in enumerate((0.0, 0.05, 0.5)):
            name = f"r{i}"
            names.append(name)
            assert (await _post(client, name)).status_code == 202
            assert (await _wait_ready(client, name))["status"] == "ready"
            rs = await asyncio.gather(client.delete(f"/users/{name}"), client.delete(f"/users/{name}"),
                                      _later(frac * took, lambda n=name: _post(client, n)))
            assert all(r.status_code in (200, 404) for r in rs[:2]) and 200 in [r.status_code for r in rs[:2]]
            assert rs[2].status_code in (202, 409)
            states = await _agree(app, client, folder, [name])
            assert (states[name] == "ready") == (rs[2].status_code == 202)

        before = await _agree(app, client, folder, names)
    assert any(s == "ready" for s in before.values())

    app = app_for()
    async with serve(app) as client:  # a restart on the same folder serves exactly what was ready
        after = await _agree(app, client, folder, names)
        assert after == {n: ("ready" if s == "ready" else None) for n, s in before.items()}
        for name, state in after.items():
            r = await client.delete(f"/users/{name}")
            assert r.status_code == (200 if state else 404), r.text
        assert await _agree(app, client, folder, names) == dict.fromkeys(names)
        assert (await client.get("/users")).json()["users"] == TRAINED
    assert not list(folder.iterdir())
