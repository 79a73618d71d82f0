"""Stage-1 texture lever: a PatchGAN discriminator with hinge loss, LDM's adaptive weight and a delayed start.

As latent diffusion's LPIPSWithDiscriminator (Rombach et al. 2022; discriminator of pix2pix, Isola et al. 2017):
the decoder's adversarial term -mean(D(rec)) is weighted by ||grad L_rec|| / (||grad L_gan|| + 1e-4) at the
decoder's last layer, clamped to [0, 1e4], times disc_weight, so it pulls as hard as the reconstruction loss.
Unlike LDM the discriminator itself trains from step 0; only the decoder's adversarial term waits for disc_start,
so the decoder meets an already useful discriminator.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class NLayerDiscriminator(nn.Module):
    """pix2pix PatchGAN: n_layers stride-2 4x4 convs (BatchNorm after the first), one stride-1, one 1-channel
    conv. n_layers=3, width 32: ~0.7 M parameters, a 6x6 logit map over a 64x64 spectrogram (70 px fields)."""

    def __init__(self, in_channels: int = 1, width: int = 32, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(width * prev, width * mult, 4, stride, 1, bias=False), nn.BatchNorm2d(width * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(width * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # pix2pix / LDM init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)  # (N, 1, h, w) patch logits


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 (mean relu(1 - D(real)) + mean relu(1 + D(fake))): 1.0 at chance (all logits 0), 0 when separated."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float) -> torch.Tensor:
    """LDM's calculate_adaptive_weight: ||d rec/d W|| / (||d g/d W|| + 1e-4), clamped to [0, 1e4], x disc_weight,
    with W the decoder's last layer; detached (a weight, not a loss)."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach() * disc_weight


def decoder_last_layer(vae: nn.Module) -> torch.Tensor:
    """The weight the adaptive weight is measured at: the decoder's output conv (both diffusers autoencoders)."""
    return vae.decoder.conv_out.weight


def frozen_forward(disc: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """D(x) with gradients to x only (the decoder's adversarial term must not touch the discriminator)."""
    disc.requires_grad_(False)
    try:
        return disc(x)
    finally:
        disc.requires_grad_(True)
