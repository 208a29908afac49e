"""A callback that shows what the model generates as it trains: a W&B table, or JSONL lines."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from tokenizers import Tokenizer

from ..data.tokenizer import decode_ids


class SampleLogger(L.Callback):
    """After each validation, ``num_samples`` samples (EMA weights) of ``length`` tokens.

    Logged as the W&B table ``samples`` (step, text) when a W&B logger is attached, and appended
    to ``path`` as JSONL in any case. The diffusion sampler is ``sampler`` with ``steps`` steps.
    """

    def __init__(self, path: str, num_samples: int = 4, length: int = 64, steps: int = 32, sampler: str = "analytic", seed: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.num_samples, self.length, self.steps, self.sampler, self.seed = num_samples, length, steps, sampler, seed

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.num_samples < 1:
            return
        model = pl_module.model
        was_training = model.training
        ema = pl_module.ema.averaged(model) if pl_module.ema is not None else contextlib.nullcontext()
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        with ema, torch.no_grad():
            model.eval()
            ids = pl_module.objective.sample(model, (self.num_samples, self.length), self.steps, self.sampler, pl_module.device, generator)
        model.train(was_training)
        tokenizer = Tokenizer.from_str(pl_module.extra_state["tokenizer"])
        texts = [decode_ids(tokenizer, row) for row in ids.tolist()]
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text(key="samples", columns=["step", "sample"], data=[[step, t] for t in texts], step=step)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.writelines(json.dumps({"step": step, "sample": t}) + "\n" for t in texts)
