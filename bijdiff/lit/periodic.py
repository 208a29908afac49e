"""``last.ckpt`` on a wall-clock interval, so a killed run loses minutes, not hours, of training."""
from __future__ import annotations

import os
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from ..errors import ConfigError
from .loop_state import save_between_steps


class PeriodicCheckpoint(Callback):
    """Writes ``<dirpath>/<filename>.ckpt`` once ``minutes`` of training have passed since the last write.

    Validation writes ``last.ckpt`` too; this covers runs whose validations are far apart (the
    default config validates every 1,000 steps). Written between steps, as the Ctrl-C checkpoint
    is, so a run resumed from it logs every step at its own number. Rank 0's clock decides,
    checked every ``check_every_n_steps`` steps and broadcast, since every rank takes part in saving.
    """

    def __init__(self, dirpath: str, filename: str = "last", minutes: float = 5.0, check_every_n_steps: int = 10) -> None:
        super().__init__()
        if minutes <= 0 or check_every_n_steps < 1:
            raise ConfigError("callbacks.periodic_checkpoint: minutes must be > 0 and check_every_n_steps ≥ 1, "
                              f"got {minutes} and {check_every_n_steps}")
        self.path = os.path.join(dirpath, f"{filename}.ckpt")
        self.seconds, self.check_every = 60.0 * minutes, check_every_n_steps
        self._since = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = time.monotonic()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._since = time.monotonic()  # any checkpoint (a validation's too) restarts the clock

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 0 or trainer.global_step % self.check_every != 0:
            return
        if trainer.strategy.broadcast(time.monotonic() - self._since >= self.seconds, src=0):
            save_between_steps(trainer, self.path)
