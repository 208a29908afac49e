"""A training sampler that can start an epoch part-way through, so a resumed run sees the same batches."""
from __future__ import annotations

from typing import Iterator

from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by ``seed + epoch``, one shard per rank) with ``resume_at``.

    The order of an epoch depends only on ``seed`` and the epoch, never on the global RNG, so a
    resumed run rebuilds it exactly and skips the batches the checkpointed run had consumed.
    Being a ``DistributedSampler``, Lightning keeps it under DDP instead of wrapping it.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """In ``epoch``, start after the first ``batches_done`` batches of this rank (once)."""
        self._resume = (epoch, batches_done)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._resume is not None and self.epoch >= self._resume[0]:
            if self.epoch == self._resume[0]:
                indices = indices[self._resume[1] * self.batch_size :]
            self._resume = None
        return iter(indices)
