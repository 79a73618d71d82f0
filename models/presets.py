"""Architecture presets: a registry of named configs (tiny for tests, demo for the CPU, base for the GPU)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Preset:
    """Everything that fixes the shape of a pipeline; training hyper-parameters live in training/config.py."""

    name: str
    image_size: int  # spectrograms are resized to image_size x image_size (doppler x time)
    channels: int = 1  # 1 = dB magnitude; 3 = colour-mapped RGB datasets
    # --- stage 1: AutoencoderKL ---
    vae_block_out_channels: tuple[int, ...] = (32, 64)  # one entry per resolution; len-1 downsamplings
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 8
    latent_channels: int = 4  # as in Stable Diffusion
    # --- stage 2: UNet2DConditionModel ---
    unet_block_out_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    unet_down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "DownBlock2D")
    unet_up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D")
    # Passed to diffusers as `attention_head_dim`, which UNet2DConditionModel uses as the NUMBER of heads
    # (a historical naming issue, diffusers#2011); Stable Diffusion 1.x uses 8.
    unet_attention_head_dim: int = 8
    unet_norm_num_groups: int = 8
    # width of the user tokens; 768 in the base preset (Stable Diffusion's text width)
    cross_attention_dim: int = 32
    user_tokens: int = 4  # cross-attention tokens per user
    # --- experimental VQ route (docs/compare.md): VQModel + discrete diffusion or latent diffusion ---
    vq_num_embeddings: int = 128  # codebook size; the base preset uses 8192
    vq_embed_dim: int = 4  # code width = channels of the pre-quantisation latent the VQ-latent route diffuses
    transformer_layers: int = 2  # Transformer2DModel depth of the discrete (VQ-Diffusion) route
    transformer_heads: int = 2
    transformer_head_dim: int = 16  # width = heads x head_dim
    vq_diffusion_timesteps: int = 20  # VQDiffusionScheduler num_train_timesteps (the paper uses 100)
    # --- noise schedule (DDPMScheduler config) ---
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # cosine schedule: better than linear at small resolutions
    prediction_type: str = "v_prediction"  # "epsilon" or "v_prediction"

    @property
    def vae_downsample(self) -> int:
        return 2 ** (len(self.vae_block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_downsample

    def vae_config(self) -> dict[str, Any]:
        n = len(self.vae_block_out_channels)
        return dict(
            in_channels=self.channels,
            out_channels=self.channels,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=self.vae_block_out_channels,
            layers_per_block=self.vae_layers_per_block,
            latent_channels=self.latent_channels,
            norm_num_groups=self.vae_norm_num_groups,
            sample_size=self.image_size,
            scaling_factor=1.0,  # replaced by the value measured on the data after stage 1
        )

    def vq_config(self) -> dict[str, Any]:
        """diffusers VQModel with the same encoder/decoder as the KL VAE, so the two latent spaces compare
        fairly."""
        return dict(self.vae_config(), num_vq_embeddings=self.vq_num_embeddings,
                    vq_embed_dim=self.vq_embed_dim)

    def transformer_config(self) -> dict[str, Any]:
        """diffusers Transformer2DModel over code indices (VQ-Diffusion, Gu et al. 2022): +1 class for
        [MASK]."""
        return dict(
            num_attention_heads=self.transformer_heads,
            attention_head_dim=self.transformer_head_dim,
            num_layers=self.transformer_layers,
            num_vector_embeds=self.vq_num_embeddings + 1,
            sample_size=self.latent_size,
            num_embeds_ada_norm=self.vq_diffusion_timesteps,
            cross_attention_dim=self.cross_attention_dim,
            norm_num_groups=self.unet_norm_num_groups,
            activation_fn="geglu-approximate",
            norm_type="ada_norm",  # timestep-conditioned LayerNorm, as in VQ-Diffusion
        )

    def vq_scheduler_config(self) -> dict[str, Any]:
        return dict(num_vec_classes=self.vq_num_embeddings + 1,
                    num_train_timesteps=self.vq_diffusion_timesteps)

    def unet_config(self) -> dict[str, Any]:
        return dict(
            sample_size=self.latent_size,
            in_channels=self.latent_channels,
            out_channels=self.latent_channels,
            down_block_types=self.unet_down_block_types,
            up_block_types=self.unet_up_block_types,
            block_out_channels=self.unet_block_out_channels,
            layers_per_block=self.unet_layers_per_block,
            attention_head_dim=self.unet_attention_head_dim,
            norm_num_groups=self.unet_norm_num_groups,
            cross_attention_dim=self.cross_attention_dim,
        )

    def scheduler_config(self) -> dict[str, Any]:
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            beta_schedule=self.beta_schedule,
            prediction_type=self.prediction_type,
            clip_sample=False,  # we clamp in image space after decoding, not latents
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **kw: Any) -> Preset:
        unknown = set(kw) - set(self.to_dict())
        if unknown:
            raise ValueError(f"unknown preset fields: {sorted(unknown)}")
        return replace(self, **{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})


PRESETS: dict[str, Preset] = {
    # ~32 px, a few hundred k parameters: unit tests in seconds.
    "tiny": Preset(name="tiny", image_size=32),
    # 64x64 -> latent 4x16x16; trains on 2 CPU cores in well under an hour. The shipped checkpoint.
    "demo": Preset(
        name="demo",
        image_size=64,
        vae_block_out_channels=(32, 64, 64),
        vae_layers_per_block=1,
        unet_block_out_channels=(64, 128, 128),
        unet_layers_per_block=1,
        unet_down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        unet_up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        # 32 heads: what the shipped checkpoint was trained with (narrow, but it works)
        unet_attention_head_dim=32,
        unet_norm_num_groups=32,
        cross_attention_dim=128,
        user_tokens=4,
        # 512 codes of width 4: the same 4x16x16 latent grid as the KL route, so the VQ-latent route runs the
        # identical UNet and only the latent space differs (LDM's VQ-reg vs KL-reg comparison).
        vq_num_embeddings=512,
        vq_embed_dim=4,
        # 6 x 64 wide: a train step of 64 costs about what the demo UNet's does on the CPU (~1.8 s under
        # load), so both stage-2 networks get the same steps x batch and about the same wall time. 4 x 96 was
        # 2x slower.
        transformer_layers=6,
        transformer_heads=2,
        transformer_head_dim=32,
        vq_diffusion_timesteps=100,
    ),
    # The user's target: 256x256 -> latent 4x32x32, cross_attention_dim=768 (Stable Diffusion layout,
    # slimmer).
    "base": Preset(
        name="base",
        image_size=256,
        vae_block_out_channels=(64, 128, 256, 256),
        vae_layers_per_block=2,
        vae_norm_num_groups=32,
        unet_block_out_channels=(192, 384, 768, 768),
        unet_layers_per_block=2,
        unet_down_block_types=(
            "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"
        ),
        unet_up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        # 8 heads (head width 24/48/96), as in SD 1.x; 64 "heads" ran out of memory
        unet_attention_head_dim=8,
        unet_norm_num_groups=32,
        cross_attention_dim=768,
        user_tokens=8,
        # as asked for the VQ route: 8192 x 256 (LDM's VQ-reg models use 3-4 wide codes instead)
        vq_num_embeddings=8192,
        vq_embed_dim=256,
        transformer_layers=24,
        transformer_heads=16,
        transformer_head_dim=64,
        vq_diffusion_timesteps=100,
    ),
}


def get_preset(name: str, channels: int | None = None) -> Preset:
    """Look up a preset by name; raise a clear error listing the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    if channels is not None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        preset = replace(preset, channels=channels)
    return preset
