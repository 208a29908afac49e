"""Noise schedules: total noise σ̄(t) and its rate dσ̄/dt for t in [0, 1]."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..errors import ConfigError


class Noise(ABC):
    """A schedule maps times ``t`` to ``(σ̄(t), dσ̄/dt)``, both float32 on ``t``'s device."""

    def __call__(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.float()
        return self.total(t), self.rate(t)

    @abstractmethod
    def total(self, t: torch.Tensor) -> torch.Tensor:
        """Total noise ``σ̄(t)``."""

    @abstractmethod
    def rate(self, t: torch.Tensor) -> torch.Tensor:
        """Its derivative ``dσ̄/dt``."""


class LogLinearNoise(Noise):
    """SEDD's log-linear schedule σ̄(t) = −log(1 − (1−ε)t): the unmasked fraction falls linearly.

    With the absorbing graph a token survives to time t with probability 1 − (1−ε)t, so
    ``σ̄'(t) / (exp(σ̄(t)) − 1) = 1/t``: the loss weight of masked diffusion.
    """

    def __init__(self, eps: float = 1e-3) -> None:
        if not 0.0 < eps < 1.0:
            raise ConfigError(f"noise.eps must lie in (0, 1), got {eps}")
        self.eps = eps

    def total(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log1p(-(1.0 - self.eps) * t)

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.eps) / (1.0 - (1.0 - self.eps) * t)


NOISES = {"loglinear": LogLinearNoise}


def build_noise(name: str, **kwargs: float) -> Noise:
    """Build a schedule by name (``diffusion.noise``), with a clear error for unknown names."""
    if name not in NOISES:
        raise ConfigError(f"unknown diffusion.noise={name!r}; choose one of {sorted(NOISES)}")
    return NOISES[name](**kwargs)
