"""Builders for the two diffusers models and the user encoder, from a preset (never from a hub)."""

from __future__ import annotations

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from models.presets import Preset
from models.user_encoder import UserEncoder


def build_vae(preset: Preset) -> AutoencoderKL:
    return AutoencoderKL(**preset.vae_config())


def build_unet(preset: Preset) -> UNet2DConditionModel:
    return UNet2DConditionModel(**preset.unet_config())


def build_user_encoder(preset: Preset, users: list[str]) -> UserEncoder:
    return UserEncoder(users=list(users), cross_attention_dim=preset.cross_attention_dim, num_tokens=preset.user_tokens)


def build_noise_scheduler(preset: Preset) -> DDPMScheduler:
    return DDPMScheduler(**preset.scheduler_config())
