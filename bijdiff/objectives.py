"""Training objectives: what a model is trained and evaluated on, apart from how training runs.

The Lightning module holds one of these (DUO's split of a trainer from small algorithm
classes): the SEDD objective for denoisers, next-token likelihood for the AR baseline.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping

import torch
from torch import nn

from .diffusion import Graph, LogitScoreModel, Noise, build_noise, dwdse, elbo_nats, given_mask, sample, stratified_times
from .diffusion.distill import DISTILLATION_METHODS, distillation_nats
from .errors import ConfigError


class Objective(ABC):
    """``train_nats`` is the per-sequence loss; ``eval_nats`` the per-sequence ``−log p`` (or its bound)."""

    #: True when ``eval_nats`` bounds ``−log p`` (diffusion), False when it is exact (AR).
    is_bound: bool

    @abstractmethod
    def train_nats(self, model: nn.Module, x0: torch.Tensor, mask: torch.Tensor, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """The training loss in nats per sequence ``[B]``."""

    @abstractmethod
    def eval_nats(
        self, model: nn.Module, x0: torch.Tensor, mask: torch.Tensor, samples: int = 1, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``samples`` estimates of ``−log p(x0)`` per sequence ``[B, samples]``, counting ``mask`` positions."""

    @abstractmethod
    def sample(
        self, model: nn.Module, shape: tuple[int, int], steps: int, method: str,
        device: torch.device | str, generator: torch.Generator | None = None, stats: dict[str, float] | None = None,
        temperature: float = 1.0, given: torch.Tensor | None = None, blocks: int = 4,
    ) -> torch.Tensor:
        """Draw ``Long[B, L]`` sequences; ``steps`` and ``method`` choose the diffusion sampler.

        ``stats["network_calls_per_sample"]`` receives the network evaluations per sequence.
        ``temperature`` divides the AR model's logits; the diffusion samplers accept only 1.
        ``given`` (``Long[L]`` or ``Long[B, L]``, ``-1`` where generated) holds tokens the output keeps:
        any pattern for diffusion, a prefix for the AR model. ``blocks``: the ``blockwise`` sampler's.
        """

    def to(self, device: torch.device | str) -> "Objective":
        """Move what the objective holds besides the model (a teacher) to ``device``; most hold nothing."""
        return self


class DiffusionObjective(Objective):
    """SEDD: DWDSE at stratified ``t ∈ [t_min, 1]`` for training; the ELBO (t over (0, 1]) for evaluation."""

    is_bound = True

    def __init__(self, graph: Graph, noise: Noise, t_min: float, gather_scored: bool | None = None) -> None:
        self.graph, self.noise, self.t_min = graph, noise, t_min
        self.gather_scored = gather_scored  # None: by device (``dwdse``)

    def train_nats(self, model, x0, mask, rank=0, world_size=1):
        t = stratified_times(x0.shape[0], x0.device, self.t_min, rank=rank, world_size=world_size)
        return dwdse(model, self.graph, self.noise, x0, t, mask, gather_scored=self.gather_scored)

    def eval_nats(self, model, x0, mask, samples=1, generator=None):
        return elbo_nats(model, self.graph, self.noise, x0, mask, samples, generator)

    def sample(self, model, shape, steps, method, device, generator=None, stats=None, temperature=1.0, given=None, blocks=4):
        if temperature != 1.0:
            raise ConfigError(f"sample.temperature={temperature}: use it only with an AR checkpoint (the diffusion "
                              "samplers draw from the model's reverse process at temperature 1)")
        return sample(model, self.graph, self.noise, shape, steps, method, device, generator, stats=stats, given=given,
                      blocks=blocks)


def check_distillation(steps: int, method: str) -> None:
    """A student's ``steps`` (at least 1) and ``method`` (one of ``DISTILLATION_METHODS``), or a ConfigError that says what to give."""
    if steps < 1:
        raise ConfigError(f"distill.steps must be ≥ 1 (the student's sampling steps), got {steps}")
    if method not in DISTILLATION_METHODS:
        choices = "; ".join(f"{name}: {who}" for name, who in DISTILLATION_METHODS.items())
        raise ConfigError(f"distill.method={method}: choose who takes the two steps a student step learns ({choices})")


class DistillationObjective(DiffusionObjective):
    """Self-distillation through time: the model (the student) learns to take one analytic step of a
    ``steps``-step grid as the frozen ``teacher`` takes two (``method="sdtt"``), or as the teacher's step
    followed by its own (``"consistency"``; ``distillation_nats``); evaluation and sampling are SEDD's, so
    the student's bound stays comparable with its teacher's."""

    def __init__(self, graph: Graph, noise: Noise, t_min: float, teacher: nn.Module, steps: int, method: str) -> None:
        super().__init__(graph, noise, t_min)
        if not graph.absorbing or not isinstance(teacher, LogitScoreModel):
            raise ConfigError("distillation matches the absorbing graph's unmasking steps: it needs a teacher "
                              "trained with diffusion=absorb")
        check_distillation(steps, method)
        self.teacher, self.steps, self.method = teacher.eval().requires_grad_(False), steps, method

    def to(self, device):
        self.teacher.to(device)
        return self

    def train_nats(self, model, x0, mask, rank=0, world_size=1):
        return distillation_nats(model, self.teacher, self.graph, self.noise, x0, self.steps, mask, method=self.method)


class AutoregressiveObjective(Objective):
    """Next-token cross-entropy: the training loss is the exact likelihood, so evaluation is exact too."""

    is_bound = False

    def train_nats(self, model, x0, mask, rank=0, world_size=1):
        return model.nll(x0, mask)

    @torch.no_grad()
    def eval_nats(self, model, x0, mask, samples=1, generator=None):
        return model.nll(x0, mask)[:, None]

    def sample(self, model, shape, steps, method, device, generator=None, stats=None, temperature=1.0, given=None, blocks=4):
        """Ancestral sampling with a KV cache after the given prefix; ``steps``, ``method`` and ``blocks`` do not apply."""
        fixed = given_mask(given, shape, model.num_tokens, device)
        start = 0 if fixed is None else int(fixed[0].sum())
        if fixed is not None and not bool((fixed == (torch.arange(shape[1], device=fixed.device) < start)).all()):
            raise ConfigError("the autoregressive model continues a prefix: it cannot condition on a suffix or on "
                              "tokens after a gap; give the first P positions of every row, or sample a diffusion checkpoint")
        if stats is not None:  # the prefix goes through with the first draw
            stats["network_calls_per_sample"] = float(shape[1] - start)
        prefix = given.to(device).expand(shape)[:, :start] if start else None
        return model.generate(shape, generator, device, temperature=temperature, prefix=prefix)


def build_objective(cfg: Mapping[str, Any], model: nn.Module) -> Objective:
    """The objective that matches ``cfg.model.name``: next-token for ``ar``, SEDD otherwise."""
    if cfg["model"]["name"] == "ar":
        return AutoregressiveObjective()
    d = cfg["diffusion"]
    return DiffusionObjective(model.graph, build_noise(d), float(d["t_min"]))
