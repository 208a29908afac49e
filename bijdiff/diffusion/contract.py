"""What the diffusion math asks of a model: log-scores, and optionally the logits they are made from."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import torch


class ScoreModel(Protocol):
    """The denoiser contract: ``model(x_t: Long[B, L], sigma: Float[B]) -> Float[B, L, graph.dim]`` log-scores."""

    def __call__(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...


class LogitScoreModel(ABC):
    """A score model whose log-scores are ``graph.log_score_from_logits`` of head logits it exposes.

    Declared by subclassing, because it is a promise about the numbers, not only about method
    names: the loss then scores just the positions that can contribute (the graph's closed form),
    the likelihood normalises the logits directly, and the absorbing-graph sampler calls the
    network only when a position unmasks. Any other ``ScoreModel`` takes the generic paths.
    """

    @abstractmethod
    def logits(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Head logits ``[B, L, num_tokens]``."""

    @abstractmethod
    def logits_at(self, x_t: torch.Tensor, sigma: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """Head logits ``[M, num_tokens]`` at the ``M`` positions where ``where`` is True."""
