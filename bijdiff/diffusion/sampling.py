"""Samplers for the reverse process: Euler, analytic (Tweedie τ-leaping), ordered, confidence-ordered and blockwise unmasking."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..nn.layers import window_cache
from .contract import LogitScoreModel, ScoreModel
from .graph import Graph
from .likelihood import ordered_sigma, position_log_probs
from .noise import Noise

SAMPLERS = ("euler", "analytic", "ordered", "confident", "blockwise")


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
    given: torch.Tensor | None = None,
    blocks: int = 4,
) -> torch.Tensor:
    """Draw token sequences ``Long[B, L]`` from the reverse process; never a ``[MASK]`` in the output.

    ``euler`` and ``analytic`` take ``steps`` reverse steps on a uniform time grid from 1 to
    ``t_end`` and a final denoising step to zero noise. A step from ``t_k`` to ``t_{k+1}`` moves
    with the integrated rate ``c``: ``euler`` is SEDD's first-order predictor (``δ + Δt·σ(t_k)Q·s``,
    so ``c = σ(t_k)·Δt``, the rate at the step's start times its length); ``analytic`` is Tweedie
    τ-leaping on the exact ``Δσ̄ = σ̄(t_k) − σ̄(t_{k+1})``. ``ordered`` (absorbing only) unmasks one
    position per network call, left to right: exactly the model ``exact_log_likelihood`` scores
    (``steps`` is then the sequence length). ``confident`` (absorbing, ``LogitScoreModel``) is
    confidence-ordered unmasking (MaskGIT, Chang et al. 2022; LLaDA's low-confidence remasking, Nie
    et al. 2025): each of ``steps`` network calls draws a token at every masked position and keeps
    the ones drawn with the highest probability, as many as the noise schedule unmasks in that step
    (``confident_counts``). It is a decoding heuristic, not the model's law: it trades entropy for
    generative perplexity, so compare it with the samples' entropy next to it. ``blockwise`` is
    ``confident`` block by block, left to right, ``steps // blocks`` calls per block, with a cache of
    the other positions' attention keys and values (``_sample_blockwise``; approximate, for speed).

    ``given`` (``Long[L]`` or ``Long[B, L]``: a token id at each given position, ``-1`` where the
    sampler generates) conditions every sampler on those tokens, which it never changes: a prefix,
    a suffix, infilling between them or any other pattern. Under the absorbing graph the given
    positions are clean context from the first step; under the uniform graph they are held fixed
    while the others move. (A model trained on whole blocks was never shown clean context under the
    uniform graph's noise, so its conditional samples are only as good as its scores there.)

    Under the absorbing graph ``euler`` and ``analytic`` sample a ``LogitScoreModel`` by
    ``_sample_unmasking``: the same law, but a sequence goes through the network only at the
    steps where one of its positions unmasks, at most ``L + 1`` calls whatever ``steps`` is.
    Other models and the uniform graph take every step at every position (``steps + 1`` calls);
    ``confident`` makes at most ``min(steps, L)`` (a step that unmasks nothing costs none), ``blockwise``
    at most ``steps``, all but ``blocks`` of them over one block's positions.
    ``stats["network_calls_per_sample"]`` receives the network evaluations per sequence, counted.
    """
    if method not in SAMPLERS:
        raise ConfigError(f"unknown sampler {method!r}; choose one of {list(SAMPLERS)}")
    fixed = given_mask(given, shape, graph.num_tokens, device)
    x = graph.sample_limit(shape, device, generator)
    if fixed is not None:
        x = torch.where(fixed, given.to(device).expand(shape), x)
    if method == "ordered":
        x, calls = _sample_ordered(model, graph, noise, x, generator)
    elif method in ("confident", "blockwise"):
        if not graph.absorbing or not isinstance(model, LogitScoreModel):
            raise ConfigError(f"the {method} sampler unmasks by the model's token probabilities: it needs diffusion=absorb "
                              "and a denoiser that exposes logits (every bijdiff denoiser does)")
        if steps < 1:
            raise ConfigError(f"sampling steps must be ≥ 1, got {steps}")
        if method == "confident":
            x, calls = _sample_confident(model, graph, noise, x, steps, generator, t_end)
        else:
            if not 1 <= blocks <= shape[1] or steps % blocks:
                raise ConfigError(f"the blockwise sampler needs 1 ≤ sample.blocks ≤ the length {shape[1]} and sample.steps "
                                  f"a multiple of it (steps per block), got blocks={blocks}, steps={steps}")
            x, calls = _sample_blockwise(model, graph, noise, x, steps, blocks, generator, t_end)
    else:
        if steps < 1:
            raise ConfigError(f"sampling steps must be ≥ 1, got {steps}")
        sigmas, step_sizes = reverse_schedule(noise, steps, method, device, t_end)
        if graph.absorbing and isinstance(model, LogitScoreModel):
            x, calls = _sample_unmasking(model, graph, sigmas, step_sizes, x, method, generator)
        else:
            x, calls = _sample_generic(model, graph, sigmas, step_sizes, x, fixed, method, generator)
    if stats is not None:
        stats["network_calls_per_sample"] = calls / shape[0]
    return x


def given_mask(given: torch.Tensor | None, shape: tuple[int, int], num_tokens: int, device: torch.device | str) -> torch.Tensor | None:
    """``Bool[B, L]``, True at the positions ``given`` fixes (``None`` when nothing is given); a clear error for bad ids."""
    if given is None:
        return None
    if given.dtype not in (torch.int32, torch.int64) or given.shape[-1] != shape[1] or given.dim() not in (1, 2) \
            or (given.dim() == 2 and given.shape[0] not in (1, shape[0])):
        raise ConfigError(f"given must be Long[{shape[1]}] or Long[{shape[0]}, {shape[1]}] (token ids, -1 where the sampler "
                          f"generates), got {given.dtype} {list(given.shape)}")
    if bool(((given < -1) | (given >= num_tokens)).any()):
        raise ConfigError(f"given holds ids outside -1..{num_tokens - 1}: -1 marks a position to generate, "
                          f"0..{num_tokens - 1} are the model's tokens")
    return (given >= 0).to(device).expand(shape)


def reverse_schedule(noise: Noise, steps: int, method: str, device: torch.device | str, t_end: float = 1e-5
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The reverse grid's ``σ̄(t_k)`` (``steps + 1`` levels, 1 down to ``t_end``) and each step's ``c``:
    ``σ(t_k)·Δt`` for ``euler`` (the reference's first-order step), ``σ̄(t_k) − σ̄(t_{k+1})`` for ``analytic``."""
    times = torch.linspace(1.0, t_end, steps + 1, device=device)
    sigmas = noise.total(times)
    if method == "euler":
        return sigmas, noise.rate(times[:-1]) * (times[:-1] - times[1:])
    return sigmas, sigmas[:-1] - sigmas[1:]


def unmask_probabilities(sigmas: torch.Tensor, step_sizes: torch.Tensor, method: str) -> torch.Tensor:
    """Under the absorbing graph, the probability ``[steps]`` that a masked position unmasks at each step
    (scores that sum to ``1 / expm1(σ̄)`` at a mask, as exact ones and ``LogitScoreModel``'s do)."""
    factor = step_sizes if method == "euler" else torch.expm1(step_sizes)
    return (factor / torch.expm1(sigmas[:-1])).clamp(0.0, 1.0)


def _sample_generic(model, graph, sigmas, step_sizes, x, fixed, method, generator) -> tuple[torch.Tensor, int]:
    """Any graph and any log-score model: the full reverse transition at every position and step."""
    dtype = draw_dtype(x.device)
    ones = torch.ones(x.shape[0], device=x.device)
    given = x.clone() if fixed is not None else None
    for k in range(len(sigmas)):
        score = model(x, sigmas[k] * ones).to(dtype).exp()
        if k + 1 < len(sigmas):
            probs = graph.reverse_probs(score, x, step_sizes[k].to(dtype), method)
        else:  # to zero noise
            probs = graph.denoise_probs(score, x, sigmas[-1].to(dtype))
        x = sample_categorical(probs, generator)
        if fixed is not None:
            x = torch.where(fixed, given, x)
    return x, len(sigmas) * x.shape[0]


def _sample_unmasking(model, graph, sigmas, step_sizes, x, method, generator) -> tuple[torch.Tensor, int]:
    """The absorbing reverse process for a model whose log-scores are ``graph.log_score_from_logits``.

    Those scores at a masked position sum to ``1 / expm1(σ̄)`` whatever the logits, so the
    step's transition factorises exactly: the position unmasks with probability
    ``unmask_probabilities`` (``c / expm1(σ̄_k)``; ``c`` itself for Euler, ``expm1(Δσ̄)`` analytic), the
    same for every masked position, and if it does its token is drawn from ``softmax(logits)``.
    Given tokens are real, so they never move. So a step draws one
    uniform per masked position and needs the network only for the sequences in which a position
    unmasks. (Keeping logits across steps would save nothing more: a sequence that needs them
    again has changed since, by the unmasking that followed its last call.) Same law as
    ``_sample_generic``, different random stream.
    """
    dtype = draw_dtype(x.device)
    p_unmask = unmask_probabilities(sigmas.to(dtype), step_sizes.to(dtype), method)
    calls = 0
    for k in range(len(sigmas)):
        sigma = sigmas[k]
        masked = x == graph.mask_id
        if k + 1 < len(sigmas):
            u = torch.rand(x.shape, dtype=dtype, device=x.device, generator=generator)
            unmask = masked & (u < p_unmask[k])
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


def _sample_ordered(model, graph, noise, x, generator) -> tuple[torch.Tensor, int]:
    """Unmask the masked positions left to right, one per network call; given tokens stay as context.

    The noise level is ``ordered_sigma`` of each sequence's masked count, as ``exact_log_likelihood``
    gives it with the same context, so the draws follow the law whose likelihood it computes."""
    if not graph.absorbing:
        raise ConfigError("the ordered sampler unmasks left to right: it needs diffusion=absorb")
    length = x.shape[1]
    positions = torch.arange(length, device=x.device)
    dtype = draw_dtype(x.device)
    calls = 0
    for k in range(length):
        where = (positions == k)[None, :] & (x == graph.mask_id)
        rows = where.any(-1)
        n = int(rows.sum())
        if n == 0:
            continue
        masked = (x[rows] == graph.mask_id).sum(-1)
        sigma = ordered_sigma(masked, length, noise)
        probs = position_log_probs(model, graph, x[rows], sigma, where[rows]).to(dtype).exp()
        x[where] = sample_categorical(probs, generator)
        calls += n
    return x, calls


def confident_counts(noise: Noise, steps: int, masked: torch.Tensor, t_end: float = 1e-5) -> torch.Tensor:
    """``Long[steps, B]``: how many of each row's ``masked`` positions each confident step unmasks, following
    the absorbing process's masked fraction ``1 − e^{−σ̄(t)}`` on the reverse grid (the last step unmasks the rest)."""
    dtype = draw_dtype(masked.device)  # rounding a non-increasing fraction keeps the counts ≥ 0 in float32 too
    times = torch.linspace(1.0, t_end, steps + 1, device=masked.device, dtype=dtype)
    fraction = -torch.expm1(-noise.total(times).to(dtype))
    fraction = fraction / fraction[0]
    fraction[-1] = 0.0
    remaining = torch.round(masked.to(dtype)[None, :] * fraction[:, None]).long()
    return remaining[:-1] - remaining[1:]


def _sample_confident(model, graph, noise, x, steps, generator, t_end) -> tuple[torch.Tensor, int]:
    """Confidence-ordered unmasking: at each step draw a token at every masked position and keep the
    ``confident_counts`` most probable draws of each row; given tokens are never masked, so never move.
    The head, the softmax and the draws run at the masked positions only (``logits_at``)."""
    counts = confident_counts(noise, steps, (x == graph.mask_id).sum(-1), t_end)
    sigmas, _ = reverse_schedule(noise, steps, "analytic", x.device, t_end)
    calls = 0
    for k in range(steps):
        rows = counts[k] > 0
        n = int(rows.sum())
        if n == 0:
            continue
        xr = x[rows]
        masked = xr == graph.mask_id  # the head and the draws at these positions only
        x[rows] = _keep_most_confident(xr, masked, model.logits_at(xr, sigmas[k].expand(n), masked), counts[k][rows], generator)
        calls += n
    return x, calls


def _keep_most_confident(x, masked, logits, counts, generator) -> torch.Tensor:
    """``x [R, n]`` with, in each row, the ``counts`` most probable of the tokens drawn from ``logits`` (one row
    per ``masked`` position, in order) put in at their positions; the other positions unchanged."""
    probs = torch.softmax(logits.to(draw_dtype(x.device)), dim=-1)
    drawn = sample_categorical(probs, generator)
    tokens = x.masked_scatter(masked, drawn)
    confidence = torch.full(x.shape, -1.0, dtype=probs.dtype, device=x.device)
    confidence = confidence.masked_scatter(masked, probs.gather(-1, drawn[:, None]).squeeze(-1))
    order = confidence.argsort(-1, descending=True)
    ranks = torch.arange(x.shape[1], device=x.device)
    rank = torch.empty_like(order).scatter_(-1, order, ranks.expand_as(order))
    return torch.where(rank < counts[:, None], tokens, x)


def _sample_blockwise(model, graph, noise, x, steps, blocks, generator, t_end) -> tuple[torch.Tensor, int]:
    """Semi-autoregressive confidence-ordered unmasking with a dual cache (Fast-dLLM, Wu et al. 2025).

    The positions are cut into ``blocks`` contiguous blocks, unmasked left to right with ``steps //
    blocks`` confident steps each (``confident_counts`` of the block's masked positions). A block's
    first call runs the whole sequence and stores every attention layer's keys and values
    (``window_cache``); its other calls run the block's positions only and attend to the stored ones
    elsewhere, so they cost about ``1 / blocks`` of a whole call. Approximate: the stored keys of the
    other positions predate the tokens the block has unmasked since (exact caches need a block-causal
    denoiser trained as such: Arriola et al. 2025, Block Diffusion). The noise level given is the one
    whose masked fraction is the row's (``ordered_sigma``). A model without attention layers is run
    whole at every call.
    """
    length = x.shape[1]
    edges = [round(i * length / blocks) for i in range(blocks + 1)]
    calls = 0
    with window_cache(model) as window:
        for lo, hi in zip(edges[:-1], edges[1:]):
            counts = confident_counts(noise, steps // blocks, (x[:, lo:hi] == graph.mask_id).sum(-1), t_end)
            cached = False
            for k in range(len(counts)):
                if not bool((counts[k] > 0).any()):
                    continue
                sigma = ordered_sigma((x == graph.mask_id).sum(-1), length, noise)
                masked = x[:, lo:hi] == graph.mask_id
                if window is not None and cached:  # the block's positions only, the rest from the cache
                    window.start = lo
                    logits = model.logits_at(x[:, lo:hi], sigma, masked)
                else:  # the whole sequence: (re)fills the cache
                    if window is not None:
                        window.start = 0
                    where = torch.zeros_like(x, dtype=torch.bool)
                    where[:, lo:hi] = masked
                    logits = model.logits_at(x, sigma, where)
                    cached = True
                x[:, lo:hi] = _keep_most_confident(x[:, lo:hi], masked, logits, counts[k], generator)
                calls += x.shape[0]
    return x, calls
