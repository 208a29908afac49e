"""A checkpoint written when training stops abnormally (Ctrl-C, NaN limit, a crash), and how to resume."""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import OnExceptionCheckpoint

log = logging.getLogger("bijdiff")


class InterruptCheckpoint(OnExceptionCheckpoint):
    """Saves ``<dirpath>/<filename>.ckpt`` on any exception and says how to resume from it.

    The file holds the model, EMA, optimizer, schedule and data position as they were (the live
    weights even when validation had the EMA swapped in), so ``ckpt_path=<it>`` continues the
    run; a batch interrupted mid-step is trained again. Nothing is written when training stopped
    before its first step. Lightning deletes the file when a later run in the same directory
    finishes normally.
    """

    def on_exception(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step == 0:  # stopped before the first step (a setup or data error): nothing to resume
            return
        super().on_exception(trainer, *args, **kwargs)
        if trainer.is_global_zero:
            log.warning("training stopped at step %d; to resume: ckpt_path=%s", trainer.global_step, self.ckpt_path)
