"""User-ID encoder: user index -> cross-attention tokens, with a reserved null user for classifier-free
guidance."""

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
        return self.tokens(self.embedding(idx))

    def tokens(self, rows: torch.Tensor) -> torch.Tensor:
        """Embedding rows (N, T*D) -> cross-attention tokens (N, T, D); enrolment trains new rows through
        this."""
        n = rows.shape[0]
        tokens = rows.view(n, self.config.num_tokens, self.config.cross_attention_dim)  # (N, T, D)
        return self.norm(tokens + self.position)

    # ---- enrolment: users appended or removed; every other row (the null row included) is copied bit for bit
    def with_users(self, users: list[str], rows: torch.Tensor) -> UserEncoder:
        """A copy with `users` (rows (U, T*D)) appended after the existing users; the null row stays last."""
        w = self.embedding.weight.detach()
        if rows.shape != (len(users), w.shape[1]):
            raise ValueError(f"rows must have shape ({len(users)}, {w.shape[1]}), got {tuple(rows.shape)}")
        return self.with_rows(self.users + list(users), torch.cat([w[: self.null_index], rows.to(w)]))

    def without_users(self, users: list[str]) -> UserEncoder:
        """A copy without `users` (KeyError for an unknown one); the others keep their rows, in order."""
        drop = {self.index_of(u) for u in users}
        keep = [i for i in range(self.null_index) if i not in drop]
        return self.with_rows([self.users[i] for i in keep], self.embedding.weight.detach()[keep])

    def with_rows(self, users: list[str], rows: torch.Tensor) -> UserEncoder:
        """A copy for exactly `users` with `rows` (U, T*D); null row, positions and norm are this
        encoder's."""
        w = self.embedding.weight.detach()
        if rows.shape != (len(users), w.shape[1]):
            raise ValueError(f"rows must have shape ({len(users)}, {w.shape[1]}), got {tuple(rows.shape)}")
        config = {k: v for k, v in self.config.items() if not k.startswith("_")}
        with torch.random.fork_rng(devices=[]):  # the throwaway random init must not move the global RNG
            enc = type(self)(**{**config, "users": list(users)})
        state = {**self.state_dict(), "embedding.weight": torch.cat([rows.to(w), w[self.null_index:]])}
        # (diffusers' .to() warns on dtype)
        nn.Module.to(enc, device=w.device, dtype=w.dtype).load_state_dict(state)
        return enc.eval().requires_grad_(False)
