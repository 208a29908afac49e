"""Trunks: the stack of blocks between embedding and head, called ``trunk(h, cond)``."""
from __future__ import annotations

import torch
from torch import nn

from ..nn.layers import attention_branch, mlp_branch
from ..errors import ConfigError


class TransformerBlock(nn.Module):
    """A standard pre-LN transformer block with adaLN time conditioning."""

    def __init__(self, dim: int, cond_dim: int, n_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.attn = attention_branch(dim, cond_dim, n_heads, dropout)
        self.mlp = mlp_branch(dim, cond_dim, mlp_ratio, dropout)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(h, cond)
        return h + self.mlp(h, cond)


class StandardTrunk(nn.Module):
    """``n_layers`` standard transformer blocks (not invertible)."""

    def __init__(self, dim: int, cond_dim: int, n_layers: int, n_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"model.n_layers must be ≥ 1, got {n_layers}")
        self.dim = dim
        self.cond_dim = cond_dim
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, cond_dim, n_heads, mlp_ratio, dropout) for _ in range(n_layers)
        )

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, cond)
        return h
