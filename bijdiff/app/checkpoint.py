"""Loading what ``train.py`` wrote: the module with its EMA weights, its tokenizer and its data."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..data import TokenizedSplit, WikiTextDataModule
from ..errors import CheckpointError
from ..lit import LitLanguageModel
from .train import build_datamodule


def load_module(ckpt_path: str | Path, use_ema: bool = True) -> LitLanguageModel:
    """Load a training checkpoint; with ``use_ema`` the model holds the EMA weights."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (pass ckpt_path=PATH to a .ckpt file written by train.py)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        hparams = ckpt["hyper_parameters"]
        module = LitLanguageModel(hparams["cfg"], hparams["num_tokens"])
        module.load_state_dict(ckpt["state_dict"])
        module.on_load_checkpoint(ckpt)
        module.extra_state["global_step"] = ckpt.get("global_step")
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"cannot load checkpoint {path}: {type(err).__name__}: {err}") from err
    if "tokenizer" not in module.extra_state:
        raise CheckpointError(f"checkpoint {path} holds no tokenizer: it was not written by bijdiff's train.py")
    if use_ema and module.ema is not None:
        module.ema.copy_to(module.model)
    return module


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def load_split(cfg: DictConfig, module: LitLanguageModel) -> tuple[WikiTextDataModule, TokenizedSplit, dict[str, Any]]:
    """The evaluation split ``cfg.split``, tokenised with the checkpoint's tokenizer.

    The file is ``cfg.data.files.<split>`` if given, else the one the run trained with (the
    validation file standing in for a test file the run never named), else the hub.
    """
    data_cfg = {"_target_": "bijdiff.data.WikiTextDataModule"} | module.hparams["cfg"]["data"]  # older checkpoints name no class
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "files"}
    stored = data_cfg.get("files") or {}
    given = {k: v for k, v in (cfg.data.files or {}).items() if v}
    path = given.get(cfg.split) or stored.get(cfg.split) or (stored.get("validation") if cfg.split == "test" else None)
    files = {cfg.split: path} if path else {}
    datamodule = build_datamodule(
        data_cfg, files=files, tokenizer_json=module.extra_state["tokenizer"], eval_batch_size=cfg.batch_size, **overrides
    )
    datamodule.setup("test")
    return datamodule, datamodule.splits[cfg.split], files
