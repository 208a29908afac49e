"""Likelihood bounds for discrete diffusion models."""
from __future__ import annotations

import torch

from .contract import LogitScoreModel, ScoreModel
from .graph import Graph
from .loss import dwdse, stratified_times
from .noise import Noise


@torch.no_grad()
def elbo_nats(
    model: ScoreModel,
    graph: Graph,
    noise: Noise,
    x0: torch.Tensor,
    loss_mask: torch.Tensor,
    t_samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sequence estimates ``[B, t_samples]`` of ``−log p(x0) ≤ ∫₀¹ DWDSE dt + KL + reconstruction``.

    Times are stratified over all ``B · t_samples`` draws in (0, 1]; each column is an unbiased
    estimate of the bound, so their mean estimates it and their spread gives its standard error.
    Positions where ``loss_mask`` is False are context: never corrupted and not counted. The
    prior KL closes the bound at ``σ̄(1)``, the reconstruction term at ``σ̄(0)`` (0 when it is 0).
    """
    b = x0.shape[0]
    t = stratified_times(b * t_samples, x0.device, 0.0, generator)
    t = t[torch.randperm(t.numel(), device=x0.device, generator=generator)].view(t_samples, b)
    ends = noise.total(torch.tensor([0.0, 1.0], device=x0.device))
    closing = graph.prior_kl(x0, ends[1], loss_mask) + graph.reconstruction_nats(ends[0], loss_mask)
    rows = [dwdse(model, graph, noise, x0, t[k], loss_mask, generator) + closing for k in range(t_samples)]
    return torch.stack(rows, dim=1)


def ordered_sigma(n_masked: torch.Tensor, length: int, noise: Noise) -> torch.Tensor:
    """The noise level given to the denoiser when ``n_masked`` of ``length`` positions are masked.

    The level at which that fraction is the expected masked fraction (``1 − e^{−σ̄} = m/L``),
    capped at the schedule's ``σ̄(1)``. Shared by ``exact_log_likelihood`` and the ordered
    sampler, so the sampler draws from exactly the distribution whose likelihood is computed.
    """
    frac = n_masked.float() / length
    cap = noise.total(torch.ones((), device=n_masked.device))
    return torch.minimum(-torch.log1p(-frac.clamp_max(1.0 - 1e-7)), cap)


def position_log_probs(model: ScoreModel, graph: Graph, x_t: torch.Tensor, sigma: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """``log p_θ(x_i = y | x_t)`` over real tokens ``[M, num_tokens]`` at the ``M`` positions ``where``.

    The denoiser's scores at a position, normalised over the real tokens: for a
    ``LogitScoreModel`` that is ``log_softmax`` of the head's logits (computed only at those
    positions); any other ``ScoreModel`` is normalised from its full log-scores.
    """
    if isinstance(model, LogitScoreModel):
        logits = model.logits_at(x_t, sigma, where)
    else:
        logits = model(x_t, sigma)[where][:, : graph.num_tokens]
    return torch.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def exact_log_likelihood(
    model: ScoreModel,
    graph: Graph,
    noise: Noise,
    x0: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    variants_per_call: int = 256,
) -> torch.Tensor:
    """``log p(x0)`` in nats per sequence ``[B]`` under left-to-right unmasking (absorbing graph).

    The denoiser with a fixed unmasking order is a normalised autoregressive model:
    ``log p(x) = Σ_k log p_θ(x_k | x_<k revealed, x_≥k masked)``. Positions where ``loss_mask``
    is False are context, revealed from the start and not counted. Cost: one network row per
    counted position (``L`` forward passes per sequence), batched ``variants_per_call`` masked
    variants per forward, so about ``L`` times one ELBO sample.
    """
    if not graph.absorbing:
        raise ValueError("exact likelihood by ordered unmasking needs the absorbing graph (diffusion=absorb)")
    b, length = x0.shape
    if loss_mask is None:
        loss_mask = torch.ones_like(x0, dtype=torch.bool)
    positions = torch.arange(length, device=x0.device)
    seq, pos = loss_mask.nonzero(as_tuple=True)  # one masked variant per counted position
    total = torch.zeros(b, device=x0.device)
    for start in range(0, seq.numel(), variants_per_call):
        s, p = seq[start : start + variants_per_call], pos[start : start + variants_per_call]
        hidden = loss_mask[s] & (positions[None, :] >= p[:, None])
        x_t = torch.where(hidden, torch.full_like(x0[s], graph.mask_id), x0[s])
        sigma = ordered_sigma(hidden.sum(-1), length, noise)
        target = positions[None, :] == p[:, None]
        log_probs = position_log_probs(model, graph, x_t, sigma, target)
        total.index_add_(0, s, log_probs.gather(-1, x0[s, p][:, None]).squeeze(-1))
    return total
