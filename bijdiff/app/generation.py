"""Generate and infill text with a trained checkpoint: the Python entry point behind ``eval.py mode=sample``.

    >>> from bijdiff.app.generation import TextGenerator
    >>> generator = TextGenerator.load("runs/my-run/checkpoints/best.ckpt")
    >>> for completion in generator.generate(prefix=" The film was", suffix=" by critics .", fill=12, num_samples=2):
    ...     print(completion.text)

A diffusion checkpoint fills any positions between the given texts (``prefix``, ``suffix``, or both:
infilling); the AR checkpoint continues a prefix. ``sample_ids`` takes any pattern of given token ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tokenizers import Tokenizer

from ..data.tokenizer import decode_ids, encode_text
from ..diffusion import SAMPLERS
from ..errors import ConfigError
from ..lit import LitLanguageModel
from .checkpoint import load_module, pick_device
from .common import log


@dataclass
class Completion:
    """One generated sequence: its text, its token ids, and which positions were given rather than generated."""

    text: str
    ids: list[int]
    given: list[int]

    @property
    def generated(self) -> list[int]:
        """The positions the sampler filled."""
        given = set(self.given)
        return [i for i in range(len(self.ids)) if i not in given]


def per_sample(given: torch.Tensor, n: int) -> torch.Tensor:
    """``given`` as ``Long[n, L]``: one pattern (``Long[L]`` or ``Long[1, L]``) for every sample, or one per sample."""
    if given.dim() == 1 or given.shape[0] == 1:
        return given.reshape(1, -1).expand(n, -1)
    if given.shape[0] != n:
        raise ConfigError(f"given has {given.shape[0]} rows for {n} samples: give one row, or one per sample")
    return given


class TextGenerator:
    """A checkpoint's model, tokenizer and sampler, ready to draw text (``load`` builds one from a ``.ckpt``)."""

    def __init__(self, module: LitLanguageModel, device: torch.device | str = "cpu") -> None:
        self.module, self.device = module, torch.device(device)
        self.model = module.model.to(self.device).eval()
        self.tokenizer = Tokenizer.from_str(module.extra_state["tokenizer"])
        self.is_ar = not module.objective.is_bound
        self.train_length = int(module.hparams["cfg"]["data"]["seq_len"])

    @classmethod
    def load(cls, ckpt_path: str | Path, device: str = "auto", use_ema: bool = True) -> "TextGenerator":
        """The generator of a ``train.py`` checkpoint (its EMA weights by default) on ``device`` (auto: CUDA, MPS, CPU)."""
        return cls(load_module(ckpt_path, use_ema), pick_device(device))

    def given_ids(self, prefix: str = "", suffix: str = "", fill: int | None = None, length: int | None = None) -> torch.Tensor:
        """``Long[L]``: the prefix's and suffix's token ids around ``fill`` positions to generate (``-1``).

        Without ``fill`` the generated span fills the rest of ``length`` tokens (default: the training
        block length); with it, ``length`` (if given) must agree."""
        head, tail = encode_text(self.tokenizer, prefix or ""), encode_text(self.tokenizer, suffix or "")
        if tail and self.is_ar:
            raise ConfigError("the autoregressive model continues a prefix only: drop sample.suffix, or sample a diffusion checkpoint")
        if fill is None:
            fill = (length or self.train_length) - len(head) - len(tail)
            if fill < 1:
                raise ConfigError(f"the prefix and suffix take {len(head) + len(tail)} tokens, leaving none of the "
                                  f"{length or self.train_length} to generate: set sample.fill=N (tokens to generate)")
        elif fill < 1:
            raise ConfigError(f"sample.fill={fill}: give the number of tokens to generate (≥ 1)")
        elif length is not None and length != len(head) + fill + len(tail):
            raise ConfigError(f"sample.length={length} disagrees with the prefix ({len(head)} tokens) + sample.fill={fill} "
                              f"+ suffix ({len(tail)} tokens): leave sample.length unset")
        total = len(head) + fill + len(tail)
        if total > self.train_length:
            log.warning("%d tokens are longer than the %d the model was trained on: rotary positions allow it, "
                        "but expect weaker text past %d", total, self.train_length, self.train_length)
        return torch.tensor(head + [-1] * fill + tail, dtype=torch.long)

    def sample_ids(
        self, given: torch.Tensor, num_samples: int = 1, sampler: str = "analytic", steps: int = 128, temperature: float = 1.0,
        seed: int = 0, batch_size: int = 16, on_batch: Callable[[int], None] | None = None, blocks: int = 4,
    ) -> tuple[torch.Tensor, float]:
        """``num_samples`` sequences ``Long[N, L]`` keeping the ids of ``given`` (``Long[L]`` or ``Long[N, L]``, ``-1``
        where generated), and the network calls per sample. ``on_batch`` receives the count drawn so far."""
        if not self.is_ar and sampler not in SAMPLERS:
            raise ConfigError(f"unknown sample.sampler={sampler!r}; choose one of {list(SAMPLERS)}")
        if num_samples < 1 or batch_size < 1:
            raise ConfigError("sample.num_samples and sample.batch_size must be ≥ 1")
        given = per_sample(given, num_samples)
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        chunks, calls = [], 0.0
        for first in range(0, num_samples, batch_size):
            rows = given[first : first + batch_size].to(self.device)
            stats: dict[str, float] = {}
            chunks.append(self.module.objective.sample(
                self.model, tuple(rows.shape), steps, sampler, self.device, generator, stats, temperature,
                given=rows if bool((rows >= 0).any()) else None, blocks=blocks).cpu())
            calls += stats["network_calls_per_sample"] * len(rows)
            if on_batch is not None:
                on_batch(first + len(rows))
        return torch.cat(chunks), calls / num_samples

    def completions(self, ids: torch.Tensor, given: torch.Tensor) -> list[Completion]:
        """Decoded ``Completion``s of sampled ``ids`` and the ``given`` pattern they were drawn with."""
        given = per_sample(given, len(ids))
        return [Completion(decode_ids(self.tokenizer, row), row, torch.nonzero(mask).flatten().tolist())
                for row, mask in zip(ids.tolist(), given >= 0)]

    def generate(
        self, prefix: str = "", suffix: str = "", fill: int | None = None, num_samples: int = 1, sampler: str = "analytic",
        steps: int = 128, temperature: float = 1.0, seed: int = 0, batch_size: int = 16, blocks: int = 4,
    ) -> list[Completion]:
        """Texts that start with ``prefix``, end with ``suffix`` and have ``fill`` generated tokens between them
        (without ``fill``: as many as make a training-length block; both texts empty: unconditional samples)."""
        given = self.given_ids(prefix, suffix, fill)
        ids, _ = self.sample_ids(given, num_samples, sampler, steps, temperature, seed, batch_size, blocks=blocks)
        return self.completions(ids, given)
