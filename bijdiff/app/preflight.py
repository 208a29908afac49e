"""Checks of a training config that must fail before any data is loaded or model built."""
from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..nn.compile import COMPILE_MODES

# keys whose values must be numbers (Lightning and the data module would otherwise fail deep inside)
INTEGER_KEYS = (
    "trainer.max_steps", "trainer.max_epochs", "trainer.num_nodes", "trainer.log_every_n_steps",
    "trainer.accumulate_grad_batches", "trainer.num_sanity_val_steps",
    "data.vocab_size", "data.seq_len", "data.batch_size", "data.eval_batch_size", "data.num_workers",
    "model.d_model", "model.n_heads", "model.cond_dim", "optim.warmup_steps", "optim.max_nonfinite_steps", "seed",
    "distill.steps",
)
NUMBER_KEYS = (
    "trainer.val_check_interval", "trainer.limit_val_batches", "trainer.gradient_clip_val",
    "optim.lr", "optim.weight_decay", "optim.min_lr_ratio", "ema.decay", "model.mlp_ratio", "model.dropout",
)


def check_compile(cfg: DictConfig) -> None:
    """``compile`` is null or one of torch.compile's modes."""
    mode = cfg.get("compile")
    if mode is not None and mode not in COMPILE_MODES:
        raise ConfigError(f"compile={mode!r}: use null (eager) or one of {list(COMPILE_MODES)}")


def _is_number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (not integer and isinstance(value, float))


def check_numbers(cfg: DictConfig) -> None:
    """Every numeric setting holds a number (``trainer.max_steps=abc`` is named, not a TypeError later)."""
    for keys, integer in ((INTEGER_KEYS, True), (NUMBER_KEYS, False)):
        for key in keys:
            value = OmegaConf.select(cfg, key)
            if value is not None and not _is_number(value, integer):
                kind = "an integer" if integer else "a number"
                raise ConfigError(f"{key} must be {kind}, got {value!r}")
    if cfg.trainer.max_steps == 0 or cfg.trainer.max_steps < -1:
        raise ConfigError(f"trainer.max_steps must be ≥ 1 (or -1 with trainer.max_epochs), got {cfg.trainer.max_steps}")


def available_accelerators() -> list[str]:
    """The ``trainer.accelerator`` values that can run on this machine."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.insert(0, "gpu")
    if torch.backends.mps.is_available():
        found.insert(0, "mps")
    return found


def _suggestion(available: list[str]) -> str:
    presets = {"gpu": "trainer=gpu", "mps": "trainer=mps", "cpu": "trainer=cpu (and experiment=quick for a short run)"}
    return "use " + " or ".join(presets[a] for a in available)


def check_accelerator(trainer: DictConfig) -> None:
    """``trainer.accelerator`` and ``trainer.devices`` exist here; say what to use instead if not."""
    accelerator = str(trainer.accelerator).lower()
    available = available_accelerators()
    wanted = {"gpu": "cuda", "cuda": "cuda", "mps": "mps"}.get(accelerator)
    if accelerator not in ("auto", "cpu", "gpu", "cuda", "mps"):
        raise ConfigError(f"trainer.accelerator={trainer.accelerator!r} is not one bijdiff runs on; "
                          f"choose auto, cpu, gpu (CUDA) or mps, e.g. {_suggestion(available)}")
    if wanted == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"trainer.accelerator={accelerator}: PyTorch sees no CUDA GPU here "
                          f"(torch {torch.__version__}, {build}); {_suggestion(available)}")
    if wanted == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"trainer.accelerator=mps: Apple's Metal (MPS) backend is not available on this machine "
                          f"(it needs Apple silicon and macOS 12.3+); {_suggestion(available)}")
    devices = trainer.devices
    if wanted == "cuda" and isinstance(devices, int) and not isinstance(devices, bool) and devices > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices={devices} but {torch.cuda.device_count()} CUDA GPU(s) are visible; "
                          "use trainer.devices=auto or a smaller number")
