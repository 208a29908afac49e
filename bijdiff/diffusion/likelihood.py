"""Likelihood bounds for discrete diffusion models."""
from __future__ import annotations

import torch

from .graph import Absorbing
from .loss import Denoiser, dwdse, stratified_times
from .noise import Noise


@torch.no_grad()
def elbo_nats(
    model: Denoiser,
    graph: Absorbing,
    noise: Noise,
    x0: torch.Tensor,
    loss_mask: torch.Tensor,
    t_samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sequence estimates ``[B, t_samples]`` of the bound ``−log p(x0) ≤ ∫₀¹ DWDSE dt + KL``.

    Times are stratified over all ``B · t_samples`` draws in (0, 1]; each column is an unbiased
    estimate of the bound, so their mean estimates it and their spread gives its standard error.
    Positions where ``loss_mask`` is False are context: never corrupted and not counted.
    """
    b = x0.shape[0]
    t = stratified_times(b * t_samples, x0.device, 0.0, generator)
    t = t[torch.randperm(t.numel(), device=x0.device, generator=generator)].view(t_samples, b)
    prior = graph.prior_kl(x0, noise.total(torch.ones(b, device=x0.device)), loss_mask)
    rows = [dwdse(model, graph, noise, x0, t[k], loss_mask, generator) + prior for k in range(t_samples)]
    return torch.stack(rows, dim=1)
