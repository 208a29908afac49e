"""A checkpoint written when training stops abnormally (Ctrl-C, NaN limit, a crash), and how to resume."""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import OnExceptionCheckpoint

log = logging.getLogger("bijdiff")


class InterruptCheckpoint(OnExceptionCheckpoint):
    """Saves ``<dirpath>/<filename>.ckpt`` on any exception and says how to resume from it.

    The file holds the state after the last finished step (model, EMA, optimizer, schedule,
    data position), so ``ckpt_path=<it>`` continues the run. Lightning deletes it when a later
    run in the same directory finishes normally.
    """

    def on_exception(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_exception(trainer, *args, **kwargs)
        if trainer.is_global_zero:
            log.warning("training stopped at step %d; to resume: ckpt_path=%s", trainer.global_step, self.ckpt_path)
