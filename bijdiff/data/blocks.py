"""Cutting a token stream into fixed-length blocks for training and for exact-coverage evaluation."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class TrainBlocks(Dataset):
    """Non-overlapping ``seq_len`` blocks of the stream (the remainder shorter than a block is dropped)."""

    def __init__(self, ids: np.ndarray, seq_len: int) -> None:
        if len(ids) < seq_len:
            raise ValueError(f"training split has {len(ids)} tokens, fewer than data.seq_len={seq_len}")
        self.ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.ids) // self.seq_len

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.ids[i * self.seq_len : (i + 1) * self.seq_len]
        return {"input_ids": x, "loss_mask": torch.ones_like(x, dtype=torch.bool)}


class EvalBlocks(Dataset):
    """Blocks that count every token of the stream exactly once.

    Full blocks, then (if tokens remain) the last ``seq_len`` tokens of the stream with
    ``loss_mask`` set only on the tokens no earlier block counted: those earlier tokens are
    clean context. Summed nats are then a bound on ``−log p`` of the whole split.
    """

    def __init__(self, ids: np.ndarray, seq_len: int) -> None:
        self.ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        if len(self.ids) == 0:
            raise ValueError("evaluation split has no tokens")
        self.seq_len = min(seq_len, len(self.ids))
        self.n_full = len(self.ids) // self.seq_len
        self.tail = len(self.ids) - self.n_full * self.seq_len

    def __len__(self) -> int:
        return self.n_full + (1 if self.tail else 0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i < self.n_full:
            x = self.ids[i * self.seq_len : (i + 1) * self.seq_len]
            return {"input_ids": x, "loss_mask": torch.ones_like(x, dtype=torch.bool)}
        if i != self.n_full or not self.tail:
            raise IndexError(i)
        x = self.ids[-self.seq_len :]
        mask = torch.zeros_like(x, dtype=torch.bool)
        mask[-self.tail :] = True
        return {"input_ids": x, "loss_mask": mask}
