"""Exponential moving average of a module's parameters, saved with the checkpoint."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from ..errors import ConfigError


class EMA(nn.Module):
    """Shadow copies of ``model``'s parameters, kept as buffers so checkpoints and ``.to()`` carry them.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so short runs
    average over their recent steps instead of their initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"ema.decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = nn.Module()
        for i, p in enumerate(model.parameters()):
            self.shadow.register_buffer(f"p{i}", p.detach().clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self._count: int | None = None  # host copy of num_updates: no device sync per step
        self.live_parameters: list[torch.Tensor] | None = None  # set while the averages are swapped in
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_count", None))

    def _shadows(self) -> list[torch.Tensor]:
        return list(self.shadow.buffers())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadows towards the current parameters."""
        if self._count is None:
            self._count = int(self.num_updates)
        self._count += 1
        self.num_updates += 1
        n = float(self._count)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(self._shadows(), params, 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters with the averages."""
        for p, s in zip(model.parameters(), self._shadows()):
            p.copy_(s)

    @contextmanager
    def averaged(self, model: nn.Module) -> Iterator[None]:
        """Run a block with the averaged parameters in ``model``, then restore the live ones.

        Meanwhile ``live_parameters`` holds the live ones, so a checkpoint written from inside
        the block (an interrupt during validation) can store them instead of the averages.
        """
        self.live_parameters = [p.detach().clone() for p in model.parameters()]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(model.parameters(), self.live_parameters):
                    p.copy_(b)
            self.live_parameters = None
