"""Builders for the diffusers models and the user encoder, from a preset (never from a hub)."""

from __future__ import annotations

from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    Transformer2DModel,
    UNet2DConditionModel,
    VQDiffusionScheduler,
    VQModel,
)

from models.conditions import ConditionEncoder
from models.presets import Preset
from models.user_encoder import UserEncoder


def build_vae(preset: Preset) -> AutoencoderKL:
    return AutoencoderKL(**preset.vae_config())


def build_vq(preset: Preset) -> VQModel:
    return VQModel(**preset.vq_config())


def build_autoencoder(preset: Preset, kind: str = "kl") -> AutoencoderKL | VQModel:
    """Stage 1 of either route: "kl" (AutoencoderKL, the main line) or "vq" (VQModel, the comparison)."""
    if kind not in ("kl", "vq"):
        raise ValueError(f"unknown autoencoder {kind!r}; choose 'kl' or 'vq'")
    return build_vae(preset) if kind == "kl" else build_vq(preset)


def build_unet(preset: Preset, in_channels: int | None = None,
               pooled_context: bool = False) -> UNet2DConditionModel:
    """`in_channels` other than the preset's latent_channels: a VQ model whose code width differs.

    `pooled_context`: the stock UNet's `addition_embed_type="text"` (DeepFloyd IF's TextTimeEmbedding): the
    cross-attention context (user + condition tokens) is attention-pooled into one vector and added to the
    timestep embedding, so it reaches every ResNet block, also the full-resolution ones that have no
    cross-attention in the small presets.
    """
    cfg = preset.unet_config()
    if in_channels is not None:
        cfg.update(in_channels=in_channels, out_channels=in_channels)
    if pooled_context:
        cfg.update(addition_embed_type="text",
                   addition_embed_type_num_heads=max(1, preset.cross_attention_dim // 32))
    return UNet2DConditionModel(**cfg)


def build_transformer(preset: Preset) -> Transformer2DModel:
    return Transformer2DModel(**preset.transformer_config())


def build_user_encoder(preset: Preset, users: list[str]) -> UserEncoder:
    return UserEncoder(users=list(users), cross_attention_dim=preset.cross_attention_dim,
                       num_tokens=preset.user_tokens)


def build_condition_encoder(preset: Preset, conditions: list[dict]) -> ConditionEncoder:
    """Speed, aspect, activity, ... -> one cross-attention token each, as wide as the user's tokens."""
    return ConditionEncoder(conditions=conditions, cross_attention_dim=preset.cross_attention_dim)


def build_noise_scheduler(preset: Preset) -> DDPMScheduler:
    return DDPMScheduler(**preset.scheduler_config())


def build_vq_scheduler(preset: Preset) -> VQDiffusionScheduler:
    return VQDiffusionScheduler(**preset.vq_scheduler_config())
