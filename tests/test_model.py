"""The standard denoiser: contract, initialisation, configuration errors."""
from __future__ import annotations

import math

import pytest
import torch

from bijdiff import build_model
from bijdiff.diffusion import NEVER, LogLinearNoise, dwdse, stratified_times
from bijdiff.errors import ConfigError


def small_cfg(**model):
    m = {"name": "standard", "d_model": 32, "n_layers": 2, "n_heads": 4, "mlp_ratio": 2.0, "dropout": 0.0, "cond_dim": 16}
    m.update(model)
    return {"model": m, "diffusion": {"graph": "absorb"}, "data": {"vocab_size": 65}}


def test_denoiser_contract_shapes_mask_and_current_token() -> None:
    model = build_model(small_cfg())
    graph = model.graph
    assert graph.num_tokens == 64 and graph.dim == 65
    x = torch.randint(graph.dim, (3, 11))
    out = model(x, torch.rand(3) + 0.1)
    assert out.shape == (3, 11, graph.dim) and out.dtype == torch.float32
    unmasked = x != graph.mask_id
    assert (out[unmasked][:, graph.mask_id] == NEVER).all()
    assert (out.gather(-1, x[..., None]) == 0).all()


def test_fresh_model_gives_uniform_scores_and_ln_vocab_loss() -> None:
    """Zero-initialised head: step 0 starts at the uniform score, loss ≈ ln(vocab) per token."""
    torch.manual_seed(0)
    vocab = 513
    cfg = small_cfg()
    cfg["data"]["vocab_size"] = vocab
    model = build_model(cfg)
    graph, noise = model.graph, LogLinearNoise()
    x0 = torch.randint(graph.num_tokens, (64, 32))
    sigma = torch.full((64,), 0.5)
    x_t = graph.sample_transition(x0, sigma)
    out = model(x_t, sigma)
    masked_rows = out[x_t == graph.mask_id][:, : graph.num_tokens]
    assert torch.allclose(masked_rows, masked_rows[:, :1].expand_as(masked_rows))
    t = stratified_times(64, "cpu", 1e-3)
    per_token = dwdse(model, graph, noise, x0, t).sum() / x0.numel()
    assert abs(per_token.item() - math.log(graph.num_tokens)) < 0.1 * math.log(graph.num_tokens)


def test_gradients_reach_every_parameter_after_a_step() -> None:
    torch.manual_seed(0)
    model = build_model(small_cfg())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    noise = LogLinearNoise()
    x0 = torch.randint(64, (8, 16))
    for _ in range(3):  # step 1 moves the zero head, step 2 the zero gates, step 3 reaches all
        opt.zero_grad()
        dwdse(model, model.graph, noise, x0, stratified_times(8, "cpu", 0.1)).mean().backward()
        opt.step()
    silent = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not silent, silent


def test_sequence_positions_matter() -> None:
    """Rotary attention makes the output depend on where tokens sit, not only which."""
    torch.manual_seed(0)
    model = build_model(small_cfg())
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randint(64, (1, 8))
    x[0, 3] = model.graph.mask_id
    sigma = torch.tensor([1.0])
    a = model(x, sigma)[0, 3]
    rolled = torch.roll(x, 2, dims=1)
    b = model(rolled, sigma)[0, 5]
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"n_heads": 3}, "model.d_model=32 must be divisible by model.n_heads=3"),
        ({"n_layers": 0}, "model.n_layers must be ≥ 1"),
        ({"d_model": 30, "n_heads": 10}, "head width d_model/n_heads=3 must be even for rotary positions"),
        ({"name": "transformerXL"}, "unknown model.name='transformerXL'"),
    ],
)
def test_impossible_model_configs_raise_clear_errors(override, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_model(small_cfg(**override))


def test_the_gated_mlp_keeps_the_parameter_count_and_is_checked() -> None:
    def build(mlp: str) -> torch.nn.Module:
        cfg = {"model": {"name": "standard", "d_model": 48, "n_layers": 2, "n_heads": 2, "mlp_ratio": 4.0, "dropout": 0.0,
                         "cond_dim": 16, "mlp": mlp}, "diffusion": {"graph": "absorb"}, "data": {"vocab_size": 64}}
        return build_model(cfg)

    gelu, swiglu = (sum(p.numel() for p in build(kind).parameters()) for kind in ("gelu", "swiglu"))
    assert abs(swiglu - gelu) / gelu < 0.005, (gelu, swiglu)
    x = torch.randint(0, 63, (2, 8))
    assert build("swiglu")(x, torch.ones(2)).shape == (2, 8, 64)
    with pytest.raises(ConfigError, match="model.mlp='relu'"):
        build("relu")
