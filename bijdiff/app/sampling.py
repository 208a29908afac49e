"""``mode=sample``: draw sequences from a checkpoint (optionally around given text), write them as JSONL and measure them."""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..errors import ConfigError
from ..io import write_text_atomic
from ..lit import LitLanguageModel
from ..progress import Progress
from .checkpoint import load_module
from .common import log
from .generation import TextGenerator

PRINTED_CONDITIONAL = 16  # completed texts printed by a prompted run (all of them go to samples.jsonl)


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
    """Draw ``sample.num_samples`` sequences, conditioned on ``sample.prefix`` / ``sample.suffix`` around
    ``sample.fill`` generated tokens if given; JSONL, entropy, distinct-n, tokens/s, judge perplexity."""
    s = cfg.sample
    generator = TextGenerator(module, device)
    conditional = bool(s.get("prefix") or s.get("suffix"))
    given = generator.given_ids(s.get("prefix") or "", s.get("suffix") or "", s.get("fill"), s.length)
    progress, start = Progress("sample", int(s.num_samples)), time.perf_counter()
    ids, calls = generator.sample_ids(given, int(s.num_samples), s.sampler, int(s.steps), float(s.temperature), int(cfg.seed),
                                      int(s.batch_size), on_batch=progress.update, blocks=int(s.blocks))
    seconds = time.perf_counter() - start
    completions = generator.completions(ids, given)
    rows = [{"index": i, "text": c.text, "ids": c.ids, "given": c.given} for i, c in enumerate(completions)]
    path = write_text_atomic(Path(cfg.paths.output_dir) / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    generated = int((given < 0).sum()) * len(ids)
    sampler = "ancestral" if generator.is_ar else s.sampler
    metrics = {
        "sampler": sampler,
        "steps": int(s.steps) if sampler in ("euler", "analytic", "confident", "blockwise") else int((given < 0).sum()),
        **({"blocks": int(s.blocks)} if sampler == "blockwise" else {}),
        "temperature": float(s.temperature),
        "network_calls_per_sample": calls,
        "num_samples": len(rows),
        "length": ids.shape[1],
        "given_positions": int((given >= 0).sum()),
        "sample_seconds": seconds,
        "tokens_per_s": generated / seconds,
        "samples_path": str(path),
        **sample_statistics(ids[:, given < 0]),  # of the generated tokens: the given ones are the same in every row
    }
    if cfg.judge_ckpt:
        metrics |= judge_nll(cfg.judge_ckpt, module, ids, device, int(s.batch_size))
    shown = rows[:PRINTED_CONDITIONAL] if conditional else rows[:3]
    print("\n---\n".join(r["text"] for r in shown), flush=True)
    if len(shown) < len(rows):
        print(f"({len(rows) - len(shown)} more in {path})", flush=True)
    return metrics
