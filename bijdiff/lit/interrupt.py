"""A checkpoint written when training stops early (Ctrl-C, NaN limit, a crash), and how to resume.

Private Lightning names (pinned range in pyproject.toml): the checkpoint's ``loops`` layout (batch progress,
``_batches_that_stepped``).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from .loop_state import save_between_steps

log = logging.getLogger("bijdiff")


class InterruptCheckpoint(Callback):
    """Saves ``<dirpath>/<filename>.ckpt`` when training stops early and says how to resume from it.

    The first Ctrl-C (SIGINT) is graceful: the step under way finishes (a validation under way
    too), the checkpoint is written at that step's end, where Lightning's own step checkpoints are
    written, and the run exits with a non-zero status. Resumed with ``ckpt_path=<it>`` in the same
    directory, the run then logs the same steps with the same values as an uninterrupted one. A
    second Ctrl-C interrupts at once, like any other exception: the checkpoint then holds the
    state as it was (the live weights even when validation had the EMA swapped in), and a batch
    cut mid-step is trained again. Nothing is written when training stopped before its first
    step. The file is deleted when a later run in the same directory finishes normally.

    Not Lightning's ``OnExceptionCheckpoint``: with one of those among the callbacks, Lightning
    turns ``fit(ckpt_path=None)`` into ``"last"`` and silently resumes whatever run the directory
    holds.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted", check_every_n_steps: int = 10) -> None:
        super().__init__()
        self.dirpath, self.filename = dirpath, filename
        self.check_every = max(1, check_every_n_steps)  # with several processes: how often they agree to stop
        self._cut = False  # while this callback writes a checkpoint mid-step
        self._requested = False
        self._saved_at: int | None = None
        self._previous_handler: Any = None

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._requested, self._saved_at = False, None
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once
        print("\nCtrl-C: finishing this step, then saving a checkpoint (Ctrl-C again to stop at once)", flush=True)

    def _restore_handler(self) -> None:
        if self._previous_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        stop = self._requested
        if trainer.world_size > 1:  # every process must save and stop at the same step
            if trainer.global_step % self.check_every != 0:
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or trainer.global_step == 0:
            return
        self._flush_loggers(trainer)
        save_between_steps(trainer, self.ckpt_path)
        self._saved_at = trainer.global_step
        self._restore_handler()
        raise KeyboardInterrupt  # Lightning's shutdown; on_exception sees the checkpoint is written

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()
        if self._saved_at is None:
            if trainer.global_step == 0:  # stopped before the first step (a setup or data error): nothing to resume
                return
            self._flush_loggers(trainer)
            self._cut = True
            try:
                trainer.save_checkpoint(self.ckpt_path, weights_only=False)
            finally:
                self._cut = False
        if trainer.is_global_zero:
            log.warning("training stopped at step %d; to resume: ckpt_path=%s", trainer.global_step, self.ckpt_path)

    @staticmethod
    def _flush_loggers(trainer: L.Trainer) -> None:
        for logger in trainer.loggers:  # rows still buffered (the CSV logger writes once per step) reach the file
            logger.save()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handler()

    def teardown(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        trainer.strategy.remove_checkpoint(self.ckpt_path)  # reached only when training ended normally

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Keep the logging step right across a resume from wherever an exception cut the run.

        On restart Lightning adds one to the loop's count of stepped batches (the x axis of every
        logger) unless the checkpoint was written at the end of a batch's hooks. That is right for
        checkpoints written after a step but before the count moved on, and one off for a run cut
        inside a step (after the count moved on, or after the optimizer step but before the batch
        counted as processed). So store the count that, after Lightning's restart, equals the
        optimizer steps taken.
        """
        if not self._cut or trainer.accumulate_grad_batches != 1:
            return
        loop = checkpoint["loops"]["fit_loop"]
        p = loop["epoch_loop.batch_progress"]["total"]
        at_batch_end = p["started"] == p["ready"] and p["processed"] == p["started"] and p["completed"] == p["processed"]
        loop["epoch_loop.state_dict"]["_batches_that_stepped"] = checkpoint["global_step"] - (0 if at_batch_end else 1)

