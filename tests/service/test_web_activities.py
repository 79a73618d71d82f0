"""The activity condition on the web page's side: the page builds a picker for every categorical condition
GET /info lists, /info lists a pipeline's activities, POST /generate takes one (an event has no walking
speed: absent, echoed as null), and a simulated activity dataset's recordings are served with their manifest
conditions (an event's `nan` speed left out, so the JSON stays valid)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from models.condition_stats import describe_conditions, encoder_specs
from models.conditions import ConditionEncoder
from models.pipeline import DopplerPipeline, build_untrained_pipeline
from service.routes.web import STATIC
from tests.conftest import TINY_USERS
from tests.service.conftest import serve
from tests.service.test_web_routes import write_dataset

pytestmark = pytest.mark.anyio
COMMON = {"num_inference_steps": 2, "format": "npy"}
NAMES = ["speed_mps", "activity"]


@pytest.fixture(scope="module")
def activity_pipe() -> DopplerPipeline:
    """A random tiny pipeline conditioned on speed_mps and activity: every user walks (alice 0.8-1.0 m/s, the
    others 1.3-1.5) in two recordings of three and falls in the third, whose speed is NaN (what `simulate
    --activities` records for an event)."""
    torch.manual_seed(2)
    pipe = build_untrained_pipeline("tiny", TINY_USERS, version="test")
    rng = np.random.default_rng(0)
    users = np.repeat(TINY_USERS, 60)
    activity = np.where(np.arange(len(users)) % 3 == 2, "fall", "walk")
    speed = np.where(users == "alice", 0.8, 1.3) + rng.uniform(0, 0.2, len(users))
    speed[activity == "fall"] = np.nan
    pipe.meta["conditions"] = describe_conditions({"speed_mps": speed, "activity": activity}, users, NAMES)
    pipe.condition_encoder = ConditionEncoder(conditions=encoder_specs(pipe.meta["conditions"], NAMES),
                                              cross_attention_dim=32)
    return pipe.to("cpu")


def test_the_page_offers_a_select_for_each_categorical_condition_and_sends_its_value():
    app, state = (STATIC / "app.js").read_text(), (STATIC / "state.js").read_text()
    html = (STATIC / "index.html").read_text()
    assert 'id="conditions"' in html and 'id="condition-fields"' in html
    # GET /info's {"activity": {"type": "categorical", "values": [...]}} -> a categorical entry, its values
    assert 'c.type === "categorical"' in state and "c.values" in state
    categorical = app[app.index('if (c.type === "categorical")'):]
    categorical = categorical[:categorical.index("} else {")]
    assert 'document.createElement("select")' in categorical
    assert re.search(r'option\("", "any \(drawn\)"\), \.\.\.c\.values\.map', categorical)  # empty = drawn
    assert "input.id = `cond-${c.name}`" in app
    # the chosen value goes into POST /generate's body under the condition's name, as a string
    assert 'body[c.name] = c.type === "numeric" ? Number(v) : v' in app
    # a generated sample's caption says what was used (a drawn activity, say); null (absent) is left out
    assert "describeConditions(item.conditions)" in app[app.index("async function generate"):]
    assert "v !== null" in app[app.index("function describeConditions"):]


async def test_info_lists_the_activities_and_generate_takes_one(make_app, fake, activity_pipe):
    async with serve(make_app(fake, pipeline=activity_pipe)) as client:
        cond = (await client.get("/info")).json()["conditions"]
        fall = (await client.post("/generate", json={
            "user_id": "alice", "seed": 3, "num_samples": 2, "activity": "fall", **COMMON})).json()
        walk = (await client.post("/generate", json={
            "user_id": "alice", "seed": 3, "num_samples": 4, "activity": "walk", **COMMON})).json()
        drawn = (await client.post("/generate", json={
            "user_id": "alice", "seed": 20, "num_samples": 12, **COMMON})).json()
        unknown = await client.post("/generate", json={"user_id": "alice", "activity": "run", **COMMON})
    assert list(cond) == NAMES
    assert cond["activity"]["type"] == "categorical" and cond["activity"]["values"] == ["fall", "walk"]
    assert cond["speed_mps"]["type"] == "numeric"
    # a fall has no walking speed: left absent and echoed as null, not given a walking one
    assert [it["conditions"] for it in fall["items"]] == [{"speed_mps": None, "activity": "fall"}] * 2
    assert all(0.8 <= it["conditions"]["speed_mps"] <= 1.0 for it in walk["items"])  # alice's own walks
    used = [it["conditions"] for it in drawn["items"]]
    assert {c["activity"] for c in used} == {"fall", "walk"}  # omitted: drawn from alice's recordings
    assert all((c["speed_mps"] is None) == (c["activity"] == "fall") for c in used)
    assert unknown.status_code == 422 and unknown.json()["details"][0]["field"] == "activity"


async def test_examples_of_an_activity_dataset_leave_an_events_nan_speed_out(make_app, fake, tmp_path):
    fall = {"path": "alice/0002.npy", "user": "alice", "split": "train", "speed_mps": "nan",
            "activity": "fall"}
    data = write_dataset(tmp_path / "data", {"alice": 2})
    np.save(data / "alice" / "0002.npy", np.full((32, 32), -2.0, np.float32))
    with open(data / "manifest.csv", "a") as fh:
        fh.write(",".join(fall.values()) + "\n")  # as write_dataset writes a NaN: `nan`
    async with serve(make_app(fake, data=data)) as client:
        r = await client.get("/users/alice/examples", params={"n": 3})
    assert r.status_code == 200, r.text
    assert [it["conditions"] for it in r.json()["items"]] == [
        {"speed_mps": 1.0, "activity": "walk"}, {"speed_mps": 1.1, "activity": "walk"}, {"activity": "fall"}]
