import pytest
import torch

from models.pipeline import DopplerPipeline
from models.sampling import CONTINUOUS_SAMPLERS, sample


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return DopplerPipeline.load(tiny_pipeline_dir)


@pytest.mark.parametrize("scheduler", CONTINUOUS_SAMPLERS)
def test_all_schedulers_run_finite_and_in_db_range(pipe, scheduler):
    out = sample(pipe, [0, 1], [1, 2], num_inference_steps=4, guidance_scale=2.0, sampler=scheduler)
    assert out.shape == (2, 1, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= -60.0 and out.max() <= 0.0


@pytest.mark.parametrize("scheduler", CONTINUOUS_SAMPLERS)
def test_same_seed_same_sample_alone_or_batched_bitwise(pipe, scheduler):
    kw = dict(num_inference_steps=4, guidance_scale=3.0, sampler=scheduler, pad_to=8)
    alone = sample(pipe, [1], [1234], **kw)
    batched = sample(pipe, [2, 0, 1, 0, 2], [5, 6, 1234, 7, 8], **kw)
    assert torch.equal(alone[0], batched[2])
    again = sample(pipe, [1], [1234], **kw)
    assert torch.equal(alone, again)


def test_different_seeds_and_users_differ(pipe):
    out = sample(pipe, [0, 0, 1], [1, 2, 1], num_inference_steps=3)
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


def test_bad_arguments(pipe):
    with pytest.raises(ValueError):
        sample(pipe, [0], [1, 2])
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(pipe, [0], [1], sampler="euler")
    with pytest.raises(ValueError, match="out of range"):
        sample(pipe, [17], [1])


def test_a_start_from_a_recording_at_strength_one_is_the_plain_sample_and_bad_starts_are_refused(pipe):
    from models.sampling import encode_init

    init = encode_init(pipe, torch.full((2, 1, 32, 32), -30.0))
    kw = dict(num_inference_steps=4, guidance_scale=2.0, pad_to=2)
    assert torch.equal(sample(pipe, [0, 1], [1, 2], init=init, strength=1.0, **kw),
                       sample(pipe, [0, 1], [1, 2], **kw))
    assert not torch.equal(sample(pipe, [0, 1], [1, 2], init=init, strength=0.5, **kw),
                           sample(pipe, [0, 1], [1, 2], **kw))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="strength"):
            sample(pipe, [0, 1], [1, 2], init=init, strength=bad, **kw)
    with pytest.raises(ValueError, match="init latent of shape"):
        sample(pipe, [0, 1], [1, 2], init=init[:, :, :2], strength=0.5, **kw)
    with pytest.raises(ValueError, match="init latents for"):
        sample(pipe, [0], [1], init=init, strength=0.5, **kw)


def test_a_low_strength_start_stays_near_its_recording_on_the_demo():
    """SDEdit: from a recording noised to a fifth of the schedule, the demo lands nearer to that recording
    than a sample of the same person from pure noise does."""
    from pathlib import Path

    from models.sampling import encode_init

    demo = DopplerPipeline.load(Path(__file__).resolve().parents[2] / "checkpoints" / "demo")
    rec = sample(demo, [1], [7], num_inference_steps=10, guidance_scale=4.0)  # stands in for a recording
    kw = dict(num_inference_steps=10, guidance_scale=4.0)
    near = sample(demo, [1, 1], [8, 9], init=encode_init(demo, rec).repeat(2, 1, 1, 1), strength=0.2, **kw)
    free = sample(demo, [1, 1], [8, 9], **kw)
    assert (near - rec).abs().mean() < 0.6 * (free - rec).abs().mean()
