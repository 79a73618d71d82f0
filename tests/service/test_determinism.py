"""Same (user, seed, steps, guidance, scheduler) -> the same bits, alone or batched with others (CPU, tiny model)."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest

from models.sampling import sample
from tests.service.conftest import serve

pytestmark = pytest.mark.anyio


class RecordingSampler:
    """The real sampler, with the batch sizes it was called with."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, pipe, user_indices, seeds, **kw):
        self.sizes.append(len(seeds))
        return sample(pipe, user_indices, seeds, **kw)


def npy(item: dict) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(item["data"])), allow_pickle=False)


@pytest.mark.parametrize("scheduler", ["dpmsolver++", "ddpm"])
async def test_sample_is_bitwise_identical_alone_and_batched(make_app, tiny_pipe, scheduler):
    rec = RecordingSampler()
    app = make_app(rec, max_batch_size=4, max_wait_ms=500)
    common = {"num_inference_steps": 3, "guidance_scale": 3.0, "scheduler": scheduler, "format": "npy"}
    async with serve(app) as client:
        rec.sizes.clear()  # forget the warm-up
        alone = (await client.post("/generate", json={"user_id": "alice", "seed": 1234, **common})).json()
        mixed = [("bob", 5), ("alice", 1234), ("carol", 7), ("alice", 9)]
        batched = await asyncio.gather(
            *[client.post("/generate", json={"user_id": u, "seed": s, **common}) for u, s in mixed]
        )
        multi = (await client.post("/generate", json={"user_id": "alice", "seed": 1233, "num_samples": 3, **common})).json()
    assert rec.sizes == [1, 4, 3]  # alone, then one batch of four, then one of three
    a = npy(alone["items"][0])
    assert np.array_equal(a, npy(batched[1].json()["items"][0]))
    assert np.array_equal(a, npy(multi["items"][1]))
    # ... and identical to calling the one sampler in-process at the same padded shape.
    direct = sample(tiny_pipe, [0], [1234], num_inference_steps=3, guidance_scale=3.0, scheduler=scheduler, pad_to=4)
    assert np.array_equal(a, direct[0].numpy())
    assert not np.array_equal(a, npy(batched[3].json()["items"][0]))  # another seed, another sample
