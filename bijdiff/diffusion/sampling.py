"""Samplers for the reverse process: Euler, analytic (Tweedie τ-leaping) and ordered unmasking."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .graph import Graph
from .likelihood import ordered_sigma, position_log_probs
from .loss import Denoiser
from .noise import Noise

SAMPLERS = ("euler", "analytic", "ordered")


def draw_dtype(device: torch.device | str) -> torch.dtype:
    """float64 for categorical draws where the device has it (CPU, CUDA); float32 on MPS."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices drawn from unnormalised ``probs [..., K]`` (exponential race: argmax ``p / E``, ``E ~ Exp(1)``)."""
    u = torch.rand(probs.shape, dtype=probs.dtype, device=probs.device, generator=generator)
    return (probs / -torch.log1p(-u)).argmax(-1)


@torch.no_grad()
def sample(
    model: Denoiser,
    graph: Graph,
    noise: Noise,
    shape: tuple[int, int],
    steps: int,
    method: str = "analytic",
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    t_end: float = 1e-5,
    reuse: bool = True,
    stats: dict[str, float] | None = None,
) -> torch.Tensor:
    """Draw token sequences ``Long[B, L]`` from the reverse process; never a ``[MASK]`` in the output.

    ``euler`` and ``analytic`` take ``steps`` reverse steps on a uniform time grid from 1 to
    ``t_end`` and a final denoising step to zero noise. ``ordered`` (absorbing only) unmasks one
    position per network call, left to right: exactly the model ``exact_log_likelihood`` scores
    (``steps`` is then the sequence length).

    With ``reuse`` and a model whose logits ignore σ̄ (``time_conditioning=False``), a sequence
    that did not change since the last step keeps its logits and is not run through the network
    again (the draws are the same as without reuse); a time-conditioned model runs every step.
    ``stats["network_calls_per_sample"]`` receives the network evaluations per sequence.
    """
    if method not in SAMPLERS:
        raise ConfigError(f"unknown sampler {method!r}; choose one of {list(SAMPLERS)}")
    if method == "ordered":
        x = _sample_ordered(model, graph, noise, shape, device, generator)
        if stats is not None:
            stats["network_calls_per_sample"] = float(shape[1])
        return x
    if steps < 1:
        raise ConfigError(f"sampling steps must be ≥ 1, got {steps}")
    dtype = draw_dtype(device)
    x = graph.sample_limit(shape, device, generator)
    times = torch.linspace(1.0, t_end, steps + 1, device=device)
    sigmas = noise.total(times)
    ones = torch.ones(shape[0], device=device)
    scores = _ScoreCache(model, graph, reuse and getattr(model, "time_conditioning", True) is False)
    for k in range(steps):
        score = scores(x, sigmas[k] * ones).to(dtype).exp()
        probs = graph.reverse_probs(score, x, (sigmas[k] - sigmas[k + 1]).to(dtype), method)
        x = sample_categorical(probs, generator)
    score = scores(x, sigmas[-1] * ones).to(dtype).exp()
    x = sample_categorical(graph.denoise_probs(score, x, sigmas[-1].to(dtype)), generator)
    if stats is not None:
        stats["network_calls_per_sample"] = scores.rows_evaluated / shape[0]
    return x


class _ScoreCache:
    """Log-scores of ``x`` at ``sigma``; with ``reuse``, logits of unchanged sequences are kept."""

    def __init__(self, model: Denoiser, graph: Graph, reuse: bool) -> None:
        self.model, self.graph, self.reuse = model, graph, reuse
        self.x: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.rows_evaluated = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not self.reuse:
            self.rows_evaluated += x.shape[0]
            return self.model(x, sigma)
        if self.x is None:
            self.logits = self.model.logits(x, sigma)
            self.rows_evaluated += x.shape[0]
        else:
            changed = (x != self.x).any(-1)
            rows = int(changed.sum())  # a host sync per step, repaid by every row not recomputed
            if rows:
                self.logits[changed] = self.model.logits(x[changed], sigma[changed])
                self.rows_evaluated += rows
        self.x = x.clone()
        return self.graph.log_score_from_logits(self.logits, x, sigma[:, None])


def _sample_ordered(model, graph, noise, shape, device, generator):
    if not graph.absorbing:
        raise ConfigError("the ordered sampler unmasks left to right: it needs diffusion=absorb")
    b, length = shape
    x = graph.sample_limit(shape, device)
    positions = torch.arange(length, device=device)
    dtype = draw_dtype(device)
    for k in range(length):
        sigma = ordered_sigma(torch.full((b,), length - k, device=device), length, noise)
        where = (positions == k)[None, :].expand(b, -1)
        probs = position_log_probs(model, graph, x, sigma, where).to(dtype).exp()
        x[:, k] = sample_categorical(probs, generator)
    return x
