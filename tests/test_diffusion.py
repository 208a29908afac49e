"""The diffusion math: noise schedule, log-score contract, DWDSE, stratified times, ELBO (score entropy vs brute force: test_sedd.py)."""
from __future__ import annotations

import math

import pytest
import torch

from bijdiff.diffusion import (
    NEVER, Absorbing, GeometricNoise, LogitScoreModel, LogLinearNoise, build_noise, dwdse, elbo_nats, stratified_times,
)
from bijdiff.errors import ConfigError


def test_loglinear_rate_is_derivative_of_total() -> None:
    noise = LogLinearNoise(1e-3)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64, requires_grad=True)
    total = noise.total(t)
    (grad,) = torch.autograd.grad(total.sum(), t)
    torch.testing.assert_close(noise.rate(t.detach()), grad)
    assert torch.allclose(torch.exp(-noise.total(torch.ones(1, dtype=torch.float64))), torch.tensor(1e-3, dtype=torch.float64))


def test_loglinear_weight_identity_is_one_over_t() -> None:
    """σ̄'(t) / (exp(σ̄(t)) − 1) = 1/t: the masked-diffusion loss weight."""
    noise = LogLinearNoise(1e-3)
    t = torch.linspace(1e-4, 1.0, 200, dtype=torch.float64)
    sigma, dsigma = noise.total(t), noise.rate(t)
    torch.testing.assert_close(dsigma / torch.expm1(sigma), 1.0 / t)


def random_case(n_tokens: int = 7, b: int = 5, length: int = 9, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    graph = Absorbing(n_tokens)
    x0 = torch.randint(n_tokens, (b, length), generator=g)
    sigma = torch.rand(b, generator=g, dtype=dtype) * 3 + 0.01
    x_t = graph.sample_transition(x0, sigma, generator=g)
    log_score = torch.randn(b, length, graph.dim, generator=g, dtype=dtype) * 2
    return graph, x0, x_t, sigma, log_score


def test_log_score_parameterisation_contract() -> None:
    graph, x0, x_t, sigma, _ = random_case()
    log_score = graph.log_score_from_logits(torch.zeros(*x0.shape, graph.num_tokens), x_t, sigma[:, None])
    masked = x_t == graph.mask_id
    assert log_score.shape == (*x0.shape, graph.dim)
    # [MASK] never receives mass (finite, not -inf); the current token has log-score 0
    assert torch.isfinite(log_score).all()
    assert (log_score[~masked][:, graph.mask_id] == NEVER).all()
    assert (log_score.gather(-1, x_t[..., None]) == 0).all()
    # zero logits: uniform score whose total is the true total rate 1/(e^σ − 1)
    total = log_score[masked][:, : graph.num_tokens].exp().sum(-1)
    expected = (1.0 / torch.expm1(sigma.float()))[:, None].expand_as(x_t)[masked]
    torch.testing.assert_close(total, expected)


class Uninformed(torch.nn.Module):
    """An untrained denoiser through the generic (full log-score) path."""

    def __init__(self, graph: Absorbing) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.graph.log_score_from_logits(torch.zeros(*x_t.shape, self.graph.num_tokens), x_t, sigma[:, None])


class UninformedFast(Uninformed, LogitScoreModel):
    """The same model declaring its logits: the closed-form (scored positions only) path."""

    def logits(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*x_t.shape, self.graph.num_tokens)

    def logits_at(self, x_t: torch.Tensor, sigma: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return torch.zeros(int(where.sum()), self.graph.num_tokens)


def test_dwdse_fast_and_generic_paths_agree() -> None:
    graph, noise = Absorbing(50), LogLinearNoise()
    x0 = torch.randint(50, (6, 20), generator=torch.Generator().manual_seed(1))
    t = stratified_times(6, "cpu", 1e-3, torch.Generator().manual_seed(2))
    a = dwdse(Uninformed(graph), graph, noise, x0, t, generator=torch.Generator().manual_seed(3))
    b = dwdse(UninformedFast(graph), graph, noise, x0, t, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_uniform_model_bound_is_log_vocab_per_token() -> None:
    """An uninformed model's ELBO is ln(num_tokens) per token (+ the tiny prior term)."""
    n = 100
    graph, noise = Absorbing(n), LogLinearNoise()
    x0 = torch.randint(n, (64, 32), generator=torch.Generator().manual_seed(0))
    est = elbo_nats(UninformedFast(graph), graph, noise, x0, torch.ones_like(x0, dtype=torch.bool), 8, torch.Generator().manual_seed(0))
    per_token = est.mean() / 32
    assert abs(per_token.item() - math.log(n)) < 0.03 * math.log(n)


def test_stratified_times_cover_each_stratum_once() -> None:
    n, world = 8, 3
    ts = torch.cat([stratified_times(n, "cpu", 0.0, torch.Generator().manual_seed(r), r, world) for r in range(world)])
    assert ((ts > 0) & (ts <= 1)).all()
    bins = torch.floor((1 - ts) * n * world).long().clamp_max(n * world - 1)
    assert sorted(bins.tolist()) == list(range(n * world))
    lo = stratified_times(1000, "cpu", 0.2)
    assert lo.min() >= 0.2 and lo.max() <= 1.0


def test_sample_transition_masks_at_the_right_rate_and_respects_loss_mask() -> None:
    graph = Absorbing(10)
    x0 = torch.randint(10, (4, 20000), generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.1, 0.7, 2.0, 5.0])
    x_t = graph.sample_transition(x0, sigma, generator=torch.Generator().manual_seed(1))
    frac = (x_t == graph.mask_id).float().mean(1)
    torch.testing.assert_close(frac, 1 - torch.exp(-sigma), atol=0.01, rtol=0)
    assert ((x_t == x0) | (x_t == graph.mask_id)).all()
    keep = torch.zeros_like(x0, dtype=torch.bool)
    assert (graph.sample_transition(x0, sigma, keep) == x0).all()


def test_bad_names_and_values_are_config_errors() -> None:
    from bijdiff.diffusion import build_graph

    with pytest.raises(ConfigError, match="unknown diffusion.graph='nope'"):
        build_graph("nope", 10)
    with pytest.raises(ConfigError, match="unknown diffusion.noise"):
        build_noise({"noise": {"name": "cosine"}})
    with pytest.raises(ConfigError, match=r"diffusion.noise=loglinear takes \['eps'\], got \['sigma_max'\]"):
        build_noise({"noise": {"name": "loglinear", "sigma_max": 20.0}})
    with pytest.raises(ConfigError, match="eps"):
        LogLinearNoise(0.0)


@pytest.mark.parametrize("spec, expected", [
    ({"noise": {"name": "loglinear", "eps": 0.01}}, LogLinearNoise(0.01)),
    ({"noise": {"name": "geometric", "sigma_min": 0.001, "sigma_max": 5.0}}, GeometricNoise(0.001, 5.0)),
    # the shorthand diffusion.noise=NAME: the schedule's defaults
    ({"noise": "geometric"}, GeometricNoise()),
    # a checkpoint saved when the schedules' parameters were flat keys of the diffusion group
    ({"noise": "loglinear", "noise_eps": 0.01, "sigma_min": 1e-4, "sigma_max": 20.0}, LogLinearNoise(0.01)),
    ({"noise": "geometric", "noise_eps": 1e-3, "sigma_min": 0.001, "sigma_max": 5.0}, GeometricNoise(0.001, 5.0)),
])
def test_build_noise_reads_each_schedule_its_own_parameters(spec: dict, expected) -> None:
    t = torch.linspace(0, 1, 9)
    for a, b in zip(build_noise(spec)(t), expected(t)):
        assert torch.equal(a, b)
