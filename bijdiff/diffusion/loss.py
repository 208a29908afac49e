"""The DWDSE objective: time-weighted score entropy, the SEDD training loss and ELBO integrand."""
from __future__ import annotations

import torch

from .contract import LogitScoreModel, ScoreModel
from .graph import Graph
from .noise import Noise


def stratified_times(
    n: int,
    device: torch.device | str,
    t_min: float = 0.0,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Stratified draws in ``(t_min, 1]``: one uniform sample per stratum of the global batch.

    Rank ``r`` of ``world_size`` takes strata ``r·n .. r·n + n − 1`` of ``n · world_size``, so the
    global batch covers [t_min, 1] evenly (much lower variance than i.i.d. t) yet stays unbiased.
    """
    strata = torch.arange(rank * n, rank * n + n, device=device, dtype=torch.float32)
    u = torch.rand(n, device=device, generator=generator)
    frac = 1.0 - (strata + u) / (n * world_size)  # in (0, 1]
    return t_min + (1.0 - t_min) * frac


def dwdse(
    model: ScoreModel,
    graph: Graph,
    noise: Noise,
    x0: torch.Tensor,
    t: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    gather_scored: bool | None = None,
) -> torch.Tensor:
    """Diffusion-weighted denoising score entropy per sequence ``[B]`` at times ``t`` (nats).

    ``σ̄'(t) · Σ_i score_entropy_i``, an unbiased single-sample estimate of the ELBO integrand;
    its mean over t ~ U[0, 1] plus the prior KL bounds ``−log p(x0)``. Computed in fp32.

    A ``LogitScoreModel`` (the built-in denoisers) is scored through the graph's closed form at
    the positions that can contribute. With ``gather_scored`` (the default on the CPU) the head runs
    on those positions only: a boolean gather, whose size the host must read. Without it (the
    default on CUDA and MPS) the head runs on every position and the others are weighted out: the
    same number from fixed shapes, so the step never waits for the host. Any other ``ScoreModel``
    goes through the full log-scores and ``graph.score_entropy``.
    """
    sigma, sigma_rate = noise(t)
    x_t = graph.sample_transition(x0, sigma, loss_mask, generator)
    if isinstance(model, LogitScoreModel):
        where = graph.scored_positions(x_t)
        sigmas = sigma[:, None].expand_as(x_t)
        gather = x0.device.type == "cpu" if gather_scored is None else gather_scored
        if gather:
            rows = graph.score_entropy_from_logits(model.logits_at(x_t, sigma, where), sigmas[where], x_t[where], x0[where])
            batch_index = torch.arange(x0.shape[0], device=x0.device)[:, None].expand_as(x_t)[where]
            per_sequence = torch.zeros(x0.shape[0], device=x0.device).index_add_(0, batch_index, rows)
        else:
            logits = model.logits(x_t, sigma)
            rows = graph.score_entropy_from_logits(logits.flatten(0, 1), sigmas.flatten(), x_t.flatten(), x0.flatten())
            per_sequence = torch.where(where, rows.view_as(x_t), 0.0).sum(-1)
    else:
        per_sequence = graph.score_entropy(model(x_t, sigma).float(), sigma, x_t, x0).sum(-1)
    return sigma_rate * per_sequence
