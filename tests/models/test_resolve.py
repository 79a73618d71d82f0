"""models.sampling.resolve: the one place a sample's steps, guidance, condition guidance and sampler are
decided, for trained and enrolled people: explicit values, then dopplergen.json's, then the module's."""

from types import SimpleNamespace

import pytest

from models.sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS, ENROLLED_GUIDANCE, Settings, is_enrolled, resolve


def _pipe(meta=None, conditions=False, route="kl"):
    return SimpleNamespace(meta=meta or {}, route=route, condition_encoder=object() if conditions else None)


def test_module_defaults_then_the_pipelines_then_explicit_values():
    assert resolve(_pipe()) == Settings(DEFAULT_STEPS, DEFAULT_GUIDANCE, None, "dpmsolver++")
    assert resolve(_pipe(route="vq-diffusion")).sampler == "vq-diffusion"
    meta = {"num_inference_steps": 12, "guidance_scale": 3.0, "scheduler": "ddim"}
    assert resolve(_pipe(meta)) == Settings(12, 3.0, None, "ddim")
    assert resolve(_pipe(meta), steps=5, guidance=1.5, sampler="ddpm") == Settings(5, 1.5, None, "ddpm")


def test_enrolled_people_get_their_own_guidance_unless_one_is_asked():
    pipe = _pipe({"guidance_scale": 2.0, "enrolled_users": {"dave": {"k": 5}}})
    assert is_enrolled(pipe, "dave") and not is_enrolled(pipe, "alice") and not is_enrolled(pipe, None)
    assert resolve(pipe, enrolled=True).guidance == ENROLLED_GUIDANCE
    assert resolve(pipe, enrolled=True, guidance=1.0).guidance == 1.0
    assert resolve(pipe).guidance == 2.0


@pytest.mark.parametrize("named, asked_gc, want", [
    (False, None, (2.0, None)),  # all conditions drawn: plain guidance
    (True, None, (3.0, 1.0)),  # a condition named: identity and condition guidance from dopplergen.json
    (False, 0.5, (3.0, 0.5)),  # asking for a condition guidance composes too
])
def test_compositional_guidance_when_a_condition_is_named(named, asked_gc, want):
    meta = {"guidance_scale": 2.0, "identity_guidance_scale": 3.0, "condition_guidance_scale": 1.0}
    got = resolve(_pipe(meta, conditions=True), named=named, condition_guidance=asked_gc)
    assert (got.guidance, got.condition_guidance) == want
    # an enrolled person named with a condition: their guidance weighs identity, the pipeline's g_c the rest
    got = resolve(_pipe(meta, conditions=True), named=True, enrolled=True)
    assert (got.guidance, got.condition_guidance) == (ENROLLED_GUIDANCE, 1.0)


def test_a_pipeline_without_conditions_is_always_plain():
    meta = {"guidance_scale": 2.0, "identity_guidance_scale": 3.0, "condition_guidance_scale": 1.0}
    assert resolve(_pipe(meta), named=True, condition_guidance=1.0).condition_guidance is None
