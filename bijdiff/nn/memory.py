"""Bytes autograd keeps for backward: the measure behind "memory flat in depth"."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def counting_saved_bytes() -> Iterator[list[int]]:
    """Within the block, count the bytes autograd saves for backward; yields a list whose one item is the total."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total
