"""Stage-1 autoencoders behind one interface: the main route's AutoencoderKL and the experimental VQModel.

Every caller (training, sampling, evaluation) encodes and decodes through these functions, so the three
pipeline routes differ only here and in the stage-2 network:

- ``kl``: AutoencoderKL; stage 2 is a UNet on scaled posterior samples (Stable Diffusion).
- ``vq-latent``: VQModel; stage 2 is the same UNet on the scaled *pre-quantisation* latents, and the decoder
  quantises what the UNet produced (LDM's "VQ-reg" variant, Rombach et al. 2022, Sec. 4).
- ``vq-diffusion``: VQModel; stage 2 is a discrete diffusion Transformer over code indices (Gu et al. 2022).
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKL, VQModel

Autoencoder = AutoencoderKL | VQModel


def is_vq(vae: Autoencoder) -> bool:
    return isinstance(vae, VQModel)


def load_autoencoder(path: str, subfolder: str | None = None) -> Autoencoder:
    """Load vae/ as whichever class its config names (stock diffusers, safetensors only)."""
    import json
    from pathlib import Path

    cfg_file = Path(path) / (subfolder or "") / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file.parent} has no config.json: not a saved autoencoder")
    name = json.loads(cfg_file.read_text()).get("_class_name", "AutoencoderKL")
    classes = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}
    if name not in classes:
        raise ValueError(
            f"{cfg_file}: unsupported autoencoder class {name!r}; expected one of {sorted(classes)}"
        )
    return classes[name].from_pretrained(
        path, subfolder=subfolder, use_safetensors=True, low_cpu_mem_usage=False
    )


def latent_channels(vae: Autoencoder) -> int:
    """Channels of the latent stage 2 sees: latent_channels (KL) or the code width vq_embed_dim (VQ)."""
    if is_vq(vae):
        return int(vae.config.vq_embed_dim or vae.config.latent_channels)
    return int(vae.config.latent_channels)


def downsample(vae: Autoencoder) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def posterior(vae: Autoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled latent mean and std of x (N, C, H, W); a VQ encoder is deterministic, so its std is zero."""
    x = x.to(device=vae.device, dtype=vae.dtype)
    if is_vq(vae):
        h = vae.encode(x).latents
        return h, torch.zeros_like(h)
    post = vae.encode(x).latent_dist
    return post.mean, post.std


def scale(vae: Autoencoder, z: torch.Tensor) -> torch.Tensor:
    """Raw latent -> the unit-variance space stage 2 works in (the measured scaling factor, never
    hard-coded)."""
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    return (z - shift) * float(vae.config.scaling_factor)


@torch.no_grad()
def decode_latents(vae: Autoencoder, z_scaled: torch.Tensor) -> torch.Tensor:
    """Scaled latents from stage 2 -> images in model space; the VQ decoder snaps them to the codebook
    first."""
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    z = z_scaled.to(device=vae.device, dtype=vae.dtype) / float(vae.config.scaling_factor) + shift
    return vae.decode(z).sample


@torch.no_grad()
def encode_codes(vq: VQModel, x: torch.Tensor) -> torch.Tensor:
    """Code indices of x: (N, h*w) long, row-major over the latent grid (what VQ-Diffusion's Transformer
    reads)."""
    h = vq.encode(x.to(device=vq.device, dtype=vq.dtype)).latents  # (N, D, h, w)
    _, _, (_, _, idx) = vq.quantize(h)
    return idx.reshape(len(h), -1)


@torch.no_grad()
def decode_codes(vq: VQModel, codes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Code indices (N, h*w) -> images in model space, through the codebook and the decoder."""
    n, (h, w) = len(codes), grid
    emb = vq.quantize.get_codebook_entry(codes.to(vq.device).reshape(-1), (n, h, w, latent_channels(vq)))
    return vq.decode(emb, force_not_quantize=True).sample


@torch.no_grad()
def reconstruct(vae: Autoencoder, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Encode (posterior mode, or nearest codes) and decode: (N, C, H, W) in model space, clamped, on the
    CPU."""
    outs = []
    for i in range(0, len(x), batch_size):
        mean, _ = posterior(vae, x[i:i + batch_size])
        outs.append(vae.decode(mean).sample.float().clamp(-1, 1).cpu())  # VQ: decode() quantises
    return torch.cat(outs)


def codebook_usage(codes: torch.Tensor, num_codes: int) -> dict[str, float]:
    """Perplexity of the code histogram (exp of its entropy; = num_codes when all are used evenly) and dead
    share.

    Codebook collapse, where most codes are never chosen, is the classic VQ-VAE failure (van den Oord 2017;
    Dhariwal et al. 2020 "Jukebox"), so training and evaluation both report it.
    """
    counts = torch.bincount(codes.reshape(-1).cpu(), minlength=num_codes).double()
    p = counts / counts.sum().clamp(min=1)
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    used = int((counts > 0).sum())
    return dict(perplexity=math.exp(entropy), used_codes=used, num_codes=num_codes,
                dead_fraction=1.0 - used / num_codes)
