"""Samplers for the reverse process: Euler, analytic (Tweedie τ-leaping) and ordered unmasking."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .contract import LogitScoreModel, ScoreModel
from .graph import Graph
from .likelihood import ordered_sigma, position_log_probs
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
    model: ScoreModel,
    graph: Graph,
    noise: Noise,
    shape: tuple[int, int],
    steps: int,
    method: str = "analytic",
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    t_end: float = 1e-5,
    stats: dict[str, float] | None = None,
) -> torch.Tensor:
    """Draw token sequences ``Long[B, L]`` from the reverse process; never a ``[MASK]`` in the output.

    ``euler`` and ``analytic`` take ``steps`` reverse steps on a uniform time grid from 1 to
    ``t_end`` and a final denoising step to zero noise. ``ordered`` (absorbing only) unmasks one
    position per network call, left to right: exactly the model ``exact_log_likelihood`` scores
    (``steps`` is then the sequence length).

    Under the absorbing graph a ``LogitScoreModel`` is sampled by
    ``_sample_unmasking``: the same law, but a sequence goes through the network only at the
    steps where one of its positions unmasks, at most ``L + 1`` calls whatever ``steps`` is.
    Other models and the uniform graph take every step at every position (``steps + 1`` calls).
    ``stats["network_calls_per_sample"]`` receives the network evaluations per sequence, counted.
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
    times = torch.linspace(1.0, t_end, steps + 1, device=device)
    sigmas = noise.total(times)
    if graph.absorbing and isinstance(model, LogitScoreModel):
        x, calls = _sample_unmasking(model, graph, sigmas, shape, method, device, generator)
    else:
        x, calls = _sample_generic(model, graph, sigmas, shape, method, device, generator)
    if stats is not None:
        stats["network_calls_per_sample"] = calls / shape[0]
    return x


def _sample_generic(model, graph, sigmas, shape, method, device, generator) -> tuple[torch.Tensor, int]:
    """Any graph and any log-score model: the full reverse transition at every position and step."""
    dtype = draw_dtype(device)
    x = graph.sample_limit(shape, device, generator)
    ones = torch.ones(shape[0], device=device)
    for k in range(len(sigmas) - 1):
        score = model(x, sigmas[k] * ones).to(dtype).exp()
        x = sample_categorical(graph.reverse_probs(score, x, (sigmas[k] - sigmas[k + 1]).to(dtype), method), generator)
    score = model(x, sigmas[-1] * ones).to(dtype).exp()
    x = sample_categorical(graph.denoise_probs(score, x, sigmas[-1].to(dtype)), generator)
    return x, len(sigmas) * shape[0]


def _sample_unmasking(model, graph, sigmas, shape, method, device, generator) -> tuple[torch.Tensor, int]:
    """The absorbing reverse process for a model whose log-scores are ``graph.log_score_from_logits``.

    Those scores at a masked position sum to ``1 / expm1(σ̄)`` whatever the logits, so the
    step's transition factorises exactly: the position unmasks with probability
    ``c / expm1(σ̄_k)`` (``c = Δσ`` Euler, ``expm1(Δσ)`` analytic), the same for every masked
    position, and if it does its token is drawn from ``softmax(logits)``. So a step draws one
    uniform per masked position and needs the network only for the sequences in which a position
    unmasks. (Keeping logits across steps would save nothing more: a sequence that needs them
    again has changed since, by the unmasking that followed its last call.) Same law as
    ``_sample_generic``, different random stream.
    """
    dtype = draw_dtype(device)
    x = graph.sample_limit(shape, device, generator)
    calls = 0
    for k in range(len(sigmas)):
        sigma = sigmas[k]
        masked = x == graph.mask_id
        if k + 1 < len(sigmas):
            sigma_step = (sigma - sigmas[k + 1]).to(dtype)
            factor = sigma_step if method == "euler" else torch.expm1(sigma_step)
            p_unmask = (factor / torch.expm1(sigma.to(dtype))).clamp(0.0, 1.0)
            u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
            unmask = masked & (u < p_unmask)
        else:  # the final step to zero noise draws every position still masked
            unmask = masked
        rows = unmask.any(-1)
        n = int(rows.sum())  # one host sync per step: a step that unmasks nothing costs no network call
        if n == 0:
            continue
        logits = model.logits(x[rows], sigma.expand(n))  # [R, L, num_tokens] for the rows that unmask
        calls += n
        x[unmask] = sample_categorical(torch.softmax(logits[unmask[rows]].to(dtype), dim=-1), generator)
    return x, calls


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
