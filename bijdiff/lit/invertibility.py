"""A callback that checks, while training, that the bijective trunk still inverts exactly.

Private Lightning names (pinned range in pyproject.toml): ``_TrainingEpochLoop._batches_that_stepped`` (the logging step).
"""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


@torch.no_grad()
def trunk_round_trip(model: torch.nn.Module, x0: torch.Tensor, sigma: torch.Tensor) -> dict[str, float]:
    """Relative reconstruction error of the trunk on ``x0`` and its log-det statistics."""
    was_training = model.training
    model.eval()
    try:
        y, logdet = model.encode(x0, sigma)
        rebuilt, logdet_inv = model.backbone.inverse(y, model.condition(sigma))
    finally:
        model.train(was_training)
    state = model.embed(x0)
    first, second = rebuilt.chunk(2, dim=-1)
    error = (torch.maximum((first - state).abs().max(), (second - state).abs().max()) / state.abs().max().clamp_min(1e-30)).item()
    tokens = model.nearest_tokens(first)
    return {
        "rel_error": error,
        "logdet_mean": logdet.float().mean().item(),
        "logdet_std": logdet.float().std().item() if logdet.numel() > 1 else 0.0,
        "logdet_sum_error": (logdet + logdet_inv).abs().max().item(),
        "token_round_trip": (tokens == x0).float().mean().item(),
    }


class InvertibilityMonitor(L.Callback):
    """Every ``every_n_steps`` steps: the trunk's reconstruction error and log-det on a validation batch.

    Logs ``invert/rel_error``, ``invert/logdet_mean``, ``invert/logdet_std`` and
    ``invert/token_round_trip``, and warns when the error passes ``threshold``. Does nothing
    (after saying so once) for models whose trunk is not a bijection.
    """

    def __init__(self, every_n_steps: int = 200, threshold: float = 1e-4, batch_size: int = 8) -> None:
        super().__init__()
        self.every_n_steps = max(1, every_n_steps)
        self.threshold = threshold
        self.batch_size = batch_size
        self._batch: torch.Tensor | None = None
        self._announced = False

    def _validation_batch(self, trainer: L.Trainer) -> torch.Tensor:
        if self._batch is None:
            batch = next(iter(trainer.datamodule.val_dataloader()))
            self._batch = batch["input_ids"][: self.batch_size]
        return self._batch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        model = pl_module.model
        if not model.bijective:
            if not self._announced:
                log.info("invertibility monitor: %s trunk is not a bijection, nothing to monitor", type(model.backbone).__name__)
                self._announced = True
            return
        if trainer.global_step % self.every_n_steps != 0:
            return
        x0 = self._validation_batch(trainer).to(pl_module.device)
        sigma = torch.linspace(0.1, 5.0, x0.shape[0], device=pl_module.device)
        stats = trunk_round_trip(model, x0, sigma)
        if trainer.is_global_zero:
            for logger in trainer.loggers:  # once per check, not repeated at every logging step
                # at the step number Lightning gives this batch's train/val rows (the count before its update)
                logger.log_metrics({f"invert/{k}": v for k, v in stats.items()}, step=trainer.fit_loop.epoch_loop._batches_that_stepped)
        if stats["rel_error"] > self.threshold:
            log.warning(
                "invertibility monitor: trunk reconstruction error %.3g at step %d exceeds %.3g",
                stats["rel_error"], trainer.global_step, self.threshold,
            )
