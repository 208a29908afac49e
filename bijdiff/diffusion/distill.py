"""Self-distillation through time: a student's one unmasking step trained to match two of its teacher's.

Deschenaux and Gulcehre (2024) distil a masked diffusion model into one that samples in half the
steps, round after round. Under the absorbing graph a step of the analytic sampler from noise level
``σ̄_a`` to ``σ̄_c`` unmasks each masked position with a probability fixed by the schedule (two exact
steps through ``σ̄_b`` compose to one), and draws its token from the model's ``softmax(logits)``.
So all a one-step student can match is, per position, the law of the token it takes given that it
unmasks somewhere in the teacher's two steps:

    p(v) = [p₁·q_a(v) + (1 − p₁)·p₂·E q_b(v | x_b)] / P,    P = 1 − (1 − p₁)(1 − p₂),

with ``p₁``, ``p₂`` the two steps' unmasking probabilities, ``q_a`` the teacher's token law at the
start and ``q_b`` its law after its first step drew ``x_b``. ``two_step_targets`` estimates ``p``
without bias from one teacher path: a position the first step unmasked takes ``q_a``, any other
``α·q_a + β·q_b`` with ``β = p₂ / P`` and ``α = 1 − β`` (both targets are distributions, and their
mean over the path is ``p``). The loss is linear in the target, so its gradient is unbiased too.

``method="consistency"`` is a consistency-style variant: the teacher takes only the first step and
the student itself the second (``q_b`` is the student's, without gradient and without dropout), so
the student learns to agree with its own prediction one teacher step later instead of copying the
teacher's two steps. Its targets are unbiased for that mixed law in the same way. It differs from
Song et al. (2023)'s consistency distillation in two ways: the target is the online student (a
stop-gradient copy, as in Song and Dhariwal 2023's improved consistency training), not an EMA of
it, and the student is asked at ``σ̄_b``, between the points of its own grid where it trains (it
starts there as the teacher and is held there only by generalising across noise levels).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .contract import LogitScoreModel
from .graph import Graph
from .noise import Noise
from .sampling import reverse_schedule, sample_categorical, unmask_probabilities

#: who takes the two steps a student step learns, by method
DISTILLATION_METHODS = {
    "sdtt": "the teacher takes both",
    "consistency": "the teacher takes the first, the student itself the second",
}


@contextmanager
def evaluating(model: LogitScoreModel) -> Iterator[LogitScoreModel]:
    """``model`` in eval mode (no dropout) for the block, then back in the mode it was in."""
    training = isinstance(model, nn.Module) and model.training
    if training:
        model.eval()
    try:
        yield model
    finally:
        if training:
            model.train()


def student_grid(noise: Noise, steps: int, device: torch.device | str, t_end: float = 1e-5) -> torch.Tensor:
    """``[steps, 3]`` rows ``(σ̄_a, σ̄_b, σ̄_c)``: the analytic sampler's grid at twice ``steps`` (the teacher's),
    each student step ``a → c`` two of the teacher's with ``b`` between them."""
    sigmas, _ = reverse_schedule(noise, 2 * steps, "analytic", device, t_end)
    return torch.stack([sigmas[0:-1:2], sigmas[1::2], sigmas[2::2]], dim=-1)


@torch.no_grad()
def two_step_targets(
    teacher: LogitScoreModel,
    graph: Graph,
    x_a: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    second: LogitScoreModel | None = None,
) -> torch.Tensor:
    """``[M, num_tokens]`` unbiased targets for the ``M`` masked positions of ``x_a [B, L]`` (in order): the
    law of the token each takes if it unmasks in the teacher's two analytic steps ``sigmas [B, 3]`` (``σ̄_a, σ̄_b, σ̄_c``),
    the second taken by ``second`` instead when given (in eval mode, as the sampler would take it)."""
    masked = x_a == graph.mask_id
    levels = sigmas.T.double()
    p1, p2 = unmask_probabilities(levels, levels[:-1] - levels[1:], "analytic")
    both = 1.0 - (1.0 - p1) * (1.0 - p2)
    beta = (p2 / both).float()[:, None].expand_as(x_a)[masked][:, None]
    q_a = torch.softmax(teacher.logits_at(x_a, sigmas[:, 0], masked).float(), dim=-1)
    u = torch.rand(x_a.shape, dtype=torch.float64, device=x_a.device, generator=generator)
    first = masked & (u < p1[:, None])
    x_b = x_a.masked_scatter(first, sample_categorical(q_a[first[masked]].double(), generator))
    still = masked & ~first
    q_b = torch.zeros_like(q_a)
    if bool(still.any()):
        with evaluating(teacher if second is None else second) as model:
            q_b[still[masked]] = torch.softmax(model.logits_at(x_b, sigmas[:, 1], still).float(), dim=-1)
    mixed = (1.0 - beta) * q_a + beta * q_b
    return torch.where(first[masked][:, None], q_a, mixed)


def distillation_nats(
    student: LogitScoreModel,
    teacher: LogitScoreModel,
    graph: Graph,
    noise: Noise,
    x0: torch.Tensor,
    steps: int,
    loss_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    method: str = "sdtt",
) -> torch.Tensor:
    """Per sequence ``[B]``: ``Σ KL(target ‖ student)`` over the masked positions of ``x0`` noised to the start of
    a random step of the student's ``steps``-step grid. Its gradient is that of ``Σ KL(p ‖ student)`` (the
    loss is linear in the target), so it is least where the student's token law is the two-step law ``p``
    (the teacher's both steps for ``method="sdtt"``; for ``"consistency"`` the second is the student's own,
    without gradient); its value there is the targets' spread around ``p``, not zero."""
    if method not in DISTILLATION_METHODS:
        raise ValueError(f"distillation method {method!r}: choose one of {list(DISTILLATION_METHODS)}")
    grid = student_grid(noise, steps, x0.device)
    k = torch.randint(0, steps, (x0.shape[0],), device=x0.device, generator=generator)
    sigmas = grid[k]
    x_a = graph.sample_transition(x0, sigmas[:, 0], loss_mask, generator)
    masked = x_a == graph.mask_id
    target = two_step_targets(teacher, graph, x_a, sigmas, generator, student if method == "consistency" else None)
    log_student = torch.log_softmax(student.logits_at(x_a, sigmas[:, 0], masked).float(), dim=-1)
    kl = (torch.xlogy(target, target) - target * log_student).sum(-1)
    rows = torch.arange(x0.shape[0], device=x0.device)[:, None].expand_as(x_a)[masked]
    return torch.zeros(x0.shape[0], device=x0.device).index_add_(0, rows, kl)
