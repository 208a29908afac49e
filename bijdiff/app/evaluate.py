"""``evaluate(cfg)``: a checkpoint's likelihood (``mode=ppl``), samples (``sample``) or inverse (``invert``)."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset

from ..data import unigram_nll
from ..diffusion import exact_log_likelihood
from ..errors import ConfigError
from ..io import write_json_atomic
from ..lit import LitLanguageModel
from ..progress import Progress
from .checkpoint import load_module, load_split, pick_device
from .common import count_parameters, log, quiet_third_party_notices
from .rundir import claim_run_directory


def likelihood_metrics(cfg: DictConfig, module: LitLanguageModel, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """``−log p`` of the whole split: the ELBO bound (diffusion), exact (AR, or ``eval.exact`` on absorbing)."""
    e = cfg.eval
    if e.t_samples < 1:
        raise ConfigError(f"eval.t_samples must be ≥ 1, got {e.t_samples}")
    objective = module.objective
    exact = bool(e.exact) and objective.is_bound
    if exact and not objective.graph.absorbing:
        raise ConfigError("eval.exact=true needs an absorbing-graph model (diffusion=absorb): "
                          "exact likelihood unmasks left to right; the uniform graph has only the bound")
    datamodule, split, files = load_split(cfg, module)
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    loader = datamodule.eval_dataloader(cfg.split)
    subset = e.max_sequences is not None and int(e.max_sequences) < len(loader.dataset)
    if e.max_sequences is not None and int(e.max_sequences) < 1:
        raise ConfigError(f"eval.max_sequences must be ≥ 1 or null (the whole split), got {e.max_sequences}")
    if subset:  # the first blocks of the split: per-token numbers only, no word count
        loader = DataLoader(Subset(loader.dataset, range(int(e.max_sequences))), batch_size=loader.batch_size)
    samples = int(e.t_samples) if objective.is_bound else 1
    means, variances, counted, exact_nats, tokens = [], [], [], 0.0, 0
    seconds = {"bound": 0.0, "exact": 0.0}
    progress = Progress("eval", len(loader))
    for i, batch in enumerate(loader):
        x0, mask = batch["input_ids"].to(device), batch["loss_mask"].to(device)
        tick = time.perf_counter()
        est = objective.eval_nats(model, x0, mask, samples, generator).cpu().double()
        seconds["bound"] += time.perf_counter() - tick
        means.append(est.mean(1))
        if samples > 1:
            variances.append(est.var(1) / samples)
        if exact:
            tick = time.perf_counter()
            ll = exact_log_likelihood(model, objective.graph, objective.noise, x0, mask, int(e.exact_variants_per_call))
            exact_nats -= float(ll.cpu().double().sum())  # on the host: MPS has no float64
            seconds["exact"] += time.perf_counter() - tick
        tokens += int(mask.sum())
        if subset:
            counted.append(batch["input_ids"][batch["loss_mask"]])
        progress.update(i + 1)
    if not subset and tokens != split.n_tokens:
        raise RuntimeError(f"evaluation counted {tokens} tokens but the split has {split.n_tokens}")
    total = float(torch.cat(means).sum())
    counts = module.extra_state["unigram_counts"]
    counts = counts.numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    unigram_total = unigram_nll(counts, torch.cat(counted).numpy() if subset else split.ids)
    words = None if subset else split.n_words

    def per_word(nats: float) -> float | None:
        return math.exp(nats / words) if words else None

    metrics: dict[str, Any] = {
        "split": cfg.split,
        "subset": subset,
        "n_tokens": tokens,
        "n_words": words,
        "n_sequences": len(loader.dataset),
        "nll_per_token": total / tokens,
        "unigram_nll_per_token": unigram_total / tokens,
        "unigram_ppl_per_token": math.exp(unigram_total / tokens),
        "unigram_ppl_per_word": per_word(unigram_total),
        "eval_seconds": seconds["bound"],
        "data_files": files,
    }
    if objective.is_bound:
        metrics |= {
            "t_samples": samples,
            "nll_bound_stderr": math.sqrt(float(torch.cat(variances).sum())) / tokens if variances else None,
            "ppl_bound_per_token": math.exp(total / tokens),
            "ppl_bound_per_word": per_word(total),
        }
    else:
        exact_nats = total  # the AR model's likelihood is exact
    if exact or not objective.is_bound:
        metrics |= {
            "nll_exact_per_token": exact_nats / tokens,
            "ppl_exact_per_token": math.exp(exact_nats / tokens),
            "ppl_exact_per_word": per_word(exact_nats),
        }
        if exact:
            metrics["exact_seconds"] = seconds["exact"]
    print_likelihood_table(metrics, module)
    return metrics


def print_likelihood_table(metrics: dict[str, Any], module: LitLanguageModel) -> None:
    """A small rich table: bound and exact values next to the unigram reference."""
    from rich.console import Console
    from rich.table import Table

    name = module.hparams["cfg"]["model"]["name"]
    words = f"{metrics['n_words']:,} words" if metrics["n_words"] else f"first {metrics['n_sequences']:,} blocks"
    table = Table(title=f"{name} on {metrics['split']}: {metrics['n_tokens']:,} tokens, {words}")
    for col in ("", "nats/token", "ppl/token", "ppl/word"):
        table.add_column(col, justify="right")

    def row(label: str, nll: str, key: str) -> None:
        per_word = metrics[f"{key}_per_word"]
        table.add_row(label, nll, f"{metrics[f'{key}_per_token']:.2f}", "–" if per_word is None else f"{per_word:.2f}")

    if "ppl_bound_per_token" in metrics:
        se = metrics["nll_bound_stderr"]
        row("model (ELBO bound)", f"{metrics['nll_per_token']:.4f}" + (f" ± {se:.4f}" if se is not None else ""), "ppl_bound")
    if "ppl_exact_per_token" in metrics:
        row("model (exact)", f"{metrics['nll_exact_per_token']:.4f}", "ppl_exact")
    row("unigram (add-½)", f"{metrics['unigram_nll_per_token']:.4f}", "unigram_ppl")
    Console(stderr=True).print(table)


def _modes() -> dict[str, Callable[..., dict[str, Any]]]:
    from .inversion import inversion_metrics
    from .sampling import sample_metrics

    return {"ppl": likelihood_metrics, "sample": sample_metrics, "invert": inversion_metrics}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation ``cfg.mode`` on ``cfg.ckpt_path``; write and return ``metrics.json``.

    Its output directory must be new or empty, like a training run's (``claim_run_directory``).
    """
    with claim_run_directory(cfg, None, task="eval"):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    modes = _modes()
    if cfg.mode not in modes:
        raise ConfigError(f"unknown mode={cfg.mode!r}; choose one of {list(modes)}")
    if cfg.split not in ("validation", "test"):
        raise ConfigError(f"split must be validation or test, got {cfg.split!r}")
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    quiet_third_party_notices()
    module = load_module(cfg.ckpt_path, cfg.use_ema)
    device = pick_device(cfg.device)
    model = module.model.to(device).eval()
    trained = module.hparams["cfg"]
    metrics = {
        "mode": cfg.mode,
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "model": trained["model"]["name"],
        "graph": None if trained["model"]["name"] == "ar" else trained["diffusion"]["graph"],
        "parameters": count_parameters(model),
        "weights": "ema" if cfg.use_ema and module.ema is not None else "live",
        "global_step": module.extra_state.get("global_step"),
        "device": str(device),
    }
    metrics |= modes[cfg.mode](cfg, module, model, device)
    paths = [write_json_atomic(Path(cfg.paths.output_dir) / "metrics.json", metrics)]
    if cfg.get("output_json"):
        paths.append(write_json_atomic(cfg.output_json, metrics))
    log.info("metrics written to %s", ", ".join(map(str, paths)))
    print(f"bijdiff: metrics written to {', '.join(map(str, paths))}", flush=True)
    return metrics
