"""Noise schedules: total noise σ̄(t) and its rate dσ̄/dt for t in [0, 1]."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Mapping

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


class GeometricNoise(Noise):
    """SEDD's geometric schedule σ̄(t) = σmin^(1−t) σmax^t, the usual choice for the uniform graph.

    ``σ̄(0) = σmin > 0``: the likelihood bound closes the gap below σmin with the graph's
    ``reconstruction_nats``.
    """

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0) -> None:
        if not 0.0 < sigma_min < sigma_max:
            raise ConfigError(f"need 0 < diffusion.sigma_min < diffusion.sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def total(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        return self.total(t) * self.log_ratio


NOISES = {"loglinear": LogLinearNoise, "geometric": GeometricNoise}


def build_noise(d: Mapping[str, Any]) -> Noise:
    """The schedule ``diffusion.noise`` with its own parameters from the ``diffusion`` group."""
    name = d["noise"]
    if name == "loglinear":
        return LogLinearNoise(float(d["noise_eps"]))
    if name == "geometric":
        return GeometricNoise(float(d["sigma_min"]), float(d["sigma_max"]))
    raise ConfigError(f"unknown diffusion.noise={name!r}; choose one of {sorted(NOISES)}")
