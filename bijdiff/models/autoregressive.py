"""The autoregressive baseline: the standard trunk with a causal mask and next-token loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import sampling
from ..errors import ConfigError
from ..nn.layers import OutputHead
from .trunks import StandardTrunk


class AutoregressiveLM(nn.Module):
    """``p(x) = Π_i p(x_i | x_<i)``: exact likelihoods, the reference for diffusion bounds and the sample judge.

    The input is shifted right behind a ``BOS`` row of the embedding (id ``num_tokens``), so every
    token of a sequence, the first included, is predicted once. The trunk's adaLN conditioning,
    which diffusion models drive with the noise level, here reads one learned vector.
    """

    #: no invertible trunk (``Denoiser.bijective`` is the same question asked of a denoiser)
    bijective: bool = False

    def __init__(
        self, num_tokens: int, d_model: int, cond_dim: int, n_layers: int, n_heads: int, mlp_ratio: float, dropout: float,
        mlp: str = "gelu",
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.bos_id = num_tokens
        self.embed = nn.Embedding(num_tokens + 1, d_model)
        self.cond = nn.Parameter(torch.randn(cond_dim))
        self.backbone = StandardTrunk(d_model, cond_dim, n_layers, n_heads, mlp_ratio, dropout, causal=True, mlp=mlp)
        self.head = OutputHead(d_model, cond_dim, num_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``[B, L, num_tokens]``: row ``i`` predicts ``x_i`` from ``x_<i``."""
        inputs = torch.cat([torch.full_like(x[:, :1], self.bos_id), x[:, :-1]], dim=1)
        cond = self.cond.expand(x.shape[0], -1)
        return self.head(self.backbone(self.embed(inputs), cond), cond)

    def nll(self, x: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Exact ``−log p`` in nats per sequence ``[B]``, summed over positions where ``loss_mask`` holds."""
        logits = self(x)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        per_token = F.cross_entropy(logits.transpose(1, 2), x, reduction="none")
        if loss_mask is not None:
            per_token = per_token * loss_mask
        return per_token.sum(-1)

    @torch.no_grad()
    def generate(
        self, shape: tuple[int, int], generator: torch.Generator | None = None, device: torch.device | str = "cpu",
        kv_cache: bool = True, temperature: float = 1.0, prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Ancestral sampling ``Long[B, L]``: one position per network call, after ``prefix`` (``Long[B, P]``, kept as given).

        With ``kv_cache`` each call runs the new position only against cached keys and values
        (``O(L)`` work per sample instead of ``O(L²)``; the prefix goes through in the first call);
        without it, the whole prefix is rerun. Each draw is from ``softmax(logits / temperature)``
        (1: the model's own distribution).
        """
        if not temperature > 0:
            raise ConfigError(f"sample.temperature={temperature} must be > 0")
        b, length = shape
        x = torch.zeros(shape, dtype=torch.long, device=device)
        start = 0 if prefix is None else prefix.shape[1]
        if start:
            x[:, :start] = prefix.to(device)
        dtype = sampling.draw_dtype(device)
        if not kv_cache:
            for k in range(start, length):
                probs = torch.softmax(self(x[:, : k + 1])[:, k].to(dtype) / temperature, dim=-1)
                x[:, k] = sampling.sample_categorical(probs, generator)
            return x
        cond = self.cond.expand(b, -1)
        tokens = torch.cat([torch.full((b, 1), self.bos_id, dtype=torch.long, device=device), x[:, :start]], dim=1)
        with self.backbone.kv_cache():
            for k in range(start, length):
                logits = self.head(self.backbone(self.embed(tokens), cond), cond)[:, -1]
                x[:, k] = sampling.sample_categorical(torch.softmax(logits.to(dtype) / temperature, dim=-1), generator)
                tokens = x[:, k : k + 1]
        return x
