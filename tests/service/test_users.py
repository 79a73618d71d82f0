"""Enrolment through the API: POST /users -> 202, poll to ready, generate, survive a restart, DELETE;
errors."""

import asyncio
import base64
import io
import time

import numpy as np
import pytest

from models.pipeline import DopplerPipeline
from tests.service.conftest import serve

pytestmark = pytest.mark.anyio
KEY = {"X-API-Key": "sekret"}


def _npy(seed: int, shape=(32, 32)) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).uniform(-60, 0, size=shape).astype(np.float32))
    return buf.getvalue()


def _files(n=5, bad: dict[int, tuple[str, bytes]] | None = None) -> list:
    files = [("files", (f"rec{i}.npy", _npy(i), "application/octet-stream")) for i in range(n)]
    for i, (name, data) in (bad or {}).items():
        files[i] = ("files", (name, data, "application/octet-stream"))
    return files


@pytest.fixture
def app_for(make_app, tiny_pipeline_dir, tmp_path):
    """A fresh tiny pipeline per app (enrolment changes the served encoder), one users folder for the test."""

    def _make(**settings):
        settings.setdefault("users_dir", str(tmp_path / "users"))
        settings.setdefault("enrol_steps", 3)
        settings.setdefault("max_batch_size", 2)
        return make_app(pipeline=DopplerPipeline.load(tiny_pipeline_dir), **settings)

    return _make


async def _wait_ready(client, user, headers=None) -> dict:
    for _ in range(600):
        r = await client.get(f"/users/{user}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] != "enrolling":
            return r.json()
        await asyncio.sleep(0.05)
    raise AssertionError("enrolment never finished")


async def test_enrol_generate_restart_delete(app_for, tmp_path):
    async with serve(app_for()) as client:
        r = await client.post("/users", data={"user_id": "dave"}, files=_files())
        assert r.status_code == 202 and r.json() == {"user_id": "dave", "status": "enrolling"}
        status = await _wait_ready(client, "dave")
        check = status.pop("domain")  # the recordings' domain check (models/domain.py)
        assert status == dict(user_id="dave", status="ready", progress=1.0, error=None, enrolled=True)
        # the tiny pipeline records no reference of its own: the error alone, no verdict
        assert check["recon_error_db"] > 0 and check["ratio"] is None and not check["out_of_domain"]
        assert "reconstruction error" in check["message"]
        gen = await client.post("/generate", json={"user_id": "dave", "num_samples": 1, "seed": 1,
                                                   "num_inference_steps": 2, "format": "npy"})
        assert gen.status_code == 200, gen.text
        assert gen.json()["guidance_scale"] == 4.0  # enrolled people default to ENROLLED_GUIDANCE
        trained = await client.post("/generate", json={"user_id": "alice", "num_samples": 1, "seed": 1,
                                                       "num_inference_steps": 2, "format": "npy"})
        assert trained.json()["guidance_scale"] == 2.0
        users = (await client.get("/users")).json()
        assert users["users"][-1] == "dave" and users["enrolled"] == ["dave"]
        assert (await client.post("/users", data={"user_id": "dave"}, files=_files())).status_code == 409
        assert (await client.delete("/users/alice")).status_code == 409  # trained users stay
    assert sorted(p.name for p in (tmp_path / "users").iterdir()) == ["dave.json", "dave.safetensors"]

    async with serve(app_for()) as client:  # a restart keeps the enrolled user
        users = (await client.get("/users")).json()
        assert users["users"] == ["alice", "bob", "carol", "dave"] and users["enrolled"] == ["dave"]
        assert (await client.get("/users/dave")).json()["status"] == "ready"
        r = await client.delete("/users/dave")
        assert r.status_code == 200 and r.json()["status"] == "deleted"
        assert (await client.get("/users/dave")).status_code == 404
        assert (await client.get("/users")).json()["users"] == ["alice", "bob", "carol"]
        gen = await client.post("/generate", json={"user_id": "dave", "num_samples": 1, "seed": 1,
                                                   "num_inference_steps": 2})
        assert gen.status_code == 404
    assert not list((tmp_path / "users").iterdir())


async def test_a_bad_file_gets_422_naming_it_and_nothing_is_left(app_for, tmp_path):
    async with serve(app_for()) as client:
        r = await client.post("/users", data={"user_id": "erin"}, files=_files(bad={2: ("broken.png",
                                                                                        b"nope")}))
        assert r.status_code == 422 and "broken.png" in r.json()["message"]
        r = await client.post("/users", data={"user_id": "erin"}, files=_files(bad={1: ("nan.npy",
                                                                                        _npy(0) * 0)}))
        assert r.status_code == 422 and "nan.npy" in r.json()["message"]
        r = await client.post("/users", data={"user_id": "erin"}, files=_files(n=2))
        assert r.status_code == 422 and "files" in r.json()["message"]
        r = await client.post("/users", data={"user_id": "../etc"}, files=_files())
        assert r.status_code == 422 and "user_id" in r.json()["message"]
        assert (await client.get("/users/erin")).status_code == 404
        assert "erin" not in (await client.get("/users")).json()["users"]
    assert not list((tmp_path / "users").iterdir())


async def test_routes_need_the_api_key_when_one_is_set(app_for):
    async with serve(app_for(api_key="sekret")) as client:
        assert (await client.post("/users", data={"user_id": "dave"}, files=_files())).status_code == 401
        assert (await client.get("/users/alice")).status_code == 401
        assert (await client.delete("/users/alice")).status_code == 401
        r = await client.post("/users", data={"user_id": "dave"}, files=_files(), headers=KEY)
        assert r.status_code == 202
        assert (await _wait_ready(client, "dave", KEY))["status"] == "ready"


async def test_a_full_enrolment_queue_answers_429_and_delete_cancels(app_for, tmp_path):
    async with serve(app_for(max_enrolments=1, enrol_steps=100_000)) as client:
        assert (await client.post("/users", data={"user_id": "dave"}, files=_files())).status_code == 202
        r = await client.post("/users", data={"user_id": "erin"}, files=_files())
        assert r.status_code == 429 and "Retry-After" in r.headers
        assert (await client.get("/users/dave")).json()["status"] == "enrolling"
        # generation still runs while the enrolment does (interleaved between denoising steps)
        gen = await client.post("/generate", json={"user_id": "bob", "num_samples": 1, "seed": 1,
                                                   "num_inference_steps": 2})
        assert gen.status_code == 200
        assert (await client.delete("/users/dave")).status_code == 200  # cancels the job
        assert (await client.get("/users/dave")).status_code == 404
    assert not list((tmp_path / "users").iterdir())


async def test_delete_with_the_job_queue_full_answers_429_queue_full_as_post_does(app_for):
    app = app_for(max_enrolments=1)
    async with serve(app) as client:
        assert (await client.post("/users", data={"user_id": "dave"}, files=_files())).status_code == 202
        assert (await _wait_ready(client, "dave"))["status"] == "ready"
        for _ in range(400):  # "ready" comes on the event loop a moment before the job itself returns
            if not app.state.service.worker._jobs:
                break
            await asyncio.sleep(0.01)

        def forever():  # another device job holds the only place in line
            while True:
                time.sleep(0.01)
                yield

        blocker = app.state.service.worker.submit_job(forever)
        try:
            r = await client.delete("/users/dave")
            assert r.status_code == 429 and r.json()["error"] == "queue_full", r.text
            assert r.headers["Retry-After"] == "30"
            posted = await client.post("/users", data={"user_id": "erin"}, files=_files())
            assert posted.status_code == 429 and posted.json()["error"] == "queue_full"
            assert set(r.json()) == set(posted.json()) == {"error", "message"}
            assert (await client.get("/users/dave")).json()["status"] == "ready"  # still there
        finally:
            blocker.cancel()
        for _ in range(200):  # the worker closes the cancelled job before its next chunk
            r = await client.delete("/users/dave")
            if r.status_code != 429:
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 200, r.text


async def test_remap_users_moves_queued_rows_and_fails_the_deleted_users(make_app):
    from service.engine import RowSpec
    from service.rows import UserGone
    from tests.service.conftest import FakeStepper

    stepper = FakeStepper()
    app = make_app(stepper, max_batch_size=1)
    async with serve(app):
        worker = app.state.service.worker
        stepper.gate.clear()
        # takes the only slot and blocks there
        running = worker.submit(RowSpec(0, 2, 2.0, "dpmsolver++"), [1])
        assert await asyncio.to_thread(stepper.entered.wait, 10)
        later = worker.submit(RowSpec(2, 2, 2.0, "dpmsolver++"), [2])  # queued behind it
        deleted = worker.submit(RowSpec(1, 2, 2.0, "dpmsolver++"), [3])
        worker.remap_users(lambda i: None if i == 1 else (i - 1 if i > 1 else i), UserGone("user deleted"))
        assert later.spec.user_index == 1 and running.spec.user_index == 0
        stepper.gate.set()
        assert len(await asyncio.wait_for(later.future, 10)) == 1 and len(await running.future) == 1
        with pytest.raises(UserGone, match="deleted"):
            await deleted.future
    # it started under its new index
    assert [c["users"] for c in stepper.calls if c["seeds"] == [2]][0] == [1]


async def test_an_enrolled_person_joins_the_texture_bank_and_leaves_it(make_app, tiny_pipeline_dir, tmp_path):
    from models.texture import build_bank

    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    x = np.random.default_rng(1).uniform(-60, 0, (4, 1, 32, 32)).astype(np.float32)
    pipe.texture = build_bank(pipe.vae, pipe.normalization, x, ["alice", "alice", "bob", "bob"])
    users_dir = tmp_path / "users"

    def app():
        p = DopplerPipeline.load(tiny_pipeline_dir)
        p.texture = pipe.texture
        return make_app(pipeline=p, users_dir=str(users_dir), enrol_steps=3, max_batch_size=2), p

    a, served = app()
    async with serve(a) as client:
        assert (await client.post("/users", data={"user_id": "dave"}, files=_files())).status_code == 202
        assert (await _wait_ready(client, "dave"))["status"] == "ready"
        assert list(served.texture.config.users) == ["alice", "bob", "dave"]
        assert int((served.texture.owners == 2).sum()) == 5  # dave's five recordings
        # the page's "Real recordings" of an enrolled person: the recordings they were enrolled from
        ex = await client.get("/users/dave/examples", params={"n": 2})
        assert ex.status_code == 200, ex.text
        body = ex.json()
        assert body["total"] == 5 and [i["split"] for i in body["items"]] == ["enrolled", "enrolled"]
        got = np.load(io.BytesIO(base64.b64decode(body["items"][0]["data"])))
        uploaded = [np.load(io.BytesIO(_npy(i))) for i in range(5)]
        assert min(float(np.abs(got.reshape(32, 32) - u.reshape(32, 32)).max()) for u in uploaded) < 0.1
        assert (await client.get("/users/alice/examples")).json()["error"] == "no_dataset"  # trained
        gen = await client.post("/generate", json={"user_id": "dave", "num_samples": 1, "seed": 1,
                                                   "num_inference_steps": 2, "format": "npy"})
        assert gen.status_code == 200, gen.text
    a, served = app()
    async with serve(a) as client:  # restored from the users folder with its texture
        assert "dave" in served.texture.config.users
        assert (await client.delete("/users/dave")).status_code == 200
        assert list(served.texture.config.users) == ["alice", "bob"]
