"""A checkpoint written when training stops abnormally (Ctrl-C, NaN limit, a crash), and how to resume."""
from __future__ import annotations

import logging
import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("bijdiff")


class InterruptCheckpoint(Callback):
    """Saves ``<dirpath>/<filename>.ckpt`` on any exception and says how to resume from it.

    The file holds the model, EMA, optimizer, schedule and data position as they were (the live
    weights even when validation had the EMA swapped in), so ``ckpt_path=<it>`` continues the
    run; a batch interrupted mid-step is trained again. Nothing is written when training stopped
    before its first step. Lightning deletes the file when a later run in the same directory
    finishes normally.

    Not Lightning's ``OnExceptionCheckpoint``: with one of those among the callbacks, Lightning
    turns ``fit(ckpt_path=None)`` into ``"last"`` and silently resumes whatever run the directory
    holds.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        super().__init__()
        self.dirpath, self.filename = dirpath, filename
        self._writing = False

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_exception(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step == 0:  # stopped before the first step (a setup or data error): nothing to resume
            return
        for logger in trainer.loggers:  # rows still buffered (the CSV logger writes once per step) reach the file
            logger.save()
        self._writing = True
        try:
            trainer.save_checkpoint(self.ckpt_path)
        finally:
            self._writing = False
        if trainer.is_global_zero:
            log.warning("training stopped at step %d; to resume: ckpt_path=%s", trainer.global_step, self.ckpt_path)

    def teardown(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        trainer.strategy.remove_checkpoint(self.ckpt_path)  # reached only when training ended normally

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Keep the logging step right across a resume from wherever the run was interrupted.

        On restart Lightning adds one to the loop's count of stepped batches (the x axis of every
        logger) unless the checkpoint was written at the end of a batch's hooks. That is right for
        checkpoints written after a step but before the count moved on, and one off for a run cut
        inside a step (after the count moved on, or after the optimizer step but before the batch
        counted as processed). So store the count that, after Lightning's restart, equals the
        optimizer steps taken.
        """
        if not self._writing or trainer.accumulate_grad_batches != 1:
            return
        loop = checkpoint["loops"]["fit_loop"]
        p = loop["epoch_loop.batch_progress"]["total"]
        at_batch_end = p["started"] == p["ready"] and p["processed"] == p["started"] and p["completed"] == p["processed"]
        loop["epoch_loop.state_dict"]["_batches_that_stepped"] = checkpoint["global_step"] - (0 if at_batch_end else 1)
