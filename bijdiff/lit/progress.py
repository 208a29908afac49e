"""Progress reporting: rich bars on a terminal, plain lines (for logs and CI) otherwise.

Private Lightning names (pinned range in pyproject.toml): ``RichProgressBar._get_train_description``.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from ..errors import ConfigError
from ..progress import progress_line


class PlainProgress(ProgressBar):
    """Prints one line every ``every`` steps: step, loss, tokens/s and ETA; and each validation."""

    def __init__(self, every: int = 50) -> None:
        super().__init__()
        self.every = max(1, every)
        self._enabled = True
        self._start: float | None = None
        self._start_step = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._start_step = trainer.global_step  # a resumed run's rate counts its own steps only

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if not self._enabled or step % self.every != 0 or trainer.global_rank != 0:
            return
        m = trainer.callback_metrics
        elapsed = time.perf_counter() - (self._start or time.perf_counter())
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        loss = f" loss {float(m['train/loss']):.4f}" if "train/loss" in m else ""
        speed = f" {float(m['train/tokens_per_s']):,.0f} tok/s" if "train/tokens_per_s" in m else ""
        print(progress_line("step", step, total, elapsed, counted=step - self._start_step, details=loss + speed), flush=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        if self._enabled and trainer.global_rank == 0 and "val/nll" in m and not trainer.sanity_checking:
            bound = " bound" if pl_module.objective.is_bound else ""
            print(f"validation @ step {trainer.global_step}: nll{bound} {float(m['val/nll']):.4f} nats/token, "
                  f"ppl{bound} {float(m['val/ppl']):.2f}", flush=True)


class StepRichProgressBar(RichProgressBar):
    """Lightning's rich bar, without its ``Epoch 0/-2`` when training is counted in steps (``max_epochs=-1``)."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 0:
            return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"
        return super()._get_train_description(current_epoch)


def progress_bar(style: str = "auto", every: int = 50) -> ProgressBar:
    """``rich`` on a terminal, ``plain`` lines otherwise (``auto``), or the one asked for."""
    if style not in ("auto", "rich", "plain"):
        raise ConfigError(f"callbacks.progress.style must be auto, rich or plain, got {style!r}")
    if style == "rich" or (style == "auto" and sys.stdout.isatty()):
        return StepRichProgressBar()
    return PlainProgress(every)
