"""models.enrolment and UserEncoder.with_users: new rows learnt, existing rows and the null row bit for
bit."""

import numpy as np
import pytest
import torch

from models.enrolment import EnrolConfig, Enrolment, enrol
from models.pipeline import DopplerPipeline
from models.sampling import sample


@pytest.fixture
def pipe(tiny_pipeline_dir) -> DopplerPipeline:
    return DopplerPipeline.load(tiny_pipeline_dir)


def _x(n=4, seed=0):
    return np.random.default_rng(seed).uniform(-60, 0, size=(n, 1, 32, 32)).astype(np.float32)


def test_with_users_keeps_every_existing_row_and_the_null_row(pipe):
    enc = pipe.user_encoder.to(dtype=torch.float16)  # the demo exports fp16: the copy must keep it
    rows = torch.randn(2, enc.embedding.weight.shape[1])
    rng_before = torch.get_rng_state()
    big = enc.with_users(["dave", "erin"], rows)
    # building the copy draws nothing from the global RNG
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert big.users == enc.users + ["dave", "erin"] and big.null_index == enc.null_index + 2
    w, bw = enc.embedding.weight, big.embedding.weight
    assert big.dtype == torch.float16 and torch.equal(bw[: enc.null_index], w[: enc.null_index])
    assert torch.equal(bw[big.null_index], w[enc.null_index])  # null user: same row, still last
    assert torch.equal(bw[enc.null_index:big.null_index], rows.half())
    assert torch.equal(big.position, enc.position)
    small = big.without_users(["dave"])
    assert small.users == enc.users + ["erin"] and torch.equal(small.embedding.weight[-2], rows[1].half())
    with pytest.raises(KeyError):
        big.without_users(["nobody"])
    with pytest.raises(ValueError, match="shape"):
        enc.with_users(["x"], torch.zeros(1, 3))


def test_existing_users_sample_the_same_bytes_after_an_append(pipe):
    before = sample(pipe, [0, 2], [5, 6], num_inference_steps=3, pad_to=4)
    rows = torch.randn(1, pipe.user_encoder.embedding.weight.shape[1])
    pipe.user_encoder = pipe.user_encoder.with_users(["dave"], rows)
    after = sample(pipe, [0, 2], [5, 6], num_inference_steps=3, pad_to=4)
    assert torch.equal(before, after)
    assert not torch.equal(sample(pipe, [3], [5], num_inference_steps=3), before[:1])  # the new user differs


def test_enrolment_learns_only_its_rows_and_is_seeded(pipe):
    unet = {k: v.clone() for k, v in pipe.denoiser.state_dict().items()}
    enc = {k: v.clone() for k, v in pipe.user_encoder.state_dict().items()}
    cfg = EnrolConfig(steps=3, batch_size=4, time_shifts=2, seed=1, init="mean")
    job = Enrolment(pipe, _x(), [0, 0, 1, 1], 2, cfg)
    start = job.result()
    pop = pipe.user_encoder.embedding.weight[:3].float()
    # at the population
    assert torch.allclose(start.mean(0), pop.mean(0), atol=0.1 * float(pop.std(0).max()) * 3)
    rows, log = enrol(pipe, _x(), [0, 0, 1, 1], 2, cfg)
    again, _ = enrol(pipe, _x(), [0, 0, 1, 1], 2, cfg)
    assert rows.shape == (2, start.shape[1]) and not torch.equal(rows, start) and torch.equal(rows, again)
    assert log["steps"] == 3 and np.isfinite(log["loss_last"])
    assert all(torch.equal(v, pipe.denoiser.state_dict()[k]) for k, v in unet.items())  # UNet frozen
    # existing rows untouched
    assert all(torch.equal(v, pipe.user_encoder.state_dict()[k]) for k, v in enc.items())
    assert not any(p.requires_grad for p in pipe.denoiser.parameters())


def test_regularisation_pulls_rows_toward_the_population(pipe):
    base = dict(steps=20, batch_size=4, time_shifts=2, seed=0, lr=5e-2, init="mean")
    free, _ = enrol(pipe, _x(), [0] * 4, 1, EnrolConfig(**base))
    pulled, _ = enrol(pipe, _x(), [0] * 4, 1, EnrolConfig(**base, reg=1e3))
    prior = pipe.user_encoder.embedding.weight[:3].float().mean(0)
    assert (pulled - prior).norm() < (free - prior).norm()


def test_bad_input_is_refused(pipe):
    with pytest.raises(ValueError, match="labels"):
        Enrolment(pipe, _x(), [0, 0, 1, 2], 2)
    with pytest.raises(ValueError, match="shape"):
        Enrolment(pipe, np.zeros((2, 1, 16, 16), np.float32), [0, 0], 1)
    with pytest.raises(ValueError):
        EnrolConfig(steps=-1)


def test_nearest_initialisation_starts_at_a_trained_row(pipe):
    cfg = EnrolConfig(steps=0, batch_size=4, time_shifts=2, init="nearest", init_noise=0.0)
    start = Enrolment(pipe, _x(), [0, 0, 1, 1], 2, cfg).result()
    pop = pipe.user_encoder.embedding.weight[:3].float()
    assert all(any(torch.equal(r, p) for p in pop) for r in start)
    with pytest.raises(ValueError):
        EnrolConfig(init="median")


def test_enrolled_and_non_finite_rows_never_feed_the_prior(pipe):
    """The poisoning seen before: a NaN row from one bad enrolment was the 'nearest' start of every later one.
    Now the prior is the trained rows only: not the people dopplergen.json lists as enrolled, not the ones a
    caller excludes (the service's), and never a row that is not finite."""
    from models.enrolment import population_rows

    d = pipe.user_encoder.embedding.weight.shape[1]
    trained = population_rows(pipe)
    pipe.user_encoder = pipe.user_encoder.with_users(["nan", "cli", "svc"], torch.stack(
        [torch.full((d,), float("nan")), torch.full((d,), 50.0), torch.full((d,), -50.0)]))
    pipe.meta["enrolled_users"] = {"cli": {"k": 5}}
    assert torch.equal(population_rows(pipe, exclude={"svc"}), trained)
    cfg = EnrolConfig(steps=2, batch_size=2, time_shifts=2, seed=0, init_noise=0.0)
    start = Enrolment(pipe, _x(), [0, 0, 0, 0], 1, cfg, exclude={"svc"}).result()  # the nearest row itself
    assert any(torch.equal(start[0], r) for r in trained)


def test_a_non_finite_recording_or_loss_fails_the_enrolment(pipe):
    x = _x()
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        Enrolment(pipe, x, [0, 0, 0, 0], 1)
    def nan_loss(idx, ctx, g):
        return ctx.sum() * float("nan")

    cfg = EnrolConfig(steps=2, batch_size=2, time_shifts=2)
    with pytest.raises(FloatingPointError, match="no trained row"):  # the nearest-row search
        Enrolment(pipe, _x(), [0, 0, 0, 0], 1, cfg, loss_fn=nan_loss)
    cfg = EnrolConfig(steps=2, batch_size=2, time_shifts=2, init="mean")
    job = Enrolment(pipe, _x(), [0, 0, 0, 0], 1, cfg, loss_fn=nan_loss)
    with pytest.raises(FloatingPointError, match="not finite"):
        job.step()


@pytest.mark.parametrize("route", ["kl", "vq-diffusion"])
def test_a_lazy_set_up_in_pieces_gives_the_same_rows_bit_for_bit(tiny_pipeline_dir, tmp_path, route):
    """The service runs the set-up piece by piece between denoising steps (one stage-1 encode per time shift,
    one candidate row per piece of the nearest-row search); the rows are the eager constructor's."""
    from models.pipeline import build_untrained_pipeline

    pipe = DopplerPipeline.load(tiny_pipeline_dir) if route == "kl" else build_untrained_pipeline(
        "tiny", ["alice", "bob", "carol"], route="vq-diffusion")
    cfg = EnrolConfig(steps=2, batch_size=2, time_shifts=3, seed=2)
    eager = Enrolment(pipe, _x(3), [0, 0, 0], 1, cfg)
    lazy = Enrolment(pipe, _x(3), [0, 0, 0], 1, cfg, lazy=True)
    assert not lazy.ready and not lazy.done
    with pytest.raises(RuntimeError, match="preparation"):
        lazy.step()
    pieces = sum(1 for _ in lazy.preparation())
    assert lazy.ready and pieces == cfg.time_shifts + len(pipe.users)  # 3 encodes + 3 candidates
    for job in (eager, lazy):
        while not job.done:
            job.step()
    assert torch.equal(eager.result(), lazy.result()) and eager.losses == lazy.losses
