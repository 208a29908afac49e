"""What Lightning's training loop will do next, read from its own state (for checkpoints written between steps).

Private Lightning names (pinned range in pyproject.toml): ``Trainer._checkpoint_connector.dump_checkpoint``,
``_TrainingEpochLoop._should_check_val_fx``, ``_FitLoop._data_fetcher``, the batch-progress counters
and ``_batches_that_stepped`` in the checkpoint's ``loops`` entry.
"""
from __future__ import annotations

import lightning as L


def validation_follows_step(trainer: L.Trainer) -> bool:
    """Whether Lightning's schedule validates after the last optimizer step (``trainer.global_step``).

    Asked between steps: in ``on_train_batch_start`` of the next one, whose batch Lightning has
    counted as ready but not started (it is left out here), or after training.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    progress = epoch_loop.batch_progress
    ready, should_stop = (progress.total.ready, progress.current.ready), trainer.should_stop
    # as a restarted run will ask it: not stopping, that batch not yet fetched
    progress.total.ready, progress.current.ready = progress.total.started, progress.current.started
    trainer.should_stop = False
    try:
        return bool(epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    finally:
        progress.total.ready, progress.current.ready = ready
        trainer.should_stop = should_stop


def save_between_steps(trainer: L.Trainer, path: str) -> None:
    """A checkpoint that resumes as if written right after the last optimizer step and its validation.

    Called between steps (a batch start, or after training): the next batch, if Lightning has
    fetched it, is marked not ready, and since a restarted Lightning passes over a validation
    already run and counts one more stepped batch for it, the count starts one lower then. So
    the resumed run logs every step at the number an uninterrupted run gives it.
    """
    checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    loop = checkpoint["loops"]["fit_loop"]
    for counts in (loop["epoch_loop.batch_progress"]["total"], loop["epoch_loop.batch_progress"]["current"]):
        counts["ready"] = counts["started"]
    if validation_follows_step(trainer):
        loop["epoch_loop.state_dict"]["_batches_that_stepped"] = checkpoint["global_step"] - 1
    trainer.strategy.save_checkpoint(checkpoint, path)
    trainer.strategy.barrier("save_between_steps")
