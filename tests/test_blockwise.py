"""The window cache and the blockwise sampler: what is exact, what is cached, and the block order."""
from __future__ import annotations

import pytest
import torch

from bijdiff.diffusion import Absorbing, GeometricNoise, LogLinearNoise, Uniform, sample
from bijdiff.errors import ConfigError
from bijdiff.models import build_model
from bijdiff.nn.layers import window_cache

MODEL = {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_ratio": 2.0, "dropout": 0.0, "cond_dim": 8, "coupling": "affine",
         "affine_clamp": 2.0, "memory_efficient": True, "mixing": "lu", "actnorm": True, "merge": "residual", "layers": "RS"}
V, L = 11, 12


def tiny(name: str, graph: str = "absorb") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model({"model": {**MODEL, "name": name}, "diffusion": {"graph": graph}}, V).double().eval()
    for p in model.parameters():  # adaLN gates start at zero; give every layer a say
        torch.nn.init.normal_(p, std=0.3)
    return model


@pytest.mark.parametrize("name", ["standard", "bijective", "hybrid"])
def test_a_window_call_reads_the_other_positions_from_the_cache(name) -> None:
    """Right after a whole-sequence call, a call over a window with the same tokens gives the whole call's logits
    there (to float64 rounding): it attends to every position. The window alone, uncached, does not."""
    model = tiny(name)
    x = torch.randint(V, (3, L))
    sigma = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    with torch.no_grad():
        whole = model.logits(x, sigma)
        with window_cache(model) as window:
            assert torch.allclose(model.logits(x, sigma), whole, rtol=0, atol=1e-12)  # fills the cache
            window.start = 4
            windowed = model.logits(x[:, 4:8], sigma)
        alone = model.logits(x[:, 4:8], sigma)
    assert torch.allclose(windowed, whole[:, 4:8], rtol=0, atol=1e-10)
    assert (alone - whole[:, 4:8]).abs().max() > 1e-3


def test_the_cache_is_stale_outside_the_window_and_fresh_inside() -> None:
    """After the window's tokens change, a window call differs from a whole call (the others' keys predate the
    change) but sees the change itself: it differs from the call before the change too."""
    model = tiny("standard")
    x = torch.randint(V, (2, L))
    sigma = torch.ones(2, dtype=torch.float64)
    y = x.clone()
    y[:, 5] = (x[:, 5] + 1) % V
    with torch.no_grad():
        with window_cache(model) as window:
            model.logits(x, sigma)
            window.start = 4
            before = model.logits(x[:, 4:8], sigma)
            after = model.logits(y[:, 4:8], sigma)
        whole = model.logits(y, sigma)[:, 4:8]
    assert (after - before).abs().max() > 1e-3 and (after - whole).abs().max() > 1e-6


def test_the_window_cache_refuses_a_call_that_does_not_fit_and_the_causal_model() -> None:
    model = tiny("standard")
    sigma = torch.ones(2, dtype=torch.float64)
    with torch.no_grad(), window_cache(model) as window:
        model.logits(torch.randint(V, (2, L)), sigma)
        window.start = 10
        with pytest.raises(ValueError, match="does not fit"):
            model.logits(torch.randint(V, (2, 4)), sigma)
    ar = build_model({"model": {**MODEL, "name": "ar"}, "diffusion": {"graph": "absorb"}}, V)
    with pytest.raises(ValueError, match="KV cache"), window_cache(ar):
        pass


@pytest.mark.parametrize("name", ["standard", "bijective"])
def test_blockwise_unmasks_the_blocks_left_to_right_and_keeps_the_given_tokens(name) -> None:
    """Each block's first call is whole and sees the earlier blocks clean and the later ones masked (given tokens
    aside); its other calls run the block's positions only; ``steps`` calls per sample; nothing masked at the end."""
    model = tiny(name)
    mask = model.graph.mask_id
    seen: list[torch.Tensor] = []
    model.embed.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    given = torch.full((L,), -1)
    given[:2], given[-1] = torch.tensor([3, 4]), 5
    stats: dict[str, float] = {}
    x = sample(model, model.graph, LogLinearNoise(), (4, L), 6, "blockwise", generator=torch.Generator().manual_seed(0),
               stats=stats, given=given, blocks=3)
    assert stats["network_calls_per_sample"] == 6 and len(seen) == 6
    assert (x[:, :2] == given[:2]).all() and (x[:, -1] == 5).all() and (x != mask).all()
    for block, (lo, hi) in enumerate([(0, 4), (4, 8), (8, 12)]):
        first, second = seen[2 * block], seen[2 * block + 1]
        assert first.shape == (4, L) and second.shape == (4, hi - lo)
        assert (first[:, :lo] != mask).all() and (first[:, hi:-1] == mask).all() and (first[:, -1] == 5).all()
        assert (second != mask).any(-1).all()  # the first call of the block unmasked some of it
    assert (seen[-1] == x[:, 8:]).logical_or(seen[-1] == mask).all()


def test_blockwise_checks_its_blocks_and_graph() -> None:
    model = tiny("standard")
    for steps, blocks in [(6, 4), (4, 0), (26, 13)]:
        with pytest.raises(ConfigError, match="sample.blocks"):
            sample(model, model.graph, LogLinearNoise(), (2, L), steps, "blockwise", blocks=blocks)
    uniform = tiny("standard", "uniform")
    with pytest.raises(ConfigError, match="blockwise sampler .* diffusion=absorb"):
        sample(uniform, uniform.graph, GeometricNoise(), (2, L), 4, "blockwise", blocks=2)
    assert isinstance(model.graph, Absorbing) and isinstance(uniform.graph, Uniform)
