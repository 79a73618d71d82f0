"""A damaged entry in the users folder is skipped with a warning naming the file and why; the server starts,
serves the others and GET /readyz lists what it skipped."""

import json
import logging

import pytest
import torch
from safetensors.torch import save_file

from models.pipeline import DopplerPipeline
from tests.service.conftest import serve

pytestmark = pytest.mark.anyio


def _entry(folder, user, rows, info=None):
    save_file({"rows": rows}, str(folder / f"{user}.safetensors"))
    (folder / f"{user}.json").write_text(json.dumps({"user_id": user, "enrolled_at_ns": 1} if info is None
                                                    else info))


def _truncated(folder, width):
    _entry(folder, "eve", torch.randn(1, width))
    data = (folder / "eve.safetensors").read_bytes()
    (folder / "eve.safetensors").write_bytes(data[: len(data) // 2])
    return "eve.safetensors"


def _wrong_shape(folder, width):
    _entry(folder, "eve", torch.randn(1, width + 1))
    return "eve.safetensors"


def _json(text):
    def damage(folder, width):
        _entry(folder, "eve", torch.randn(1, width))
        (folder / "eve.json").write_text(text)
        return "eve.json"

    return damage


def _no_rows(folder, width):
    _entry(folder, "eve", torch.randn(1, width))
    save_file({"other": torch.randn(1, width)}, str(folder / "eve.safetensors"))
    return "eve.safetensors"


def _no_safetensors(folder, width):
    (folder / "eve.json").write_text(json.dumps({"user_id": "eve", "enrolled_at_ns": 1}))
    return "eve.safetensors"


def _trained_name(folder, width):
    _entry(folder, "alice", torch.randn(1, width))
    return "alice.json"


DAMAGE = {
    "truncated safetensors": _truncated,
    "row of the wrong shape": _wrong_shape,
    "json []": _json("[]"),
    "json null": _json("null"),
    "not json": _json("{not json"),
    "enrolled_at_ns a string": _json(json.dumps({"user_id": "eve", "enrolled_at_ns": "yesterday"})),
    "user_id a number": _json(json.dumps({"user_id": 7, "enrolled_at_ns": 1})),
    "no rows tensor": _no_rows,
    "no safetensors": _no_safetensors,
    "a trained user's name": _trained_name,
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
async def test_a_damaged_entry_is_skipped_and_the_others_are_served(make_app, tiny_pipeline_dir, tmp_path,
                                                                    caplog, damage):
    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    width = pipe.user_encoder.embedding.weight.shape[1]
    folder = tmp_path / "users"
    folder.mkdir()
    _entry(folder, "dave", torch.randn(1, width), {"user_id": "dave", "enrolled_at_ns": 5})
    _entry(folder, "zed", torch.randn(1, width), {"user_id": "zed", "enrolled_at_ns": 2})
    file = DAMAGE[damage](folder, width)
    user = file.rsplit(".", 1)[0]
    app = make_app(pipeline=pipe, users_dir=str(folder), max_batch_size=2)
    with caplog.at_level(logging.WARNING, logger="dopplergen.enrolment"):
        async with serve(app) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            skipped = ready.json()["skipped_users"]
            assert [(s["user_id"], s["file"]) for s in skipped] == [(user, file)]
            assert skipped[0]["reason"] and str(tmp_path) not in skipped[0]["reason"]  # no paths to probes
            users = (await client.get("/users")).json()
            assert users["users"] == ["alice", "bob", "carol", "zed", "dave"]  # in enrolment order
            assert users["enrolled"] == ["zed", "dave"]
            assert (await client.get("/users/dave")).json()["status"] == "ready"
            if user != "alice":
                assert (await client.get(f"/users/{user}")).status_code == 404
                assert (await client.delete(f"/users/{user}")).status_code == 404  # left for the operator
            gen = await client.post("/generate", json={"user_id": "dave", "num_samples": 1, "seed": 1,
                                                       "num_inference_steps": 2, "format": "npy"})
            assert gen.status_code == 200, gen.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(file in w and skipped[0]["reason"] in w for w in warnings), warnings
    assert (folder / file).exists() or damage == "no safetensors"  # nothing is deleted


async def test_readyz_lists_no_skipped_users_when_the_folder_is_sound(make_app, tiny_pipeline_dir, tmp_path):
    app = make_app(pipeline=DopplerPipeline.load(tiny_pipeline_dir), users_dir=str(tmp_path / "users"))
    async with serve(app) as client:
        assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_enrolling_a_skipped_name_replaces_the_damaged_entry(make_app, tiny_pipeline_dir, tmp_path):
    from tests.service.test_users import _files, _wait_ready

    folder = tmp_path / "users"
    folder.mkdir()
    _json("null")(folder, DopplerPipeline.load(tiny_pipeline_dir).user_encoder.embedding.weight.shape[1])

    def app():
        return make_app(pipeline=DopplerPipeline.load(tiny_pipeline_dir), users_dir=str(folder),
                        enrol_steps=3, max_batch_size=2)

    async with serve(app()) as client:
        assert [s["user_id"] for s in (await client.get("/readyz")).json()["skipped_users"]] == ["eve"]
        assert (await client.post("/users", data={"user_id": "eve"}, files=_files())).status_code == 202
        assert (await _wait_ready(client, "eve"))["status"] == "ready"
        assert (await client.get("/readyz")).json() == {"status": "ready"}
    async with serve(app()) as client:
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        assert (await client.get("/users")).json()["enrolled"] == ["eve"]
