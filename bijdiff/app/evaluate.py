"""``evaluate(cfg)``: the likelihood bound of a checkpoint's EMA weights on a split, as metrics.json."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..data import unigram_nll
from ..diffusion import elbo_nats
from ..errors import CheckpointError, ConfigError
from ..lit import DiffusionLM
from .common import count_parameters, log, write_json_atomic
from .train import build_datamodule


def load_module(ckpt_path: str | Path, use_ema: bool = True) -> DiffusionLM:
    """Load a training checkpoint; with ``use_ema`` the model holds the EMA weights."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (pass ckpt_path=PATH to a .ckpt file written by train.py)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        hparams = ckpt["hyper_parameters"]
        module = DiffusionLM(hparams["cfg"], hparams["num_tokens"])
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


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Estimate the ELBO over the whole split; write and return the metrics."""
    if cfg.t_samples < 1:
        raise ConfigError(f"t_samples must be ≥ 1, got {cfg.t_samples}")
    if cfg.split not in ("validation", "test"):
        raise ConfigError(f"split must be validation or test, got {cfg.split!r}")
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    module = load_module(cfg.ckpt_path, cfg.use_ema)
    device = pick_device(cfg.device)
    model = module.model.to(device).eval()

    data_cfg = dict(module.hparams["cfg"]["data"])
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "files"}
    stored = data_cfg.get("files") or {}
    given = {k: v for k, v in (cfg.data.files or {}).items() if v}
    path = given.get(cfg.split) or stored.get(cfg.split) or (stored.get("validation") if cfg.split == "test" else None)
    files = {cfg.split: path} if path else {}  # none: the hub, as in training
    datamodule = build_datamodule(
        data_cfg, files=files, tokenizer_json=module.extra_state["tokenizer"], eval_batch_size=cfg.batch_size, **overrides
    )
    datamodule.setup("test")
    split = datamodule.splits[cfg.split]

    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    loader = datamodule.eval_dataloader(cfg.split)
    means, variances, tokens = [], [], 0
    start = time.perf_counter()
    for i, batch in enumerate(loader):
        x0, mask = batch["input_ids"].to(device), batch["loss_mask"].to(device)
        est = elbo_nats(model, module.graph, module.noise, x0, mask, int(cfg.t_samples), generator).cpu().double()
        means.append(est.mean(1))
        if cfg.t_samples > 1:
            variances.append(est.var(1) / cfg.t_samples)
        tokens += int(mask.sum())
        if (i + 1) % max(1, len(loader) // 10) == 0 or i + 1 == len(loader):
            print(f"eval: {i + 1}/{len(loader)} batches, {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    total = float(torch.cat(means).sum())
    if tokens != split.n_tokens:
        raise RuntimeError(f"evaluation counted {tokens} tokens but the split has {split.n_tokens}")
    stderr = math.sqrt(float(torch.cat(variances).sum())) / tokens if variances else None

    counts = module.extra_state["unigram_counts"]
    counts = counts.numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    unigram_total = unigram_nll(counts, split.ids)
    nll = total / tokens
    metrics = {
        "split": cfg.split,
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "model": module.hparams["cfg"]["model"]["name"],
        "graph": module.hparams["cfg"]["diffusion"]["graph"],
        "parameters": count_parameters(model),
        "weights": "ema" if cfg.use_ema and module.ema is not None else "live",
        "global_step": module.extra_state.get("global_step"),
        "n_tokens": tokens,
        "n_words": split.n_words,
        "n_sequences": len(loader.dataset),
        "t_samples": int(cfg.t_samples),
        "nll_per_token": nll,
        "nll_bound_stderr": stderr,
        "ppl_bound_per_token": math.exp(nll),
        "ppl_bound_per_word": math.exp(total / split.n_words),
        "unigram_nll_per_token": unigram_total / tokens,
        "unigram_ppl_per_token": math.exp(unigram_total / tokens),
        "unigram_ppl_per_word": math.exp(unigram_total / split.n_words),
        "eval_seconds": seconds,
        "device": str(device),
        "data_files": files,
    }
    paths = [write_json_atomic(Path(cfg.paths.output_dir) / "metrics.json", metrics)]
    if cfg.get("output_json"):
        paths.append(write_json_atomic(cfg.output_json, metrics))
    print_table(metrics)
    log.info("metrics written to %s", ", ".join(map(str, paths)))
    print(f"bijdiff: metrics written to {', '.join(map(str, paths))}", flush=True)
    return metrics


def print_table(metrics: dict[str, Any]) -> None:
    """A small rich table: the model's bound next to the unigram reference."""
    from rich.console import Console
    from rich.table import Table

    se = metrics["nll_bound_stderr"]
    table = Table(title=f"{metrics['model']} ({metrics['graph']}) on {metrics['split']}: "
                        f"{metrics['n_tokens']:,} tokens, {metrics['n_words']:,} words")
    for col in ("", "nats/token", "ppl/token", "ppl/word"):
        table.add_column(col, justify="right")
    nll = f"{metrics['nll_per_token']:.4f}" + (f" ± {se:.4f}" if se is not None else "")
    table.add_row("model (ELBO bound)", nll, f"{metrics['ppl_bound_per_token']:.2f}", f"{metrics['ppl_bound_per_word']:.2f}")
    table.add_row("unigram (add-½)", f"{metrics['unigram_nll_per_token']:.4f}",
                  f"{metrics['unigram_ppl_per_token']:.2f}", f"{metrics['unigram_ppl_per_word']:.2f}")
    Console().print(table)
