"""``mode=sample``: draw sequences from a checkpoint, write them as JSONL and measure them."""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tokenizers import Tokenizer

from ..data.tokenizer import decode_ids
from ..diffusion import SAMPLERS
from ..errors import ConfigError
from ..io import write_text_atomic
from ..lit import LitLanguageModel
from ..progress import Progress
from .checkpoint import load_module
from .common import log


def sample_statistics(ids: torch.Tensor) -> dict[str, float]:
    """Mean per-sample unigram entropy (nats; low means repetitive) and distinct-n for n = 1..4."""
    entropies, stats = [], {}
    rows = ids.tolist()
    for row in rows:
        counts = torch.tensor(list(Counter(row).values()), dtype=torch.float64)
        p = counts / counts.sum()
        entropies.append(float(-(p * p.log()).sum()))
    stats["entropy"] = sum(entropies) / len(entropies)
    for n in range(1, 5):
        grams = [tuple(row[i : i + n]) for row in rows for i in range(len(row) - n + 1)]
        stats[f"distinct_{n}"] = len(set(grams)) / max(1, len(grams))
    return stats


def judge_nll(judge_ckpt: str, module: LitLanguageModel, ids: torch.Tensor, device: torch.device, batch_size: int) -> dict[str, Any]:
    """Generative perplexity: ``exp`` of the judge's (an AR checkpoint's) exact NLL per token of the samples."""
    judge = load_module(judge_ckpt)
    if judge.objective.is_bound:
        raise ConfigError(f"judge_ckpt={judge_ckpt} is a {judge.hparams['cfg']['model']['name']} model: "
                          "the judge must be an autoregressive checkpoint (train.py model=ar)")
    if judge.extra_state["tokenizer"] != module.extra_state["tokenizer"]:
        raise ConfigError("the judge was trained with a different tokenizer: train both on the same data and data.vocab_size")
    judge_len = judge.hparams["cfg"]["data"]["seq_len"]
    if ids.shape[1] > judge_len:
        log.warning("samples of %d tokens are longer than the judge's training length %d", ids.shape[1], judge_len)
    model = judge.model.to(device).eval()
    with torch.no_grad():
        nats = sum(float(model.nll(chunk.to(device)).sum()) for chunk in ids.split(batch_size))
    return {"judge_ckpt": str(Path(judge_ckpt).resolve()), "gen_nll_per_token": nats / ids.numel(),
            "gen_ppl": math.exp(nats / ids.numel())}


def sample_metrics(cfg: DictConfig, module: LitLanguageModel, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Draw ``sample.num_samples`` sequences; JSONL, entropy, distinct-n, tokens/s, judge perplexity."""
    s = cfg.sample
    is_ar = not module.objective.is_bound
    if not is_ar and s.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sample.sampler={s.sampler!r}; choose one of {list(SAMPLERS)}")
    if s.num_samples < 1 or s.batch_size < 1:
        raise ConfigError("sample.num_samples and sample.batch_size must be ≥ 1")
    temperature = float(s.temperature)
    length = int(s.length or module.hparams["cfg"]["data"]["seq_len"])
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    chunks, calls, progress, start = [], 0.0, Progress("sample", int(s.num_samples)), time.perf_counter()
    for first in range(0, int(s.num_samples), int(s.batch_size)):
        shape = (min(int(s.batch_size), int(s.num_samples) - first), length)
        stats: dict[str, float] = {}
        chunks.append(module.objective.sample(model, shape, int(s.steps), s.sampler, device, generator, stats, temperature).cpu())
        calls += stats["network_calls_per_sample"] * shape[0]
        progress.update(first + shape[0])
    seconds = time.perf_counter() - start
    ids = torch.cat(chunks)
    sampler = "ancestral" if is_ar else s.sampler
    tokenizer = Tokenizer.from_str(module.extra_state["tokenizer"])
    rows = [{"index": i, "text": decode_ids(tokenizer, row), "ids": row} for i, row in enumerate(ids.tolist())]
    path = write_text_atomic(Path(cfg.paths.output_dir) / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    metrics = {
        "sampler": sampler,
        "steps": int(s.steps) if sampler in ("euler", "analytic") else length,
        "temperature": temperature,
        "network_calls_per_sample": calls / len(ids),
        "num_samples": len(rows),
        "length": length,
        "sample_seconds": seconds,
        "tokens_per_s": ids.numel() / seconds,
        "samples_path": str(path),
        **sample_statistics(ids),
    }
    if cfg.judge_ckpt:
        metrics |= judge_nll(cfg.judge_ckpt, module, ids, device, int(s.batch_size))
    print("\n---\n".join(r["text"] for r in rows[:3]), flush=True)
    return metrics
