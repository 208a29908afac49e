"""``compile=default``: the compiled denoisers compute the eager losses and gradients (inductor, CPU)."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from bijdiff.app.train import train
from bijdiff.errors import ConfigError
from bijdiff.nn.compile import compile_sublayers

from .conftest import tiny_config
from .test_host_sync import tiny_module
from .test_nn import perturbed


def loss_and_grads(module, x0: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    mask = torch.ones_like(x0, dtype=torch.bool)
    torch.manual_seed(0)
    loss = module.objective.train_nats(module.model, x0, mask).sum() / mask.sum()
    params = [p for p in module.model.parameters() if p.requires_grad]
    return loss.detach(), list(torch.autograd.grad(loss, params, allow_unused=True))


def assert_close_grads(a: list[torch.Tensor], b: list[torch.Tensor], rtol: float) -> None:
    for x, y in zip(a, b):
        if x is None or y is None:
            assert x is None and y is None
            continue
        assert (x - y).abs().max() <= rtol * y.abs().max() + 1e-12


@pytest.mark.parametrize("model", ["standard", "bijective"])
def test_compiled_losses_and_gradients_equal_eager(model) -> None:
    """fp32 kernels fused differently: agreement to a few fp32 ulps of the loss (relative 1e-5), not bits.

    With dropout on, the compiled memory-efficient backward replays the compiled forward's masks:
    its gradients equal plain autograd through the same compiled branches."""
    x0 = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(0))
    eager = tiny_module(f"model={model}", "model.dropout=0.0")
    perturbed(eager.model, std=0.05, gate_std=0.3)  # zero gates would make every branch vanish
    compiled = copy.deepcopy(eager)
    assert compile_sublayers(compiled.model) == 4  # 2 blocks × (attention, MLP)
    loss, grads = loss_and_grads(eager, x0)
    loss_c, grads_c = loss_and_grads(compiled, x0)
    assert math.isclose(float(loss_c), float(loss), rel_tol=1e-5)
    assert_close_grads(grads_c, grads, 1e-4)
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())  # checkpoints keep their keys
    if model == "bijective":
        efficient = tiny_module("model=bijective", "model.dropout=0.2")
        perturbed(efficient.model, std=0.05, gate_std=0.3)
        plain = copy.deepcopy(efficient)
        plain.model.backbone.memory_efficient = False
        compile_sublayers(efficient.model)
        compile_sublayers(plain.model)
        _, efficient_grads = loss_and_grads(efficient, x0)
        _, plain_grads = loss_and_grads(plain, x0)
        assert_close_grads(efficient_grads, plain_grads, 1e-4)


def test_training_with_compile_and_a_bad_mode(wiki_files, tmp_path: Path) -> None:
    result = train(tiny_config(wiki_files, tmp_path / "run", tmp_path / "cache", "model=bijective", "compile=default",
                               "trainer.max_steps=2"))
    assert result["global_step"] == 2 and math.isfinite(result["best_val_nll"])
    with pytest.raises(ConfigError, match="compile='fast'"):
        train(tiny_config(wiki_files, tmp_path / "bad", tmp_path / "cache", "compile=fast"))
