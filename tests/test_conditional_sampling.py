"""Samplers against exact laws: the reference Euler step, and conditioning on given tokens.

A joint (not factorised) law over 4 positions of 3 tokens, so that conditioning matters: the
exact conditional of the generated positions given the others is known in closed form, and so are
the exact scores of every noisy state (brute force over the 81 sequences).
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from bijdiff.diffusion import (
    Absorbing, GeometricNoise, LogitScoreModel, LogLinearNoise, Uniform, confident_counts, reverse_schedule, sample,
    unmask_probabilities,
)
from bijdiff.errors import ConfigError
from bijdiff.models import build_model
from bijdiff.objectives import AutoregressiveObjective

V, L = 3, 4
STATES = torch.tensor(list(itertools.product(range(V), repeat=L)))  # [81, L]


def joint_law() -> torch.Tensor:
    """``p[81]``: neighbours tend to agree, with random weights on top (strong dependence across positions)."""
    g = torch.Generator().manual_seed(7)
    agree = (STATES[:, 1:] == STATES[:, :-1]).sum(-1).double()
    return torch.softmax(1.5 * agree + torch.randn(len(STATES), generator=g, dtype=torch.float64), 0)


def conditional_law(p: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """``p(x | the given positions)`` over the 81 sequences for one row of ``given`` (-1 = free)."""
    fixed = given >= 0
    match = (STATES[:, fixed] == given[fixed]).all(-1)
    return p * match / (p * match).sum()


def ignoring_the_context(p: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """What a sampler that pasted the given tokens over unconditional draws would produce."""
    fixed = given >= 0
    free = STATES[:, ~fixed]
    index = (free * V ** torch.arange(free.shape[1] - 1, -1, -1)).sum(-1)
    marginal = torch.zeros(V ** free.shape[1], dtype=torch.float64).index_add_(0, index, p)
    return marginal[index] * (STATES[:, fixed] == given[fixed]).all(-1)


def frequencies(x: torch.Tensor) -> torch.Tensor:
    """Empirical law of the rows of ``x`` over the 81 sequences."""
    index = (x * V ** torch.arange(L - 1, -1, -1)).sum(-1)
    return torch.bincount(index, minlength=len(STATES)).double() / len(x)


def unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of a small-valued ``Long[B, K]`` and the index of each row among them."""
    codes = (x * (int(x.max()) + 1) ** torch.arange(x.shape[1])).sum(-1)
    unique_codes, inverse = torch.unique(codes, return_inverse=True)
    first = torch.empty(len(unique_codes), dtype=torch.long).scatter_(0, inverse, torch.arange(len(x)))
    return x[first], inverse


class AbsorbingOracle(torch.nn.Module, LogitScoreModel):
    """Exact scores of ``p`` under the absorbing graph: at a mask, ``p(x_i = y | the revealed tokens) / expm1(σ̄)``,
    which is ``log_score_from_logits`` of the conditional log-marginals (given tokens are just revealed ones)."""

    def __init__(self, p: torch.Tensor) -> None:
        super().__init__()
        self.p, self.graph = p, Absorbing(V)

    def logits(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        unique, inverse = unique_rows(x_t)  # at most 4^4 states: brute force once each
        return self._logits(unique)[inverse]

    def _logits(self, x_t: torch.Tensor) -> torch.Tensor:
        revealed = x_t != self.graph.mask_id
        match = ((STATES[None] == x_t[:, None]) | ~revealed[:, None]).all(-1)  # [B, 81]
        weight = self.p[None] * match
        marginals = torch.einsum("bn,nlv->blv", weight, torch.nn.functional.one_hot(STATES, V).double())
        return torch.log(marginals.clamp_min(1e-300)) - torch.log(weight.sum(-1))[:, None, None]

    def logits_at(self, x_t, sigma, where):
        return self.logits(x_t, sigma)[where]

    def forward(self, x_t, sigma):
        return self.graph.log_score_from_logits(self.logits(x_t, sigma), x_t, sigma[:, None])


class ScoresOnly(torch.nn.Module):
    """The same scores without the logits contract: the generic sampling path."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t, sigma):
        return self.model(x_t, sigma)


class UniformOracle(torch.nn.Module):
    """Exact log-scores ``log p_t(x_t with x_i → y) − log p_t(x_t)`` of ``p`` under the uniform graph, where the
    positions ``fixed [B, L]`` are never corrupted (the context the sampler holds)."""

    def __init__(self, p: torch.Tensor, fixed: torch.Tensor) -> None:
        super().__init__()
        self.p, self.fixed = p, fixed

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        assert bool((sigma == sigma[0]).all())  # the generic sampler's calls: one level per call
        unique, inverse = unique_rows(torch.cat([x_t, self.fixed.long()], dim=1))
        return self._log_scores(unique[:, :L], unique[:, L:].bool(), sigma[: len(unique)])[inverse]

    def _log_scores(self, x_t: torch.Tensor, fixed: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        keep = torch.exp(-sigma.double())[:, None, None, None]
        eye = torch.eye(V, dtype=torch.float64)
        kernel = keep * eye + (1 - keep) / V  # [B, 1, V, V]: p(x_t = b | x_0 = a)
        kernel = torch.where(fixed[:, :, None, None], eye, kernel)  # [B, L, V, V]
        # rows[b, n, i, y] = p(x_t,i = y | x_0 = STATES[n]) at each position
        rows = kernel[:, None].expand(-1, len(STATES), -1, -1, -1).gather(
            3, STATES[None, :, :, None, None].expand(len(x_t), -1, -1, 1, V)).squeeze(3)
        at = rows.gather(3, x_t[:, None, :, None].expand(-1, len(STATES), -1, 1)).squeeze(3)  # [B, 81, L]
        log_scores = torch.zeros(len(x_t), L, V, dtype=torch.float64)
        for i in range(L):
            others = torch.cat([at[:, :, :i], at[:, :, i + 1 :]], dim=2).prod(-1)  # [B, 81]
            p_t = torch.einsum("n,bn,bnv->bv", self.p, others, rows[:, :, i])  # p_t(x_t with x_i → v)
            log_scores[:, i] = torch.log(p_t.clamp_min(1e-300)) - torch.log(p_t.gather(1, x_t[:, i : i + 1]))
        return log_scores.float()


PATTERNS = torch.tensor([[2, -1, -1, 0],    # a prefix and a suffix: infill between them
                         [-1, 1, -1, -1],   # one token in the middle
                         [1, 1, -1, -1]])   # a prefix: continuation


def given_rows(n: int) -> torch.Tensor:
    """``n`` rows cycling through ``PATTERNS``: several mask patterns in one batch."""
    return PATTERNS.repeat(n // len(PATTERNS) + 1, 1)[:n]


CASES = [("absorb", "analytic", 256, "logits"), ("absorb", "euler", 256, "logits"), ("absorb", "ordered", 0, "logits"),
         ("absorb", "analytic", 256, "scores"), ("absorb", "euler", 256, "scores"), ("absorb", "ordered", 0, "scores"),
         ("uniform", "analytic", 256, "scores"), ("uniform", "euler", 512, "scores")]


@pytest.mark.parametrize("graph_name, method, steps, path", CASES)
def test_conditional_samples_follow_the_exact_conditional_law(graph_name, method, steps, path) -> None:
    """Every sampler, both graphs, both absorbing paths (the unmasking one for logit models, the generic one):
    given positions come back bit-identical and the rest follows ``p(x | given)``.

    Tolerance: 5 binomial standard deviations per sequence, plus the sampler's own discretisation
    (two positions drawn independently in one step; a step of ``1/steps`` of the time grid)."""
    n = 12000
    p, given = joint_law(), given_rows(n)
    if graph_name == "absorb":
        graph, noise = Absorbing(V), LogLinearNoise(1e-3)
        oracle = AbsorbingOracle(p)
        model = oracle if path == "logits" else ScoresOnly(oracle)
    else:
        graph, noise = Uniform(V), GeometricNoise(1e-4, 20.0)
        model = UniformOracle(p, given >= 0)
    x = sample(model, graph, noise, (n, L), steps, method, generator=torch.Generator().manual_seed(0), given=given)
    assert torch.equal(x[given >= 0], given[given >= 0])
    discretisation = 4.0 / steps if steps else 0.0
    for k, pattern in enumerate(PATTERNS):
        rows = x[k :: len(PATTERNS)]
        exact = conditional_law(p, pattern)
        tolerance = 5 * torch.sqrt(exact * (1 - exact) / len(rows)) + discretisation + 1e-3
        error = (frequencies(rows) - exact).abs()
        assert (error <= tolerance).all(), (pattern, error.max(), tolerance[error.argmax()])
        assert (ignoring_the_context(p, pattern) - exact).abs().max() > 3 * tolerance.max()  # the test has teeth


@pytest.mark.parametrize("method", ["euler", "analytic"])
def test_per_step_unmasking_matches_the_exact_posterior_for_log_linear_noise(method) -> None:
    """Under log-linear noise a position is still masked at time t with probability t (up to ε), so a
    masked one unmasks between ``t_k`` and ``t_{k+1}`` with probability ``Δt / t_k``: SEDD's Euler step
    ``c = σ(t_k)Δt`` and the analytic ``expm1(Δσ̄)`` both give it exactly. (``c = Δσ̄`` instead gives
    0.0048 instead of 0.125 in the first of 8 steps.)"""
    steps, t_end = 8, 1e-5
    noise = LogLinearNoise(1e-3)
    sigmas, step_sizes = reverse_schedule(noise, steps, method, "cpu", t_end)
    times = torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64)
    posterior = (times[:-1] - times[1:]) / times[:-1]
    # float32 grid: σ̄ near t = 1 is -log(ε) with the rounding of 1 − (1 − ε)t, relative error ≲ 2⁻²⁴ / ε
    torch.testing.assert_close(unmask_probabilities(sigmas.double(), step_sizes.double(), method), posterior,
                               rtol=2 ** -24 / 1e-3 * 4, atol=1e-6)


@pytest.mark.parametrize("path", ["logits", "scores"])
def test_the_samplers_unmask_at_the_posterior_rate_step_by_step(path) -> None:
    """One position per sequence, 8 Euler steps: the step at which it unmasks is uniform over the steps
    (``P = Π_{j<k}(1 − Δt/t_j) · Δt/t_k = Δt``), counted from the network calls the sampler makes."""
    steps, n = 8, 16000
    p1 = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    seen: list[torch.Tensor] = []

    class Recording(AbsorbingOracle):
        def logits(self, x_t, sigma):
            seen.append(torch.stack([sigma, (x_t == self.graph.mask_id).sum(-1).double()], -1))
            return torch.log(p1).expand(len(x_t), 1, V)

    graph, noise = Absorbing(V), LogLinearNoise(1e-3)
    model = Recording(p1) if path == "logits" else ScoresOnly(Recording(p1))
    sample(model, graph, noise, (n, 1), steps, "euler", generator=torch.Generator().manual_seed(0))
    sigmas, _ = reverse_schedule(noise, steps, "euler", "cpu")
    calls = torch.cat(seen)
    level = (calls[:, :1] - sigmas[None].double()).abs().argmin(-1)  # the step of each call
    if path == "logits":  # called once per sequence: at the step it unmasks (or the final one)
        share = torch.bincount(level, minlength=steps + 1)[:steps].double() / n
    else:  # called at every step with the whole batch: the masked count drops by the unmasked ones
        masked = torch.stack([calls[level == k, 1].sum() for k in range(steps + 1)])
        share = (masked[:-1] - masked[1:]) / n
    expected = torch.full((steps,), 1 / steps, dtype=torch.float64)
    torch.testing.assert_close(share, expected, atol=5 * math.sqrt(1 / steps * (1 - 1 / steps) / n), rtol=0)


def test_autoregressive_continuation_follows_the_models_conditional_law() -> None:
    cfg = {"model": {"name": "ar", "d_model": 16, "n_layers": 1, "n_heads": 2, "mlp_ratio": 2.0, "dropout": 0.0, "cond_dim": 8}}
    model = build_model(cfg, V).double().eval()
    with torch.no_grad():
        for w in model.parameters():
            w.normal_(0.0, 0.7, generator=torch.Generator().manual_seed(w.numel()))
    prefix = torch.tensor([2, 0, -1, -1])
    law = torch.exp(-model.nll(STATES)).double()
    exact = conditional_law(law, prefix)
    n = 20000
    stats: dict[str, float] = {}
    x = AutoregressiveObjective().sample(model, (n, L), 0, "", "cpu", torch.Generator().manual_seed(0), stats, given=prefix)
    assert torch.equal(x[:, :2], prefix[:2].expand(n, -1))
    assert stats["network_calls_per_sample"] == 2.0  # the prefix goes through with the first draw
    tolerance = 5 * torch.sqrt(exact * (1 - exact) / n) + 1e-3
    assert ((frequencies(x) - exact).abs() <= tolerance).all()
    uncached = model.generate((4, L), torch.Generator().manual_seed(1), kv_cache=False, prefix=prefix[None, :2].expand(4, -1))
    cached = model.generate((4, L), torch.Generator().manual_seed(1), prefix=prefix[None, :2].expand(4, -1))
    assert torch.equal(cached, uncached)  # the cache changes the cost, not the draws
    with pytest.raises(ConfigError, match="continues a prefix"):
        AutoregressiveObjective().sample(model, (2, L), 0, "", "cpu", given=torch.tensor([-1, -1, -1, 1]))


def test_given_tokens_are_checked() -> None:
    model, graph, noise = AbsorbingOracle(joint_law()), Absorbing(V), LogLinearNoise()
    with pytest.raises(ConfigError, match="outside -1..2"):
        sample(model, graph, noise, (2, L), 4, given=torch.tensor([0, 3, -1, -1]))  # 3 is [MASK], not a token
    with pytest.raises(ConfigError, match=r"Long\[4\] or Long\[2, 4\]"):
        sample(model, graph, noise, (2, L), 4, given=torch.tensor([0, -1, -1]))
    full = torch.tensor([0, 1, 2, 0])
    x = sample(model, graph, noise, (2, L), 4, given=full)
    assert torch.equal(x, full.expand(2, -1))  # nothing left to generate


def test_the_uniform_oracle_is_exact_at_zero_noise() -> None:
    """Sanity of the brute-force scores: at σ̄ → 0 with nothing fixed, ``s_y = p(x with x_i → y) / p(x)``."""
    p = joint_law()
    x = STATES[[5, 40, 77]]
    oracle = UniformOracle(p, torch.zeros(3, L, dtype=torch.bool))
    scores = oracle(x, torch.full((3,), 1e-9)).double().exp()
    index = lambda s: int((s * V ** torch.arange(L - 1, -1, -1)).sum())  # noqa: E731
    for b in range(3):
        for i in range(L):
            for y in range(V):
                neighbour = x[b].clone()
                neighbour[i] = y
                assert math.isclose(float(scores[b, i, y]), float(p[index(neighbour)] / p[index(x[b])]), rel_tol=1e-6)


@pytest.mark.parametrize("noise", [LogLinearNoise(1e-3), GeometricNoise(1e-3, 20.0)], ids=["loglinear", "geometric"])
def test_confident_steps_unmask_every_masked_position_once_along_the_schedule(noise) -> None:
    """``confident_counts``: non-negative, each row's counts sum to its masked positions, and the masked count
    left after each step is the process's masked fraction ``1 − e^{−σ̄(t_k)}`` of the start, to rounding."""
    masked = torch.tensor([64, 37, 1, 0])
    counts = confident_counts(noise, 10, masked)
    assert counts.shape == (10, 4) and bool((counts >= 0).all()) and torch.equal(counts.sum(0), masked)
    times = torch.linspace(1.0, 1e-5, 11, dtype=torch.float64)
    fraction = -torch.expm1(-noise.total(times).double())
    left = masked[None] - counts.cumsum(0)
    assert ((left[:-1] - masked[None] * fraction[1:-1, None] / fraction[0]).abs() <= 0.5 + 1e-9).all()


def test_the_confident_sampler_unmasks_the_most_probable_draws_first_and_keeps_the_given_tokens() -> None:
    """One position per step: a position the model is sure of goes first; given tokens never move."""
    seen: list[torch.Tensor] = []

    class SureOfPosition2(AbsorbingOracle):
        def logits(self, x_t, sigma):
            seen.append(x_t.clone())
            logits = torch.zeros(len(x_t), L, V, dtype=torch.float64)
            logits[:, 2, 1] = 30.0  # position 2 is token 1, almost surely; the others uniform
            return logits

    given = torch.tensor([[-1, -1, -1, 0], [2, -1, -1, -1]])
    stats: dict[str, float] = {}
    x = sample(SureOfPosition2(joint_law()), Absorbing(V), LogLinearNoise(1e-3), (2, L), 3, "confident",
               generator=torch.Generator().manual_seed(0), stats=stats, given=given)
    assert torch.equal(x[given >= 0], given[given >= 0]) and bool((x < V).all())
    assert torch.equal(x[:, 2], torch.tensor([1, 1]))
    mask = Absorbing(V).mask_id
    assert torch.equal(seen[1][:, 2], torch.tensor([1, 1]))  # after the first call, position 2 is the one revealed
    assert int((seen[1] == mask).sum()) == 2 * 3 - 2  # one position per row per step (3 steps, 3 free positions)
    assert stats["network_calls_per_sample"] == 3.0


def test_the_confident_sampler_needs_the_absorbing_graph_and_logits() -> None:
    p = joint_law()
    with pytest.raises(ConfigError, match="confident sampler .* diffusion=absorb"):
        sample(UniformOracle(p, torch.zeros(2, L, dtype=torch.bool)), Uniform(V), GeometricNoise(), (2, L), 4, "confident")
    with pytest.raises(ConfigError, match="exposes logits"):
        sample(ScoresOnly(AbsorbingOracle(p)), Absorbing(V), LogLinearNoise(), (2, L), 4, "confident")
