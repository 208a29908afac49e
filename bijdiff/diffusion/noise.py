"""Noise schedules: total noise σ̄(t) and its rate dσ̄/dt for t in [0, 1]."""
from __future__ import annotations

import inspect
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
            raise ConfigError(f"diffusion.noise.eps must lie in (0, 1), got {eps}")
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
            raise ConfigError(f"need 0 < diffusion.noise.sigma_min < diffusion.noise.sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def total(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        return self.total(t) * self.log_ratio


NOISES: dict[str, type[Noise]] = {"loglinear": LogLinearNoise, "geometric": GeometricNoise}

# A bare name in diffusion.noise: the shorthand diffusion.noise=NAME (the schedule's defaults), or
# a checkpoint saved when each schedule's parameters were flat keys of the diffusion group.
_FLAT_KEYS = {"loglinear": {"eps": "noise_eps"}, "geometric": {"sigma_min": "sigma_min", "sigma_max": "sigma_max"}}


def build_noise(d: Mapping[str, Any]) -> Noise:
    """The schedule ``diffusion.noise`` (``{name, its own parameters}``, ``conf/diffusion/noise/``) from ``NOISES``."""
    spec = d["noise"]
    if isinstance(spec, str):
        spec = {"name": spec} | {key: d[flat] for key, flat in _FLAT_KEYS.get(spec, {}).items() if flat in d}
    params = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] not in NOISES:
        raise ConfigError(f"unknown diffusion.noise={spec['name']!r}; choose one of {sorted(NOISES)}")
    cls = NOISES[spec["name"]]
    accepted = list(inspect.signature(cls).parameters)
    if set(params) - set(accepted):
        raise ConfigError(f"diffusion.noise={spec['name']} takes {accepted}, got {sorted(params)}")
    return cls(**{k: float(v) for k, v in params.items()})
