"""Shared fixtures: tiny generated WikiText-like files and composed tiny configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bijdiff.data.synthetic import write_synthetic_splits

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def wiki_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small train/validation/test files in the classic one-line-per-line WikiText layout."""
    return write_synthetic_splits(tmp_path_factory.mktemp("wiki"))


TINY = [
    "model.d_model=32",
    "model.n_layers=2",
    "model.n_heads=2",
    "model.cond_dim=16",
    "data.vocab_size=300",
    "data.seq_len=16",
    "data.batch_size=4",
    "data.eval_batch_size=8",
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=1",
    "callbacks.progress.style=plain",
    "callbacks.progress.every=1",
]


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with overrides, outside any Hydra run."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def tiny_config(wiki_files: dict[str, Path], out: Path, cache: Path, *extra: str) -> DictConfig:
    """A tiny training config on the generated files, writing to ``out`` and caching in ``cache``."""
    return compose_config(
        "train",
        TINY
        + [f"data.files.{k}={v}" for k, v in wiki_files.items()]
        + [f"paths.output_dir={out}", f"paths.cache_dir={cache}"]
        + list(extra),
    )


@pytest.fixture
def tiny_train_cfg(tmp_path: Path, wiki_files: dict[str, Path]):
    """A factory for tiny training configs on the generated files, writing under ``tmp_path``."""

    def make(*extra: str) -> DictConfig:
        return tiny_config(wiki_files, tmp_path / "run", tmp_path / "cache", *extra)

    return make
