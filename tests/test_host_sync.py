"""The training step never waits for the host: no op that reads a device value back on its path.

On a GPU such an op (``.item()``, ``bool(tensor)``, ``nonzero``, a boolean gather whose size
depends on the data) stalls the host until the device has caught up. The CPU has no such stall,
so the test watches for the ops themselves with a dispatch mode, on the path an accelerator takes.
"""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from bijdiff.lit import LitLanguageModel
from bijdiff.lit.module import build_optimizer, gradient_norm, skip_flag

from .conftest import TINY, compose_config

aten = torch.ops.aten
READS_BACK = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.is_nonzero, aten.equal,
              aten._unique2, aten.unique_dim, aten.unique_consecutive, aten.repeat_interleave}


class HostReads(TorchDispatchMode):
    """Records every op that needs a device value on the host (boolean indexing included)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        boolean_index = func.overloadpacket in (aten.index, aten.index_put, aten.index_put_) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
        if func.overloadpacket in READS_BACK or boolean_index:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def training_step(module: LitLanguageModel, optimizer: torch.optim.Optimizer, x0: torch.Tensor) -> None:
    """What a training step runs on the device: loss, non-finite flags of the loss and the gradient norm,
    backward, clipping, the guarded fused update and the EMA (``LitLanguageModel.training_step`` /
    ``on_before_optimizer_step``; Lightning's logging and DDP's all-reduce are not in it)."""
    mask = torch.ones_like(x0, dtype=torch.bool)
    loss = module.objective.train_nats(module.model, x0, mask).sum() / mask.sum()
    bad = (~torch.isfinite(loss.detach())).float()
    loss.backward()
    optimizer.found_inf = skip_flag(bad, gradient_norm(module.model))
    torch.nn.utils.clip_grad_norm_(module.model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    module.ema.update(module.model)


def tiny_module(*overrides: str) -> LitLanguageModel:
    cfg = compose_config("train", [*TINY, *overrides])
    groups = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "diffusion", "optim", "ema", "eval") if k in cfg}
    return LitLanguageModel(groups, num_tokens=40)


@pytest.mark.parametrize("overrides", [["model=standard"], ["model=bijective"], ["model=bijective_affine"],
                                       ["model=hybrid"], ["model=ar"], ["model=standard", "diffusion=uniform"]],
                         ids=lambda o: "-".join(x.split("=")[1] for x in o))
def test_the_training_step_reads_nothing_back_from_the_device(overrides) -> None:
    module = tiny_module(*overrides)
    if module.objective.is_bound:
        module.objective.gather_scored = False  # the accelerators' path (the CPU's default gathers)
    optimizer = build_optimizer(module.model, module.cfg["optim"])
    x0 = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(0))
    training_step(module, optimizer, x0)  # first step: optimizer state is created
    with HostReads() as reads:
        training_step(module, optimizer, x0)
    assert reads.ops == []


def test_the_watch_sees_a_boolean_gather_and_an_item() -> None:
    """The test has teeth: the CPU's gathering path and a host check are both caught."""
    module = tiny_module("model=standard")
    optimizer = build_optimizer(module.model, module.cfg["optim"])
    x0 = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(0))
    module.objective.gather_scored = True
    with HostReads() as reads:
        training_step(module, optimizer, x0)
        bool(torch.isfinite(x0.float()).all())
    assert any("index" in op or "nonzero" in op for op in reads.ops) and any("is_nonzero" in op or "scalar" in op for op in reads.ops)


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_the_fixed_shape_loss_equals_the_gathered_one(graph) -> None:
    """Weighting every position's score entropy by the mask gives the gathered loss and its gradients."""
    module = tiny_module("model=bijective_affine", f"diffusion={graph}")
    model = module.model.eval()  # no dropout: both paths see the same network
    x0 = torch.randint(0, 40, (6, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(x0, dtype=torch.bool)
    results = []
    for gather in (True, False):
        module.objective.gather_scored = gather
        torch.manual_seed(3)
        loss = module.objective.train_nats(model, x0, mask).sum()
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        results.append((loss.detach(), grads))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, rtol=1e-5, atol=0)
    for x, y in zip(ga, gb):
        if x is not None or y is not None:
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


def test_a_nonfinite_step_changes_nothing_on_the_device() -> None:
    """``found_inf = 1`` leaves weights, moments and the step count of the fused AdamW as they were."""
    module = tiny_module("model=bijective")
    optimizer = build_optimizer(module.model, module.cfg["optim"] | {"weight_decay": 0.1})
    x0 = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(0))
    training_step(module, optimizer, x0)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    moments = [{k: v.clone() for k, v in s.items()} for s in optimizer.state.values()]
    loss = module.objective.train_nats(module.model, x0, torch.ones_like(x0, dtype=torch.bool)).sum() * float("nan")
    loss.backward()
    optimizer.found_inf = (~torch.isfinite(loss.detach())).float()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in module.model.state_dict().items())
    assert all(torch.equal(m[k], s[k]) for m, s in zip(moments, optimizer.state.values()) for k in m)


def test_under_a_gradient_scaler_a_nonfinite_step_is_still_skipped() -> None:
    """``precision=16-mixed`` on CUDA steps through AMP's GradScaler: it unscales (and so clipping works),
    finds the NaN/Inf gradients a NaN loss gives and does not step; finite steps go through."""
    module = tiny_module("model=bijective")
    optimizer = build_optimizer(module.model, module.cfg["optim"] | {"weight_decay": 0.1})
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x0 = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(x0, dtype=torch.bool)
    for poison in (1.0, float("nan"), 1.0):
        before = [p.detach().clone() for p in module.model.parameters()]
        with torch.autocast("cpu", dtype=torch.float16):
            loss = module.objective.train_nats(module.model, x0, mask).sum() / mask.sum() * poison
        optimizer.found_inf = (~torch.isfinite(loss.detach())).float()  # what on_before_optimizer_step sets
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # as Lightning's AMP plugin does, before clipping
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        moved = any(not torch.equal(a, p) for a, p in zip(before, module.model.parameters()))
        assert moved == (poison == 1.0)
