"""The WikiText-2 ``LightningDataModule``: load, tokenise (cached), and serve blocks."""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import lightning as L
import numpy as np
from tokenizers import Tokenizer
import torch
from torch.utils.data import DataLoader

from .blocks import EvalBlocks, TrainBlocks
from .sampler import ResumableSampler
from ..errors import ConfigError, DataError
from ..io import atomic_path
from .text import HUB_CONFIG, HUB_NAME, SPLITS, count_words, lines_digest, load_hub_lines, read_lines
from .tokenizer import MASK, encode_lines, load_or_train_tokenizer

log = logging.getLogger(__name__)


@dataclass
class TokenizedSplit:
    """A split as one token stream, with the classic word count for per-word perplexity."""

    ids: np.ndarray
    n_words: int
    n_lines: int

    @property
    def n_tokens(self) -> int:
        return int(len(self.ids))


class WikiTextDataModule(L.LightningDataModule):
    """WikiText-2 from the hub (default) or from local files (``files.train/validation/test``).

    Pass ``tokenizer_json`` to reuse a tokenizer (for example one stored in a checkpoint) instead
    of training one on the training split; without ``files.train`` only the evaluation splits given
    are read. ``seed`` fixes the training order; its position is
    saved in checkpoints (``state_dict``) so a resumed run continues with the same batches.
    """

    def __init__(
        self,
        files: Mapping[str, str | None] | None = None,
        hub_name: str = HUB_NAME,
        hub_config: str = HUB_CONFIG,
        vocab_size: int = 8192,
        seq_len: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        cache_dir: str | os.PathLike = "~/.cache/bijdiff",
        tokenizer_json: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if seq_len < 2:
            raise ConfigError(f"data.seq_len must be ≥ 2, got {seq_len}")
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError("data.batch_size and data.eval_batch_size must be ≥ 1")
        self.files = {k: str(Path(v).expanduser().resolve()) for k, v in dict(files or {}).items() if v}
        self.hub_name, self.hub_config = hub_name, hub_config
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.cache_dir = Path(os.path.expanduser(str(cache_dir)))
        self.tokenizer_json = tokenizer_json
        self.tokenizer_given = tokenizer_json is not None
        self.tokenizer: Tokenizer | None = None
        self.splits: dict[str, TokenizedSplit] = {}
        self.seed = seed
        self._resume: tuple[int, int] | None = None

    # -- loading -----------------------------------------------------------------------------
    def _load_lines(self) -> dict[str, list[str]]:
        if not self.files:
            return load_hub_lines(self.hub_name, self.hub_config)
        unknown = set(self.files) - set(SPLITS)
        if unknown:
            raise DataError(f"unknown split(s) in data.files: {sorted(unknown)}; use {list(SPLITS)}")
        if self.tokenizer_given and "train" not in self.files:  # evaluation: only the evaluation split(s) given are needed
            needed = [split for split in ("validation", "test") if split in self.files]
            if not needed:
                raise DataError("set data.files.test (or data.files.validation) to the file to evaluate")
        else:
            for split in ("train", "validation"):
                if split not in self.files:
                    raise DataError(
                        f"data.files.{split} is required when loading local files "
                        "(the tokenizer is trained on train; validation drives checkpointing)"
                    )
            needed = [split for split in SPLITS if split in self.files]
        lines = {split: read_lines(self.files[split]) for split in needed}
        if "test" not in lines:
            if not self.tokenizer_given:
                warnings.warn("data.files.test not set: the test split falls back to the validation split", stacklevel=2)
            lines["test"] = lines["validation"]
        lines.setdefault("validation", lines["test"])
        return lines

    def _tokenize(self, split: str, lines: list[str], tok_key: str) -> TokenizedSplit:
        key = hashlib.sha256((tok_key + lines_digest(lines)).encode()).hexdigest()[:16]
        path = self.cache_dir / f"tokens-{split}-{key}.npy"
        if path.is_file():
            ids = np.load(path)
            log.info("data: %s tokens from cache %s", split, path)
        else:
            ids = np.asarray(encode_lines(self.tokenizer, lines), dtype=np.int32)
            with atomic_path(path) as tmp:
                np.save(tmp, ids)
            log.info("data: tokenised %s (%d tokens), cached at %s", split, len(ids), path)
        return TokenizedSplit(ids=ids, n_words=count_words(lines), n_lines=len(lines))

    def prepare_data(self) -> None:
        """Fill the caches (tokenizer and tokenised splits); runs once per node."""
        if not self.splits:
            self._build()

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._build()

    def _build(self) -> None:
        lines = self._load_lines()
        if self.tokenizer_given:
            self.tokenizer = Tokenizer.from_str(self.tokenizer_json)
            tok_key = hashlib.sha256(self.tokenizer_json.encode()).hexdigest()[:16]
        else:
            digest = lines_digest(lines["train"])
            self.tokenizer = load_or_train_tokenizer(lines["train"], self.vocab_size, digest, self.cache_dir)
            self.tokenizer_json = self.tokenizer.to_str()
            tok_key = hashlib.sha256(self.tokenizer_json.encode()).hexdigest()[:16]
        if self.tokenizer.token_to_id(MASK) != self.tokenizer.get_vocab_size() - 1:
            raise DataError("tokenizer has no [MASK] as its last id; it was not made by bijdiff")
        self.splits = {split: self._tokenize(split, split_lines, tok_key) for split, split_lines in lines.items()}
        log.info("data: cache directory %s", self.cache_dir)

    # -- facts the model and the metrics need ------------------------------------------------
    @property
    def num_tokens(self) -> int:
        """Real tokens (``[MASK]`` excluded): the size of the model's output distribution."""
        return self.tokenizer.get_vocab_size() - 1

    def unigram_counts(self) -> np.ndarray:
        """Token counts of the training split over the real tokens."""
        return np.bincount(self.splits["train"].ids, minlength=self.num_tokens)[: self.num_tokens]

    def words_per_token(self, split: str) -> float:
        """Classic word count over token count: turns nats/token into nats/word."""
        s = self.splits[split]
        return s.n_words / s.n_tokens

    def describe(self) -> str:
        parts = [f"{k}: {v.n_tokens:,} tokens / {v.n_words:,} words" for k, v in self.splits.items()]
        return f"vocab {self.tokenizer.get_vocab_size()} ({self.num_tokens} real + [MASK]); " + "; ".join(parts)

    # -- loaders -----------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        blocks = TrainBlocks(self.splits["train"].ids, self.seq_len)
        sampler = ResumableSampler(
            blocks, self.batch_size, self.seed,
            num_replicas=trainer.world_size if trainer else 1, rank=trainer.global_rank if trainer else 0,
        )
        if self._resume is not None:
            sampler.resume_at(*self._resume)
            # Lightning creates the first iterator before it sets the epoch; with workers that
            # iterator already draws indices, so start it in the checkpoint's epoch
            sampler.set_epoch(self._resume[0])
        if len(sampler) < self.batch_size:
            raise DataError(
                f"the training split gives {len(sampler)} blocks of data.seq_len={self.seq_len} per device, "
                f"fewer than data.batch_size={self.batch_size}; use more data or a smaller batch or sequence"
            )
        return DataLoader(
            blocks,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # worker seeds come from here, not from the global RNG that training steps use
            generator=torch.Generator().manual_seed(self.seed),
        )

    # -- resume: where in the epoch the checkpointed run was -----------------------------------
    def state_dict(self) -> dict[str, int]:
        trainer = self.trainer
        if trainer is None:
            return {}
        # processed, not ready: a batch interrupted mid-step is trained again after resuming
        # (Lightning's loop progress counters: internal API, pinned range in pyproject.toml)
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": trainer.current_epoch, "batches_done": progress.processed, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not state:
            return
        self._resume = (int(state["epoch"]), int(state["batches_done"]))
        if int(state.get("seed", self.seed)) != self.seed:
            warnings.warn(
                f"resuming with seed={self.seed}, but the checkpoint trained with seed={state['seed']}: the data order "
                f"and training noise follow the new seed from here (pass seed={state['seed']} for an exact resume)",
                stacklevel=2,
            )

    def eval_dataloader(self, split: str) -> DataLoader:
        return DataLoader(
            EvalBlocks(self.splits[split].ids, self.seq_len),
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")


def unigram_nll(counts: np.ndarray, ids: np.ndarray) -> float:
    """Total nats of ``ids`` under the add-½ smoothed unigram model of ``counts``."""
    counts = np.asarray(counts, dtype=np.float64)
    log_p = np.log(counts + 0.5) - np.log(counts.sum() + 0.5 * len(counts))
    return float(-log_p[np.asarray(ids)].sum())

