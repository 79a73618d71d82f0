"""Per-row samplers against diffusers' own schedulers on the same noise, alone and mixed in one batch."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from models import autoencoder as ae
from models import solvers as S
from models.pipeline import DopplerPipeline
from models.sampling import CONTINUOUS_SAMPLERS, start_row, step_rows

TOL = 1e-4  # max abs difference in model space (the bar)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return DopplerPipeline.load(tiny_pipeline_dir)


def with_config(pipe: DopplerPipeline, **changes) -> DopplerPipeline:
    clone = DopplerPipeline(pipe.vae, pipe.denoiser, pipe.user_encoder,
                            {**pipe.scheduler_config, **changes}, pipe.meta)
    return clone


def diffusers_reference(pipe, sampler: str, steps: int, guidance: float, user: int,
                        seed: int) -> torch.Tensor:
    """The stock loop: diffusers' scheduler.step on one sample, the seed's generator for the initial and DDPM
    noise."""
    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}.get(sampler)
    sched = (cls.from_config(pipe.scheduler_config) if cls else DPMSolverMultistepScheduler.from_config(
        pipe.scheduler_config, algorithm_type="dpmsolver++", solver_order=2))
    sched.set_timesteps(steps)
    gen = torch.Generator("cpu").manual_seed(seed)
    x = torch.randn(pipe.latent_shape, generator=gen)[None] * sched.init_noise_sigma
    ctx = pipe.encode_context(torch.tensor([pipe.user_encoder.null_index, user]))
    with torch.no_grad():
        for t in sched.timesteps:
            out = pipe.denoiser(sched.scale_model_input(torch.cat([x, x]), t), t,
                                encoder_hidden_states=ctx).sample
            u, c = out.chunk(2)
            x = sched.step(u + guidance * (c - u), t, x, generator=[gen]).prev_sample
    return x[0]


def decoded(pipe, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ae.decode_latents(pipe.vae, z[None])[0]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sampler", CONTINUOUS_SAMPLERS)
def test_each_sampler_matches_diffusers_alone(pipe, sampler, prediction_type):
    p = with_config(pipe, prediction_type=prediction_type, clip_sample=sampler == "ddim")
    for steps in (1, 6, 16):  # 16: DPM-Solver++ keeps second order up to the (first-order) final step
        row = start_row(p, 1, 42, steps, 2.5, sampler)
        while not row.done:
            step_rows(p, [row])
        ref = diffusers_reference(p, sampler, steps, 2.5, 1, 42)
        assert (row.x - ref).abs().max() <= TOL, (sampler, steps)
        assert (decoded(p, row.x) - decoded(p, ref)).abs().max() <= TOL


def test_rows_with_different_samplers_steps_guidance_and_start_times_share_steps(pipe):
    """Each row, stepped in batches with whatever else is running, ends where its own diffusers loop ends."""
    specs = [("dpmsolver++", 5, 2.0, 0, 1, 0), ("ddim", 7, 1.0, 1, 2, 0), ("ddpm", 6, 3.0, 2, 3, 2),
             # sampler, steps, guidance, user, seed, joins at
             ("dpmsolver++", 16, 1.5, 0, 4, 3), ("ddpm", 3, 2.0, 1, 5, 4)]
    live, finished, tick = [], {}, 0
    while len(finished) < len(specs):
        for k, (sampler, steps, g, user, seed, at) in enumerate(specs):
            if at == tick:
                live.append((k, start_row(pipe, user, seed, steps, g, sampler)))
        step_rows(pipe, [r for _, r in live])
        finished.update({k: r for k, r in live if r.done})
        live = [(k, r) for k, r in live if not r.done]
        tick += 1
    for k, (sampler, steps, g, user, seed, _) in enumerate(specs):
        ref = diffusers_reference(pipe, sampler, steps, g, user, seed)
        assert (finished[k].x - ref).abs().max() <= TOL, specs[k]


def test_a_failed_step_leaves_rows_untouched(pipe):
    rows = [start_row(pipe, 0, 1, 4, 2.0, "dpmsolver++")]
    before = rows[0].x.clone()

    def broken(*a, **k):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        step_rows(pipe, rows, denoiser=broken)
    assert rows[0].i == 0 and torch.equal(rows[0].x, before)


def test_pure_updates_known_answers():
    x, x0, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    one, zero = torch.ones(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)
    assert torch.equal(S.ddim_step(x0, eps, one, zero), x0)  # landing on alpha 1, sigma 0 returns x0
    assert torch.equal(S.dpmsolver_2m_step(x, x0, x0 + 5, zero, -one, zero), x0)  # final step: k 0, ratio 0
    a, s = torch.full((2, 1, 1, 1), 0.6), torch.full((2, 1, 1, 1), 0.8)
    for pred, out in (("epsilon", eps), ("v_prediction", a * eps - s * x0), ("sample", x0)):
        got_x0, got_eps = S.split_prediction(a * x0 + s * eps, out, a, s, pred)
        assert torch.allclose(got_x0, x0, atol=1e-5) and torch.allclose(got_eps, eps, atol=1e-5)


def test_schedules_follow_the_config_and_refuse_what_they_do_not_implement(pipe):
    sch = S.make_schedule("dpmsolver++", pipe.scheduler_config, 10)
    assert sch.steps == 10 and sch.sigma_next[-1] == 0 and sch.coef["k"][0] == 0 and sch.coef["k"][-1] == 0
    assert S.make_schedule("dpmsolver++", pipe.scheduler_config, 10) is sch  # cached
    with pytest.raises(ValueError, match="unknown sampler"):
        S.make_schedule("euler", pipe.scheduler_config, 10)
    with pytest.raises(ValueError, match="thresholding"):
        S.make_schedule("ddim", {**pipe.scheduler_config, "thresholding": True}, 10)
