"""Both graphs against brute force: score entropy, ELBO with an oracle score, samplers, exact likelihood."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from bijdiff.diffusion import (
    NEVER, Absorbing, GeometricNoise, LogLinearNoise, Uniform, elbo_nats, exact_log_likelihood, sample,
)
from bijdiff.errors import ConfigError
from bijdiff.models import build_model

GRAPHS = {"absorb": Absorbing, "uniform": Uniform}
NOISE = {"absorb": LogLinearNoise(1e-3), "uniform": GeometricNoise(1e-4, 20.0)}


def rate_matrix(graph) -> torch.Tensor:
    """``Q[x, y]``, the forward rate from x to y, written independently of the graph classes."""
    n, d = graph.num_tokens, graph.dim
    if isinstance(graph, Absorbing):
        q = torch.zeros(d, d, dtype=torch.float64)
        q[:n, graph.mask_id] = 1.0
        q[range(n), range(n)] = -1.0
        return q
    return torch.full((d, d), 1.0 / n, dtype=torch.float64) - torch.eye(d, dtype=torch.float64)


def kernel(graph, sigma: float) -> torch.Tensor:
    """``p_σ̄(y | x) = exp(σ̄ Q)[x, y]`` by matrix exponential."""
    return torch.linalg.matrix_exp(sigma * rate_matrix(graph))


class Oracle(torch.nn.Module):
    """The exact log-scores of a factorised data distribution ``q[L, N]`` (denoiser contract)."""

    def __init__(self, graph, q: torch.Tensor) -> None:
        super().__init__()
        self.graph, self.q = graph, q

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        q_full = torch.zeros(self.q.shape[0], self.graph.dim, dtype=torch.float64)
        q_full[:, : self.graph.num_tokens] = self.q
        levels, inverse = torch.unique(sigma, return_inverse=True)
        log_p = torch.stack([torch.log((q_full @ kernel(self.graph, float(s))).clamp_min(1e-300)) for s in levels])[inverse]
        log_score = log_p - log_p.gather(-1, x_t[..., None])
        if isinstance(self.graph, Absorbing):
            log_score[..., self.graph.mask_id] = NEVER
            log_score = log_score.scatter(-1, x_t[..., None], 0.0)
        return log_score.float()


def brute_score_entropy(graph, log_score, sigma, x_t, x0) -> torch.Tensor:
    """``Σ_{y ≠ x_t} Q(y, x_t) [s_y − r_y log s_y + r_y (log r_y − 1)]`` with ratios from the matrix exponential."""
    out = torch.zeros(x_t.shape, dtype=torch.float64)
    q = rate_matrix(graph)
    for b in range(x_t.shape[0]):
        k = kernel(graph, float(sigma[b]))
        for i in range(x_t.shape[1]):
            x, c = int(x_t[b, i]), int(x0[b, i])
            for y in range(graph.dim):
                if y == x or q[y, x] == 0:
                    continue
                r = k[c, y] / k[c, x]
                s = log_score[b, i, y].double()
                out[b, i] += q[y, x] * (s.exp() - r * s + (r * (r.log() - 1) if r > 0 else 0.0))
    return out


@pytest.mark.parametrize("name", GRAPHS)
def test_score_entropy_matches_brute_force_is_nonnegative_and_zero_at_truth(name) -> None:
    g = torch.Generator().manual_seed(0)
    graph = GRAPHS[name](5)
    x0 = torch.randint(5, (4, 6), generator=g)
    sigma = torch.tensor([0.05, 0.5, 2.0, 6.0], dtype=torch.float64)
    x_t = graph.sample_transition(x0, sigma, generator=g)
    assert (x_t != x0).any()
    log_score = torch.randn(4, 6, graph.dim, generator=g, dtype=torch.float64)
    if name == "absorb":
        log_score[..., graph.mask_id] = NEVER
    ours = graph.score_entropy(log_score, sigma, x_t, x0)
    torch.testing.assert_close(ours.double(), brute_score_entropy(graph, log_score, sigma, x_t, x0), rtol=1e-4, atol=1e-5)
    assert (ours >= 0).all()
    # the true ratios give zero, and perturbing them gives more
    truth = torch.stack([torch.log(kernel(graph, float(s))[x0[b]] / kernel(graph, float(s))[x0[b]].gather(-1, x_t[b][:, None]))
                         for b, s in enumerate(sigma)])
    if name == "absorb":
        truth = truth.clamp_min(NEVER)
    at_truth = graph.score_entropy(truth, sigma, x_t, x0)
    assert at_truth.abs().max() < 1e-5
    scored = graph.scored_positions(x_t)
    assert (graph.score_entropy(truth + 0.1, sigma, x_t, x0)[scored] > 1e-6).all()


@pytest.mark.parametrize("name", GRAPHS)
def test_closed_form_from_logits_equals_score_entropy(name) -> None:
    g = torch.Generator().manual_seed(1)
    graph = GRAPHS[name](7)
    x0 = torch.randint(7, (3, 8), generator=g)
    sigma = torch.tensor([0.2, 1.0, 3.0])
    x_t = graph.sample_transition(x0, sigma, generator=g)
    logits = torch.randn(3, 8, 7, generator=g)
    general = graph.score_entropy(graph.log_score_from_logits(logits, x_t, sigma[:, None]), sigma, x_t, x0)
    where = graph.scored_positions(x_t)
    rows = graph.score_entropy_from_logits(logits[where], sigma[:, None].expand_as(x_t)[where], x_t[where], x0[where])
    torch.testing.assert_close(rows, general[where], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", GRAPHS)
def test_prior_kl_and_reconstruction_match_brute_force(name) -> None:
    graph = GRAPHS[name](6)
    x0 = torch.randint(6, (2, 5))
    mask = torch.ones_like(x0, dtype=torch.bool)
    sigma = 3.0
    row = kernel(graph, sigma)[0]
    prior = torch.zeros(graph.dim, dtype=torch.float64)
    if name == "absorb":
        prior[graph.mask_id] = 1 - math.exp(-sigma)  # the absorbing prior keeps mass e^{-σ̄max} uniform on tokens
        prior[:6] = math.exp(-sigma) / 6
    else:
        prior[:] = 1 / 6
    kl = float((torch.xlogy(row, row) - torch.xlogy(row, prior)).sum())
    torch.testing.assert_close(graph.prior_kl(x0, torch.tensor(sigma), mask), torch.full((2,), 5 * kl, dtype=torch.float32), rtol=1e-4, atol=1e-6)
    # reconstruction: E over x_σ of −log of the Bayes posterior of x0 under a uniform prior
    k = kernel(graph, 0.3)
    posterior = k[:6] / k[:6].sum(0, keepdim=True)
    expected = float(-(k[0] * torch.log(posterior[0].clamp_min(1e-300))).sum())
    torch.testing.assert_close(graph.reconstruction_nats(torch.tensor(0.3), mask), torch.full((2,), 5 * expected, dtype=torch.float32), rtol=1e-4, atol=1e-6)
    assert float(graph.reconstruction_nats(torch.tensor(0.0), mask).abs().max()) == 0.0


def test_geometric_noise_is_exponential_between_its_ends() -> None:
    noise = GeometricNoise(1e-4, 20.0)
    t = torch.linspace(0, 1, 33, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(noise.total(t).sum(), t)
    torch.testing.assert_close(noise.rate(t.detach()), grad)
    torch.testing.assert_close(noise.total(torch.tensor([0.0, 1.0], dtype=torch.float64)), torch.tensor([1e-4, 20.0], dtype=torch.float64))
    with pytest.raises(ConfigError, match="sigma_min"):
        GeometricNoise(1.0, 0.5)


def factorised(n: int, length: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return torch.softmax(scale * torch.randn(length, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), -1)


def integrated_bound(graph, noise, model, x0: torch.Tensor, nodes: int = 96) -> float:
    """``∫₀¹ σ̄'(t) E[Σ_i score entropy] dt + prior KL + reconstruction`` by quadrature, with the
    expectation over ``x_t`` taken exactly by enumerating every corrupted sequence."""
    import numpy as np

    length = x0.shape[1]
    states = every_sequence(graph.dim, length)
    u, w = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for ui, wi in zip(u, w):
        t = torch.tensor([(ui + 1) / 2])
        sigma, dsigma = noise(t)
        k = kernel(graph, float(sigma))
        prob = k[x0[0]].gather(1, states.T).prod(0)  # p(x_t | x0) for every x_t
        se = graph.score_entropy(model(states, sigma.expand(len(states))), sigma.expand(len(states)), states, x0.expand_as(states))
        total += wi / 2 * float(dsigma) * float((prob * se.double().sum(-1)).sum())
    mask = torch.ones_like(x0, dtype=torch.bool)
    ends = noise.total(torch.tensor([0.0, 1.0]))
    return total + float(graph.prior_kl(x0, ends[1], mask) + graph.reconstruction_nats(ends[0], mask))


@pytest.mark.parametrize("name", GRAPHS)
def test_bound_with_the_oracle_score_is_the_exact_nll_and_elbo_estimates_it(name) -> None:
    """With exact scores the bound is tight: ``∫ DWDSE + KL = −log q(x0)`` (both graphs, so the
    uniform case split is checked end to end); ``elbo_nats`` is its unbiased estimate.

    Log-linear noise for both: it starts at zero noise, and its prior mismatch at t = 1 (ε = 1e-3)
    is far below the tolerance, so the model is q itself. (Geometric noise starts at σmin and its
    model is q blurred by the σmin kernel: its closing term is checked on its own above.)
    """
    graph, noise = GRAPHS[name](3), LogLinearNoise(1e-3)
    q = factorised(3, 2, scale=1.0)
    oracle = Oracle(graph, q)
    for x0 in (torch.tensor([[0, 1]]), torch.tensor([[2, 2]])):
        truth = float(-torch.log(q.gather(-1, x0.T).T).sum())
        bound = integrated_bound(graph, noise, oracle, x0)
        assert abs(bound - truth) < 1e-3 * truth, (bound, truth)
        est = elbo_nats(oracle, graph, noise, x0, torch.ones_like(x0, dtype=torch.bool), 2000, torch.Generator().manual_seed(0))
        stderr = float(est.std()) / math.sqrt(est.numel())
        assert abs(float(est.mean()) - bound) < 4 * stderr + 1e-3


@pytest.mark.parametrize("name, method, steps", [("absorb", "analytic", 16), ("absorb", "euler", 256),
                                                 ("uniform", "analytic", 64), ("uniform", "euler", 512)])
def test_samplers_reproduce_a_known_distribution(name, method, steps) -> None:
    graph, noise = GRAPHS[name](4), NOISE[name]
    q = factorised(4, 3, seed=3)
    x = sample(Oracle(graph, q), graph, noise, (20000, 3), steps, method, generator=torch.Generator().manual_seed(0))
    assert x.min() >= 0 and x.max() < 4  # in range: no [MASK] left
    freq = torch.stack([torch.bincount(x[:, i], minlength=4) for i in range(3)]).double() / x.shape[0]
    assert (freq - q).abs().max() < 0.025, (freq, q)


def tiny_denoiser(num_tokens: int = 3, name: str = "standard") -> torch.nn.Module:
    cfg = {"model": {"name": name, "d_model": 16, "n_layers": 1, "n_heads": 2, "mlp_ratio": 2.0, "dropout": 0.0, "cond_dim": 8},
           "diffusion": {"graph": "absorb"}}
    model = build_model(cfg, num_tokens).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.7, generator=torch.Generator().manual_seed(p.numel()))
    return model


class Float64Denoiser(torch.nn.Module):
    """A full-precision wrapper: the denoiser contract without the fast ``logits_at`` path."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t, sigma):
        return self.model(x_t, sigma.double())


def every_sequence(n: int, length: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(n), repeat=length)))


def test_exact_likelihood_is_a_normalised_distribution_and_the_ordered_sampler_draws_from_it() -> None:
    model, graph, noise = tiny_denoiser(), Absorbing(3), LogLinearNoise()
    xs = every_sequence(3, 3)
    ll = exact_log_likelihood(model, model.graph, noise, xs, variants_per_call=7)
    assert abs(float(ll.double().exp().sum()) - 1.0) < 1e-6
    assert ll.double().exp().std() > 0.01  # not the uniform distribution: the test has teeth
    generic = exact_log_likelihood(Float64Denoiser(model), model.graph, noise, xs)
    torch.testing.assert_close(generic, ll, atol=1e-5, rtol=0)
    draws = sample(model, graph, noise, (30000, 3), 3, "ordered", generator=torch.Generator().manual_seed(0))
    index = (draws * torch.tensor([9, 3, 1])).sum(-1)
    freq = torch.bincount(index, minlength=27).double() / draws.shape[0]
    assert (freq - ll.double().exp()).abs().max() < 0.015


def test_exact_likelihood_counts_only_loss_mask_positions_as_conditionals() -> None:
    model, noise = tiny_denoiser(), LogLinearNoise()
    xs = every_sequence(3, 3)
    mask = torch.tensor([False, True, True]).expand_as(xs)
    ll = exact_log_likelihood(model, model.graph, noise, xs, mask)
    # for each revealed first token the last two form a normalised distribution
    per_context = ll.double().exp().view(3, 9).sum(-1)
    torch.testing.assert_close(per_context, torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)


def test_exact_likelihood_refuses_the_uniform_graph() -> None:
    with pytest.raises(ValueError, match="absorbing"):
        exact_log_likelihood(tiny_denoiser(), Uniform(3), LogLinearNoise(), every_sequence(3, 2))
    with pytest.raises(ConfigError, match="absorb"):
        sample(tiny_denoiser(), Uniform(3), LogLinearNoise(), (2, 2), 2, "ordered")
    with pytest.raises(ConfigError, match="unknown sampler"):
        sample(tiny_denoiser(), Absorbing(3), LogLinearNoise(), (2, 2), 2, "ddim")


def test_autoregressive_baseline_is_normalised_and_its_sampler_matches() -> None:
    model = tiny_denoiser(name="ar")
    xs = every_sequence(3, 3)
    with torch.no_grad():
        nll = model.nll(xs)
    assert abs(float((-nll).exp().sum()) - 1.0) < 1e-9
    draws = model.generate((30000, 3), torch.Generator().manual_seed(0))
    freq = torch.bincount((draws * torch.tensor([9, 3, 1])).sum(-1), minlength=27).double() / draws.shape[0]
    assert (freq - (-nll).exp()).abs().max() < 0.015
    # causal: the prediction at position i ignores later tokens
    a, b = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 0]])
    torch.testing.assert_close(model(a)[:, :2], model(b)[:, :2])


def test_ar_temperature_draws_from_the_tempered_conditionals() -> None:
    model = tiny_denoiser(name="ar")
    xs = every_sequence(3, 3)
    with torch.no_grad():
        logits = model(xs)
    laws = {}
    for temperature in (1.0, 0.4):
        laws[temperature] = (logits / temperature).log_softmax(-1).gather(-1, xs[..., None]).squeeze(-1).sum(-1).exp()
        draws = model.generate((30000, 3), torch.Generator().manual_seed(1), temperature=temperature)
        freq = torch.bincount((draws * torch.tensor([9, 3, 1])).sum(-1), minlength=27).double() / draws.shape[0]
        assert (freq - laws[temperature]).abs().max() < 0.015, temperature
    assert (laws[1.0] - laws[0.4]).abs().max() > 0.05  # the two laws are far apart: the test can tell them apart
    with pytest.raises(ValueError, match="must be > 0"):
        model.generate((1, 3), temperature=0.0)


def test_kv_cached_ar_sampling_equals_rerunning_the_prefix() -> None:
    cfg = {"model": {"name": "ar", "d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_ratio": 2.0, "dropout": 0.0, "cond_dim": 8}}
    model = build_model(cfg, 11).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
    cached = model.generate((64, 12), torch.Generator().manual_seed(3), kv_cache=True)
    rerun = model.generate((64, 12), torch.Generator().manual_seed(3), kv_cache=False)
    assert torch.equal(cached, rerun)
    # the incremental logits are the full forward's, position by position
    cond = model.cond.expand(64, -1)
    inputs = torch.cat([torch.full_like(cached[:, :1], model.bos_id), cached[:, :-1]], dim=1)
    with torch.no_grad(), model.backbone.kv_cache():
        steps = [model.head(model.backbone(model.embed(inputs[:, k : k + 1]), cond), cond) for k in range(12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(cached), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="causal trunk"), tiny_denoiser().backbone.kv_cache():
        pass


def test_unmasking_sampler_draws_the_same_law_as_the_full_reverse_transition() -> None:
    model, noise = tiny_denoiser(), LogLinearNoise()
    for method, steps in (("analytic", 6), ("euler", 12)):
        laws = []
        for m in (model, Float64Denoiser(model)):  # the second has no ``logits``: the generic sampler
            stats = {}
            draws = sample(m, model.graph, noise, (40000, 3), steps, method, generator=torch.Generator().manual_seed(2), stats=stats)
            laws.append(torch.bincount((draws * torch.tensor([9, 3, 1])).sum(-1), minlength=27).double() / draws.shape[0])
            assert draws.max() < 3
        assert stats["network_calls_per_sample"] == steps + 1
        assert (laws[0] - laws[1]).abs().max() < 0.012, method
        assert laws[0].max() > 2 * laws[0].min()  # not uniform: the comparison has teeth


def test_unmasking_sampler_runs_a_sequence_only_when_one_of_its_positions_unmasks() -> None:
    def model(time_conditioning: bool):
        cfg = {"model": {"name": "standard", "d_model": 16, "n_layers": 1, "n_heads": 2, "mlp_ratio": 2.0, "dropout": 0.0,
                         "cond_dim": 8, "time_conditioning": time_conditioning}, "diffusion": {"graph": "absorb"}}
        m = build_model(cfg, 7).double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
        return m

    noise, steps, shape = LogLinearNoise(), 64, (32, 6)
    for time_conditioning in (False, True):
        m, stats = model(time_conditioning), {}
        x = sample(m, m.graph, noise, shape, steps, "analytic", generator=torch.Generator().manual_seed(5), stats=stats)
        assert x.max() < 7
        # at most one call per position (the steps where it unmasks) plus the final step: ≤ 7, not 65
        assert 1 <= stats["network_calls_per_sample"] <= shape[1] + 1
    with pytest.raises(ConfigError, match="time_conditioning=false needs diffusion=absorb"):
        build_model({"model": {"name": "standard", "d_model": 16, "n_layers": 1, "n_heads": 2, "mlp_ratio": 2.0,
                               "dropout": 0.0, "cond_dim": 8, "time_conditioning": False},
                     "diffusion": {"graph": "uniform"}}, 7)
