"""Device placement and dtype discipline of the diffusion code, checked on a CPU-only machine.

Placement: inside ``with torch.device("meta")`` every tensor created without an explicit device
lands on ``meta``, and mixing it with the CPU inputs raises; so code that passes means every
tensor it creates follows its input's device (what CUDA and MPS need). Dtype: MPS has no
float64, so a dispatch mode fails on any float64 result in training and evaluation forwards.
``BIJDIFF_TEST_DEVICE=cuda`` (or ``mps``) runs the last test on that device.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import bijdiff.diffusion.sampling as sampling
from bijdiff.diffusion import build_noise, exact_log_likelihood, sample
from bijdiff.models import build_model
from bijdiff.objectives import build_objective

DIFFUSION = {"absorb": {"graph": "absorb", "noise": {"name": "loglinear", "eps": 1e-3}, "t_min": 1e-3},
             "uniform": {"graph": "uniform", "noise": {"name": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0}, "t_min": 1e-3}}
DEVICE = os.environ.get("BIJDIFF_TEST_DEVICE", "cpu")  # bench/device_check.py runs this file with its accelerator
CASES = [("standard", "absorb"), ("bijective", "absorb"), ("standard", "uniform"), ("bijective", "uniform"), ("ar", "absorb")]


def tiny(name: str, graph: str) -> tuple[torch.nn.Module, dict]:
    m = {"name": name, "d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_ratio": 2.0, "dropout": 0.1, "cond_dim": 8,
         "coupling": "affine", "affine_clamp": 2.0, "memory_efficient": True, "mixing": "lu", "actnorm": True, "merge": "residual"}
    cfg = {"model": m, "diffusion": DIFFUSION[graph]}
    torch.manual_seed(0)
    return build_model(cfg, 11).train(), cfg


def exercise(model: torch.nn.Module, cfg: dict, x0: torch.Tensor) -> None:
    """Everything a run does with a model: training loss and backward, evaluation, sampling."""
    mask = torch.ones_like(x0, dtype=torch.bool)
    objective = build_objective(cfg, model)
    objective.train_nats(model, x0, mask).sum().backward()
    model.eval()
    objective.eval_nats(model, x0, mask, 2, torch.Generator().manual_seed(0))
    if cfg["model"]["name"] == "ar":
        model.generate((2, 5), torch.Generator().manual_seed(0), x0.device)
        return
    noise = build_noise(cfg["diffusion"])
    methods = ["euler", "analytic"]
    if model.graph.absorbing:
        exact_log_likelihood(model, model.graph, noise, x0, mask, variants_per_call=5)
        methods += ["ordered", "confident", "blockwise"]
    for method in methods:
        steps = 6 if method == "blockwise" else 3  # blockwise: 3 blocks of 2 calls, the second over the block only
        out = sample(model, model.graph, noise, (2, 5), steps, method, x0.device, torch.Generator().manual_seed(0), blocks=3)
        assert out.device == x0.device and int(out.max()) < model.graph.num_tokens


@pytest.mark.parametrize("name, graph", CASES)
def test_every_created_tensor_follows_the_input_device(name, graph) -> None:
    model, cfg = tiny(name, graph)
    x0 = torch.randint(11, (3, 7))
    with torch.device("meta"):  # a tensor made without device=... would be meta and clash with the CPU inputs
        exercise(model, cfg, x0)


class NoFloat64(TorchDispatchMode):
    """Fails on any op that produces a float64 tensor."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                raise AssertionError(f"{func} produced a float64 tensor (MPS has no float64)")
        return out


@pytest.mark.parametrize("name, graph", CASES)
def test_no_float64_in_training_evaluation_and_mps_sampling(name, graph, monkeypatch) -> None:
    monkeypatch.setattr(sampling, "draw_dtype", lambda device: torch.float32)  # the MPS path
    model, cfg = tiny(name, graph)
    with NoFloat64():
        exercise(model, cfg, torch.randint(11, (3, 7)))


def test_the_float64_guard_has_teeth() -> None:
    model, cfg = tiny("standard", "absorb")
    with pytest.raises(AssertionError, match="float64"), NoFloat64():
        exercise(model, cfg, torch.randint(11, (3, 7)))  # CPU sampling draws in float64 on purpose
    with pytest.raises(RuntimeError, match="meta"), torch.device("meta"):
        torch.zeros(2) + torch.ones(2, device="cpu")


@pytest.mark.parametrize("name, graph", CASES)
def test_a_whole_run_stays_on_the_device_without_float64(name, graph, monkeypatch) -> None:
    """On ``BIJDIFF_TEST_DEVICE`` (the CPU by default; CUDA or MPS when ``bench/device_check.py`` runs it there):
    outputs, parameters and gradients stay on the device, and with float32 draws nothing is float64."""
    monkeypatch.setattr(sampling, "draw_dtype", lambda device: torch.float32)
    model, cfg = tiny(name, graph)
    model.to(DEVICE)
    with NoFloat64():
        exercise(model, cfg, torch.randint(11, (3, 7), device=DEVICE))
    device = torch.device(DEVICE).type
    assert all(p.device.type == device and (p.grad is None or p.grad.device == p.device) for p in model.parameters())
