"""``mode=invert``: how exactly a checkpoint's trunk inverts, measured on evaluation data."""
from __future__ import annotations

import copy
from typing import Any

import torch
from omegaconf import DictConfig

from ..lit import LitLanguageModel
from ..lit.invertibility import trunk_round_trip
from ..models import Denoiser
from ..nn import NotInvertibleError
from .checkpoint import load_split


def inversion_metrics(cfg: DictConfig, module: LitLanguageModel, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Reconstruction error (fp32 and fp64), log-det statistics and token round trip over ``invert.batches``."""
    if not isinstance(model, Denoiser):
        raise NotInvertibleError(f"model={module.hparams['cfg']['model']['name']} has no invertible trunk: use a model=bijective checkpoint")
    model.require_bijective()
    datamodule, _, _ = load_split(cfg, module)
    model64 = copy.deepcopy(model).cpu().double()  # the fp64 reference runs on the host: MPS has no float64
    stats: dict[str, list[float]] = {}
    for i, batch in enumerate(datamodule.eval_dataloader(cfg.split)):
        if i >= int(cfg.invert.batches):
            break
        x0 = batch["input_ids"].to(device)
        sigma = torch.linspace(0.05, 5.0, x0.shape[0], device=device)  # spread over noise levels
        for precision, m in (("fp32", model), ("fp64", model64)):
            reference = next(m.parameters())
            for key, value in trunk_round_trip(m, x0.to(reference.device), sigma.to(reference.device, reference.dtype)).items():
                stats.setdefault(f"{key}_{precision}", []).append(value)
    worst = {"rel_error", "logdet_sum_error"}
    metrics: dict[str, Any] = {"split": cfg.split, "batches": len(next(iter(stats.values())))}
    for key, values in stats.items():
        base = key.rsplit("_", 1)[0]
        metrics[key] = max(values) if base in worst else (min(values) if base == "token_round_trip" else sum(values) / len(values))
    print({k: f"{v:.3g}" if isinstance(v, float) else v for k, v in metrics.items()}, flush=True)
    return metrics
