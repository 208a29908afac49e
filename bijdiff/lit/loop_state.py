"""What Lightning's training loop will do next, read from its own state (for checkpoints written between steps)."""
from __future__ import annotations

import lightning as L


def validation_follows_step(trainer: L.Trainer) -> bool:
    """Whether Lightning's schedule validates after the last optimizer step (``trainer.global_step``).

    Asked in ``on_train_batch_end`` of that step, or in ``on_train_batch_start`` of the next one,
    whose batch Lightning has counted as ready but not started: it is left out here.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    progress = epoch_loop.batch_progress
    ready = progress.total.ready, progress.current.ready
    progress.total.ready, progress.current.ready = progress.total.started, progress.current.started
    try:
        return bool(epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    finally:
        progress.total.ready, progress.current.ready = ready
