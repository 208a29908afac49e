"""Bijective and hybrid denoisers: parameter parity, latent round trip, errors, memory-efficient = plain."""
from __future__ import annotations

import copy

import pytest
import torch

from bijdiff import build_model
from bijdiff.diffusion import LogLinearNoise, dwdse
from bijdiff.nn import Bijection, NotInvertibleError

from .test_nn import perturbed


def cfg(name: str, **model):
    m = {"name": name, "d_model": 32, "n_layers": 3, "n_heads": 4, "mlp_ratio": 2.0, "dropout": 0.0, "cond_dim": 16,
         "coupling": "additive", "affine_clamp": 2.0, "memory_efficient": True, "mixing": "none", "actnorm": False, "layers": "RRSS", "merge": "residual"}
    m.update(model)
    return {"model": m, "diffusion": {"graph": "absorb"}, "data": {"vocab_size": 65}}


def test_bijective_parameter_count_matches_standard_at_default_size() -> None:
    full = {"d_model": 256, "n_layers": 4, "n_heads": 4, "mlp_ratio": 4.0, "cond_dim": 128}
    standard = sum(p.numel() for p in build_model(cfg("standard", **full) | {"data": {"vocab_size": 8192}}).parameters())
    bijective = sum(p.numel() for p in build_model(cfg("bijective", **full) | {"data": {"vocab_size": 8192}}).parameters())
    assert abs(bijective - standard) / standard <= 0.05


def test_backbone_is_a_bijection_with_dim_and_cond_dim() -> None:
    model = build_model(cfg("bijective"))
    assert isinstance(model.backbone, Bijection)
    assert model.backbone.dim == 64 and model.backbone.cond_dim == 16
    h, c = torch.randn(2, 5, 64), torch.randn(2, 16)
    y, logdet = model.backbone(h, c)
    assert y.shape == h.shape and logdet.shape == (2,)


@pytest.mark.parametrize("options", [{}, {"coupling": "affine", "mixing": "lu", "actnorm": True}])
def test_latent_round_trip_recovers_every_token(options) -> None:
    torch.manual_seed(0)
    model = build_model(cfg("bijective", **options))
    model.train()
    model(torch.randint(64, (4, 12)), torch.rand(4))  # ActNorm data initialisation, if any
    perturbed(model.backbone, std=0.05, gate_std=0.05).eval()
    x = torch.randint(model.graph.dim, (4, 12))
    sigma = torch.rand(4) + 0.1
    with torch.no_grad():
        y, _ = model.encode(x, sigma)
        assert (y - torch.cat([model.embed(x)] * 2, -1)).abs().max() > 0.1  # the trunk did something
        assert torch.equal(model.decode_latent(y, sigma), x)


@pytest.mark.parametrize("name, message", [("hybrid", r"trunk RRSS is not invertible: layer\(s\) 2, 3 are standard"),
                                           ("standard", r"layer\(s\) 0, 1, 2 are standard")])
def test_inverse_of_non_invertible_trunks_names_the_standard_layers(name, message) -> None:
    model = build_model(cfg(name))
    with pytest.raises(NotInvertibleError, match=message):
        model.backbone.inverse(torch.randn(1, 2, 32), torch.randn(1, 16))
    with pytest.raises(NotInvertibleError, match=message):
        model.encode(torch.randint(64, (1, 4)), torch.rand(1))


@pytest.mark.parametrize("name", ["bijective", "hybrid"])
def test_memory_efficient_model_gradients_equal_plain_autograd(name) -> None:
    """Whole denoiser in fp64, dropout on: parameters (embedding and time MLP included) match."""
    torch.manual_seed(0)
    efficient = build_model(cfg(name, dropout=0.1, coupling="affine", mixing="lu")).double()
    perturbed(efficient, std=0.05, gate_std=0.1)
    plain = copy.deepcopy(efficient)
    for module in plain.modules():
        if hasattr(module, "memory_efficient"):
            module.memory_efficient = False
    x0 = torch.randint(64, (4, 10))
    t = torch.tensor([0.2, 0.4, 0.6, 0.9])
    grads = []
    for model in (plain, efficient):
        model.train()
        torch.manual_seed(5)
        loss = dwdse(model, model.graph, LogLinearNoise(), x0, t, generator=torch.Generator().manual_seed(1)).sum()
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for n, g in grads[0].items():
        other = grads[1][n]
        assert other is not None, n
        assert ((other - g).abs().max() / g.abs().max().clamp_min(1e-30)).item() < 1e-10, n
    assert grads[0]["embed.weight"].abs().max() > 0 and grads[0]["sigma_embed.mlp.0.weight"].abs().max() > 0


def test_a_state_of_the_wrong_width_is_a_clear_error() -> None:
    from bijdiff.nn.reversible import ReversibleBlock

    block = ReversibleBlock(8, 4, 2, 2.0).eval()
    for bad in (15, 8):  # odd, and even but not two streams of 8
        x = torch.randn(1, 3, bad)
        with pytest.raises(ValueError, match=f"state must be 16 wide \\(even\\), got {bad}"):
            block(x, torch.randn(1, 4))
        with pytest.raises(ValueError, match=f"got {bad}"):
            block.inverse(x, torch.randn(1, 4))


def test_unknown_coupling_and_mixing_and_bad_pattern_are_config_errors() -> None:
    from bijdiff.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown model.coupling='multiplicative'"):
        build_model(cfg("bijective", coupling="multiplicative"))
    with pytest.raises(ConfigError, match="unknown model.mixing='householder'"):
        build_model(cfg("bijective", mixing="householder"))
    with pytest.raises(ConfigError, match="pattern of R and S"):
        build_model(cfg("hybrid", layers="RRXS"))
    with pytest.raises(ConfigError, match="unknown model.merge='max'"):
        build_model(cfg("bijective", merge="max"))


@pytest.mark.parametrize("merge", ["mean", "residual"])
def test_fresh_bijective_trunk_hands_the_embedding_to_the_head(merge) -> None:
    """Zero gates make the trunk the identity; both merges then give back the embedding."""
    model = build_model(cfg("bijective", merge=merge))
    x = torch.randint(64, (2, 7))
    h, _ = model.features(x, torch.rand(2))
    torch.testing.assert_close(h, model.embed(x))
