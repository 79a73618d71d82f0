"""Same (user, seed, steps, guidance, scheduler) -> same sample whatever shares the device (CPU, tiny model).

Bitwise with fixed-shape slots (batch_padding=fixed); within 0.05 dB with the default power-of-two buckets.
"""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest

from models.sampling import sample
from service.engine import ModelStepper
from tests.service.conftest import serve

pytestmark = pytest.mark.anyio


class RecordingStepper(ModelStepper):
    """The real model, with the number of rows of every step."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def step(self, pipe, rows, pad_to, cfg) -> None:
        self.sizes.append(len(rows))
        super().step(pipe, rows, pad_to, cfg)


def npy(item: dict) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(item["data"])), allow_pickle=False)


async def alice_in_company(client, rec: RecordingStepper, common: dict) -> dict[str, np.ndarray]:
    """alice/1234 alone, in a burst of four, inside a 3-sample request, and joining a longer request
    mid-way."""
    out = {"alone": npy(
        (await client.post("/generate", json={"user_id": "alice", "seed": 1234, **common})).json()["items"][0]
    )}
    mixed = [("bob", 5), ("alice", 1234), ("carol", 7), ("alice", 9)]
    burst = await asyncio.gather(
        *[client.post("/generate", json={"user_id": u, "seed": s, **common}) for u, s in mixed]
    )
    out["burst"] = npy(burst[1].json()["items"][0])
    out["other_seed"] = npy(burst[3].json()["items"][0])
    multi = (
        await client.post("/generate", json={"user_id": "alice", "seed": 1233, "num_samples": 3, **common})
    ).json()
    out["multi"] = npy(multi["items"][1])
    long = asyncio.create_task(client.post("/generate", json={
        "user_id": "bob", "seed": 3, "num_samples": 2, **common, "num_inference_steps": 12,
        "guidance_scale": 1.0}))
    before = len(rec.sizes)
    while len(rec.sizes) < before + 2:  # the long request is two steps in
        await asyncio.sleep(0.002)
    out["joined_mid_way"] = npy(
        (await client.post("/generate", json={"user_id": "alice", "seed": 1234, **common})).json()["items"][0]
    )
    assert (await long).status_code == 200
    return out


@pytest.mark.parametrize("scheduler", ["dpmsolver++", "ddpm"])
async def test_fixed_slots_give_the_same_bits_whatever_shares_the_device(make_app, tiny_pipe, scheduler):
    rec = RecordingStepper()
    app = make_app(rec, max_batch_size=4, batch_padding="fixed", max_wait_ms=300)
    common = {"num_inference_steps": 3, "guidance_scale": 3.0, "scheduler": scheduler, "format": "npy"}
    async with serve(app) as client:
        rec.sizes.clear()  # forget the warm-up
        got = await alice_in_company(client, rec, common)
    assert rec.sizes[:4] == [1, 1, 1, 4]  # alone, then the burst of four together
    assert max(rec.sizes) == 4 and 3 in rec.sizes
    for case in ("burst", "multi", "joined_mid_way"):
        assert np.array_equal(got["alone"], got[case]), case
    # ... and identical to calling the one sampler in-process at the same padded shape.
    direct = sample(
        tiny_pipe, [0], [1234], num_inference_steps=3, guidance_scale=3.0, sampler=scheduler, pad_to=4
    )
    assert np.array_equal(got["alone"], direct[0].numpy())
    assert not np.array_equal(got["alone"], got["other_seed"])  # another seed, another sample


async def test_default_buckets_agree_within_005_db_whatever_shares_the_device(make_app, tiny_pipe):
    rec = RecordingStepper()
    app = make_app(rec, max_batch_size=4, max_wait_ms=300)
    common = {"num_inference_steps": 4, "guidance_scale": 2.0, "scheduler": "dpmsolver++", "format": "npy"}
    async with serve(app) as client:
        rec.sizes.clear()
        got = await alice_in_company(client, rec, common)
    assert app.state.service.engine.padding == "buckets" and 4 in rec.sizes
    for case in ("burst", "multi", "joined_mid_way"):
        assert np.abs(got["alone"] - got[case]).max() <= 0.05, case
    direct = sample(tiny_pipe, [0], [1234], num_inference_steps=4, guidance_scale=2.0)
    assert np.abs(got["alone"] - direct[0].numpy()).max() <= 0.05
    assert np.abs(got["alone"] - got["other_seed"]).max() > 1.0
