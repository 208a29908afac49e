"""The bijection contract and its composition.

A ``Bijection`` maps ``x: [B, L, dim]`` (under an optional conditioning ``cond: [B, cond_dim]``)
to ``y`` of the same shape, and reports ``log|det ∂y/∂x|`` per batch element:

- ``forward(x, cond=None) -> (y, logdet)``, ``logdet: [B]``;
- ``inverse(y, cond=None) -> (x, logdet)``, where ``logdet`` is that of the inverse map
  (the negative of the forward one).

The inverse is computed from ``y`` alone: nothing from a forward pass is cached.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import NotInvertibleError
from .replay import autocast_from

__all__ = ["Bijection", "BijectiveSequential", "NotInvertibleError", "logdet_dtype", "zero_logdet"]


class Bijection(nn.Module, ABC):
    """An invertible map with an exact log-determinant (see the module docstring)."""

    dim: int

    @abstractmethod
    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, log|det ∂y/∂x|)``."""

    @abstractmethod
    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, log|det ∂x/∂y|)``, computed from ``y`` alone."""

    def forward_for_replay(
        self, x: torch.Tensor, cond: torch.Tensor | None, record: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``forward`` plus whatever ``backward_from_output`` needs to replay it (RNG states)."""
        y, logdet = self.forward(x, cond)
        return y, logdet, None

    def backward_from_output(
        self,
        y: torch.Tensor,
        cond: torch.Tensor | None,
        grad_y: torch.Tensor,
        grad_logdet: torch.Tensor,
        params: list[nn.Parameter],
        replay: Any = None,
        autocast: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[torch.Tensor | None]]:
        """Rebuild the input from ``y`` and back-propagate through this layer.

        Returns ``(x, grad_x, grad_cond, grads of params)``. The default inverts without
        gradients, then recomputes the forward with them; coupling blocks override it with a
        single pass that is both the inverse and the gradient graph. ``autocast`` holds the
        autocast settings of the forward pass, re-entered for the recomputation only.
        """
        with torch.no_grad(), autocast_from(autocast):
            x, _ = self.inverse(y, cond)
        with torch.enable_grad():
            x_leaf = x.detach().requires_grad_(True)
            c_leaf = cond.detach().requires_grad_(True) if cond is not None else None
            with autocast_from(autocast):
                y_re, logdet = self.forward(x_leaf, c_leaf)
            inputs = [x_leaf] + ([c_leaf] if c_leaf is not None else []) + params
            grads = torch.autograd.grad((y_re, logdet), inputs, (grad_y, grad_logdet.to(logdet.dtype)), allow_unused=True)
        grad_x = grads[0]
        grad_cond = grads[1] if c_leaf is not None else None
        return x, grad_x, grad_cond, list(grads[1 + (c_leaf is not None) :])


def logdet_dtype(x: torch.Tensor) -> torch.dtype:
    """Log-dets are accumulated in at least fp32 (fp64 for fp64 inputs), whatever the autocast."""
    return torch.promote_types(x.dtype, torch.float32)


def zero_logdet(x: torch.Tensor) -> torch.Tensor:
    """A zero log-determinant ``[B]`` on ``x``'s device."""
    return torch.zeros(x.shape[0], device=x.device, dtype=logdet_dtype(x))


class BijectiveSequential(Bijection):
    """Bijections applied in order; log-dets add up and the inverse runs in reverse order."""

    def __init__(self, layers: Iterable[Bijection]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if len(self.layers) == 0:
            raise ValueError("BijectiveSequential needs at least one layer")
        self.dim = self.layers[0].dim

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        total = zero_logdet(x)
        for layer in self.layers:
            x, logdet = layer(x, cond)
            total = total + logdet
        return x, total

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        total = zero_logdet(y)
        for layer in reversed(self.layers):
            y, logdet = layer.inverse(y, cond)
            total = total + logdet
        return y, total
