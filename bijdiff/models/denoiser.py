"""The score network: token embedding, time conditioning, trunk, head, graph parameterisation."""
from __future__ import annotations

import torch
from torch import nn

from ..diffusion.contract import LogitScoreModel
from ..diffusion.graph import Graph
from ..nn import Bijection
from ..nn.layers import OutputHead, TimestepEmbedding
from .trunks import merge_streams, split_streams


class Denoiser(nn.Module, LogitScoreModel):
    """``model(x_t: Long[B, L], sigma: Float[B]) -> Float[B, L, graph.dim]`` log-scores, made from head logits.

    The trunk (``backbone``) maps embeddings to features under the time conditioning
    ``cond = embed(σ̄)``; the graph turns the head's logits into log-scores. A bijective backbone
    works on the two-stream state: the embedding is duplicated into both streams and the
    streams are merged for the head (``model.merge``). With ``time_conditioning=False`` the
    conditioning is ``embed(0)`` for every σ̄: the head's logits then depend on ``x_t`` alone
    (the graph still applies σ̄ in turning them into scores), as in MDLM.
    """

    def __init__(
        self, graph: Graph, backbone: nn.Module, d_model: int, cond_dim: int, merge: str = "residual",
        time_conditioning: bool = True,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.merge = merge
        self.time_conditioning = time_conditioning
        self.embed = nn.Embedding(graph.dim, d_model)
        self.sigma_embed = TimestepEmbedding(cond_dim)
        self.backbone = backbone
        self.head = OutputHead(d_model, cond_dim, graph.num_tokens)

    @property
    def bijective(self) -> bool:
        """Whether the trunk is a ``Bijection`` (exact inverse and log-det)."""
        return isinstance(self.backbone, Bijection)

    def condition(self, sigma: torch.Tensor) -> torch.Tensor:
        """The adaLN conditioning ``[B, cond_dim]``: ``embed(σ̄)``, or ``embed(0)`` without time conditioning."""
        return self.sigma_embed(sigma if self.time_conditioning else torch.zeros_like(sigma))

    def features(self, x_t: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk features ``[B, L, d_model]`` for the head, and the conditioning vector."""
        cond = self.condition(sigma)
        h = self.embed(x_t)
        if self.bijective:
            h = merge_streams(self.backbone(split_streams(h), cond)[0], h, self.merge)
        else:
            h = self.backbone(h, cond)
        return h, cond

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.graph.log_score_from_logits(self.logits(x_t, sigma), x_t, sigma[:, None])

    def logits(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Head logits ``[B, L, num_tokens]``, before the graph turns them into log-scores."""
        h, cond = self.features(x_t, sigma)
        return self.head(h, cond)

    def logits_at(self, x_t: torch.Tensor, sigma: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """Head logits ``[M, num_tokens]`` at the ``M`` positions where ``where`` is True.

        The trunk sees the whole sequence; only the head, the largest layer at big vocabularies,
        is restricted to the positions the loss scores.
        """
        h, cond = self.features(x_t, sigma)
        rows_cond = cond[:, None, :].expand(-1, x_t.shape[1], -1)[where]
        return self.head(h[where][:, None, :], rows_cond).squeeze(1)

    # -- the latent round trip (bijective trunks only) ---------------------------------------
    def require_bijective(self) -> None:
        """Raise ``NotInvertibleError`` naming the trunk's standard layers unless the trunk is a bijection."""
        if not self.bijective:
            self.backbone.inverse(None)  # non-invertible trunks raise NotInvertibleError naming their layers

    def encode(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trunk's output ``[B, L, 2·d_model]`` for tokens ``x``, and its log-det ``[B]``."""
        self.require_bijective()
        return self.backbone(split_streams(self.embed(x)), self.condition(sigma))

    def decode_latent(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Invert the trunk exactly and map each position to its nearest embedding row."""
        self.require_bijective()
        state, _ = self.backbone.inverse(y, self.condition(sigma))
        return self.nearest_tokens(state.chunk(2, dim=-1)[0])

    def nearest_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """The token whose embedding row is nearest (Euclidean) to each position of ``h``."""
        table = self.embed.weight.to(h.dtype)
        distances = (h * h).sum(-1, keepdim=True) - 2 * h @ table.T + (table * table).sum(-1)
        return distances.argmin(-1)
