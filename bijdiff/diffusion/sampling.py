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
) -> torch.Tensor:
    """Draw token sequences ``Long[B, L]`` from the reverse process; never a ``[MASK]`` in the output.

    ``euler`` and ``analytic`` take ``steps`` reverse steps on a uniform time grid from 1 to
    ``t_end`` and a final denoising step to zero noise. ``ordered`` (absorbing only) unmasks one
    position per network call, left to right: exactly the model ``exact_log_likelihood`` scores
    (``steps`` is then the sequence length).
    """
    if method not in SAMPLERS:
        raise ConfigError(f"unknown sampler {method!r}; choose one of {list(SAMPLERS)}")
    if method == "ordered":
        return _sample_ordered(model, graph, noise, shape, device, generator)
    if steps < 1:
        raise ConfigError(f"sampling steps must be ≥ 1, got {steps}")
    dtype = draw_dtype(device)
    x = graph.sample_limit(shape, device, generator)
    times = torch.linspace(1.0, t_end, steps + 1, device=device)
    sigmas = noise.total(times)
    ones = torch.ones(shape[0], device=device)
    for k in range(steps):
        score = model(x, sigmas[k] * ones).to(dtype).exp()
        probs = graph.reverse_probs(score, x, (sigmas[k] - sigmas[k + 1]).to(dtype), method)
        x = sample_categorical(probs, generator)
    score = model(x, sigmas[-1] * ones).to(dtype).exp()
    return sample_categorical(graph.denoise_probs(score, x, sigmas[-1].to(dtype)), generator)


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
