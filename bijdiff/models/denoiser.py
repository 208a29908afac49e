"""The score network: token embedding, time conditioning, trunk, head, graph parameterisation."""
from __future__ import annotations

import torch
from torch import nn

from ..diffusion.graph import Absorbing
from ..nn.layers import OutputHead, TimestepEmbedding


class Denoiser(nn.Module):
    """``model(x_t: Long[B, L], sigma: Float[B]) -> Float[B, L, graph.dim]`` log-scores.

    The trunk maps embeddings ``[B, L, d_model]`` to features of the same shape under the time
    conditioning ``cond = embed(σ̄)``; the graph turns the head's logits into log-scores.
    """

    def __init__(self, graph: Absorbing, backbone: nn.Module, d_model: int, cond_dim: int) -> None:
        super().__init__()
        self.graph = graph
        self.embed = nn.Embedding(graph.dim, d_model)
        self.sigma_embed = TimestepEmbedding(cond_dim)
        self.backbone = backbone
        self.head = OutputHead(d_model, cond_dim, graph.num_tokens)

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond = self.sigma_embed(sigma)
        h = self.backbone(self.embed(x_t), cond)
        return self.graph.log_score_from_logits(self.head(h, cond), x_t, sigma[:, None])

    def logits_at(self, x_t: torch.Tensor, sigma: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """Head logits ``[M, num_tokens]`` at the ``M`` positions where ``where`` is True.

        The trunk sees the whole sequence; only the head, the largest layer at big vocabularies,
        is restricted to the positions the loss scores.
        """
        cond = self.sigma_embed(sigma)
        h = self.backbone(self.embed(x_t), cond)
        rows_cond = cond[:, None, :].expand(-1, x_t.shape[1], -1)[where]
        return self.head(h[where][:, None, :], rows_cond).squeeze(1)
