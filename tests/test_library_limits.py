"""What two library replacements would lose (docs/reliability.md): Lightning's WeightAveraging and torchdata's loader.

Each test asserts the library behaviour that breaks a guarantee of this project; if a new
version fixes it, the test fails, and the swap is worth trying again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from torch.optim.swa_utils import get_ema_avg_fn
from torch.utils.data import DataLoader, DistributedSampler


class Tiny(L.LightningModule):
    """One weight; records the batches it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1, bias=False)
        self.seen: list[list[float]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.tolist())
        return (self.layer(batch.view(-1, 1)) - 1.0).pow(2).mean()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class KeepLive(L.Callback):
    """Copies the live weight after every step (after the averaging callback listed before it)."""

    live: torch.Tensor

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.live = pl_module.layer.weight.detach().clone()


class SaveOnError(L.Callback):
    """Writes a checkpoint when an exception stops training, as ``InterruptCheckpoint`` does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        trainer.save_checkpoint(self.path)


def _fit(tmp_path: Path, model: L.LightningModule, loader: Any, callbacks: list, ckpt_path: str | None = None, **kw: Any) -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                        default_root_dir=tmp_path, callbacks=callbacks, num_sanity_val_steps=0, **kw)
    trainer.fit(model, loader, loader if kw.get("limit_val_batches") else None, ckpt_path=ckpt_path)


def _ema() -> WeightAveraging:
    return WeightAveraging(avg_fn=get_ema_avg_fn(0.5), use_buffers=False)


def test_weight_averaging_leaves_no_live_weights_in_a_checkpoint_after_training(tmp_path: Path) -> None:
    # train.py writes the final last.ckpt after fit; WeightAveraging has by then copied the average over the live weights
    model, keep = Tiny(), KeepLive()
    _fit(tmp_path, model, DataLoader(torch.arange(8.0), batch_size=2), [_ema(), keep], max_steps=3, limit_val_batches=0)
    model.trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    current, average = ckpt["current_model_state"]["layer.weight"], ckpt["state_dict"]["layer.weight"]
    assert torch.equal(current, average) and not torch.equal(current, keep.live)


def test_weight_averaging_swaps_live_and_average_in_a_checkpoint_written_during_validation(tmp_path: Path) -> None:
    # an error inside validation: the interrupt checkpoint must hold the live weights as the live ones
    class FailingValidation(Tiny):
        def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
            raise RuntimeError("disk full")

    model, keep = FailingValidation(), KeepLive()
    with pytest.raises(RuntimeError, match="disk full"):
        _fit(tmp_path, model, DataLoader(torch.arange(8.0), batch_size=2), [_ema(), keep, SaveOnError(tmp_path / "interrupted.ckpt")],
             max_steps=4, val_check_interval=2, limit_val_batches=1)
    ckpt = torch.load(tmp_path / "interrupted.ckpt", weights_only=False)
    assert torch.equal(ckpt["state_dict"]["layer.weight"], keep.live)  # the "average" slot holds the live weight
    assert not torch.equal(ckpt["current_model_state"]["layer.weight"], keep.live)


def test_a_stateful_dataloader_resumed_by_lightning_repeats_or_reorders_batches(tmp_path: Path) -> None:
    # best.ckpt and last.ckpt are written at validations, and most resumes are in a later epoch
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    data = torch.arange(20.0)

    def run(name: str, ckpt: str | None, shuffle: bool, **kw: Any) -> list[list[float]]:
        sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0) if shuffle else None
        model = Tiny()
        every_3 = ModelCheckpoint(dirpath=tmp_path / name, filename="step{step}", save_top_k=-1, auto_insert_metric_name=False,
                                  **({} if kw else {"every_n_train_steps": 3}))
        _fit(tmp_path / name, model, stateful.StatefulDataLoader(data, batch_size=2, sampler=sampler), [every_3],
             ckpt_path=ckpt and str(tmp_path / ckpt), max_steps=16, **kw)
        return model.seen

    validated = run("val", None, False, val_check_interval=3, limit_val_batches=1)
    assert run("val-resumed", "val/step3.ckpt", False, val_check_interval=3, limit_val_batches=1)[:2] == validated[1:3]  # one step back
    shuffled = run("shuffled", None, True)
    assert run("shuffled-resumed", "shuffled/step12.ckpt", True)[:3] == shuffled[2:5]  # epoch 1 resumes in epoch 0's order
