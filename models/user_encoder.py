"""User-ID encoder: user index -> cross-attention tokens, with a reserved null user for classifier-free guidance."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class UserEncoder(ModelMixin, ConfigMixin):
    """Takes the place of Stable Diffusion's CLIP text encoder: one learned token sequence per user.

    Index len(users) is the null user (DiT-style `nn.Embedding(num_classes + 1, ...)`), used for the
    unconditional branch of classifier-free guidance (Ho & Salimans, 2022).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, users: list[str], cross_attention_dim: int = 768, num_tokens: int = 4):
        super().__init__()
        if len(set(users)) != len(users) or not users:
            raise ValueError("users must be a non-empty list of unique IDs")
        self.embedding = nn.Embedding(len(users) + 1, num_tokens * cross_attention_dim)
        self.position = nn.Parameter(torch.zeros(num_tokens, cross_attention_dim))
        self.norm = nn.LayerNorm(cross_attention_dim)
        nn.init.normal_(self.embedding.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)

    @property
    def users(self) -> list[str]:
        return list(self.config.users)

    @property
    def null_index(self) -> int:
        return len(self.config.users)

    def index_of(self, user_id: str) -> int:
        try:
            return self.config.users.index(user_id)
        except ValueError:
            raise KeyError(user_id) from None

    def forward(self, idx: torch.LongTensor) -> torch.Tensor:
        n = idx.shape[0]
        tokens = self.embedding(idx).view(n, self.config.num_tokens, self.config.cross_attention_dim)  # (N, T, D)
        return self.norm(tokens + self.position)
