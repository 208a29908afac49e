"""End to end: train → checkpoint → eval.py → metrics.json; resume; CLI errors."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bijdiff.app.checkpoint import load_module
from bijdiff.app.evaluate import evaluate
from bijdiff.app.train import train
from bijdiff.errors import CheckpointError
from bijdiff.lit.module import parameter_groups, warmup_cosine

from .conftest import ROOT, compose_config

EVAL_KEYS = {
    "nll_per_token", "ppl_bound_per_token", "ppl_bound_per_word", "n_tokens", "n_words",
    "unigram_ppl_per_token", "unigram_ppl_per_word", "nll_bound_stderr",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, wiki_files):
    """One tiny training run shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("trained")
    from .conftest import TINY

    cfg = compose_config(
        "train",
        TINY + [f"data.files.{k}={v}" for k, v in wiki_files.items()]
        + [f"paths.output_dir={tmp / 'run'}", f"paths.cache_dir={tmp / 'cache'}"],
    )
    return train(cfg), tmp


def test_train_writes_best_and_last_checkpoints(trained) -> None:
    result, _ = trained
    assert Path(result["best_ckpt"]).name == "best.ckpt" and Path(result["best_ckpt"]).is_file()
    assert Path(result["last_ckpt"]).name == "last.ckpt" and Path(result["last_ckpt"]).is_file()
    assert result["global_step"] == 4
    assert math.isfinite(result["best_val_nll"]) and result["best_val_nll"] > 0


def test_training_logs_the_promised_metrics(trained) -> None:
    result, _ = trained
    header = (Path(result["output_dir"]) / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss", "train/tokens_per_s", "train/grad_norm", "val/nll", "val/ppl", "val/ppl_word", "lr-AdamW/pg1"):
        assert any(h.startswith(key) for h in header), (key, header)


def test_checkpoint_carries_tokenizer_unigram_and_ema(trained) -> None:
    result, _ = trained
    module = load_module(result["last_ckpt"], use_ema=True)
    assert module.extra_state["tokenizer"].startswith("{")
    assert int(module.extra_state["unigram_counts"].sum()) > 0
    assert int(module.ema.num_updates) == 4
    live = load_module(result["last_ckpt"], use_ema=False)
    diffs = [(a - b).abs().max() for a, b in zip(module.model.parameters(), live.model.parameters())]
    assert max(diffs) > 0, "EMA weights should differ from the live weights after training"


def test_eval_cli_writes_metrics_json(trained, tmp_path: Path) -> None:
    result, tmp = trained
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "eval.py", f"ckpt_path={result['best_ckpt']}", f"output_json={out}",
         f"paths.log_dir={tmp_path / 'logs'}", f"paths.cache_dir={tmp / 'cache'}", "eval.t_samples=2", "device=cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert EVAL_KEYS <= set(metrics)
    run_dirs = list((tmp_path / "logs" / "eval" / "runs").iterdir())
    assert json.loads((run_dirs[0] / "metrics.json").read_text()) == metrics
    assert metrics["n_words"] == sum(len(line.split()) + 1 for line in Path(metrics["data_files"]["test"]).read_text().split("\n")[:-1])
    assert math.isclose(metrics["ppl_bound_per_word"], math.exp(metrics["nll_per_token"] * metrics["n_tokens"] / metrics["n_words"]), rel_tol=1e-9)
    assert metrics["nll_bound_stderr"] > 0


def test_evaluate_counts_every_test_token_once(trained, tmp_path: Path) -> None:
    result, tmp = trained
    cfg = compose_config("eval", [f"ckpt_path={result['best_ckpt']}", f"paths.output_dir={tmp_path}",
                                  f"paths.cache_dir={tmp / 'cache'}", "eval.t_samples=1", "device=cpu"])
    metrics = evaluate(cfg)
    module = load_module(result["best_ckpt"])
    from tokenizers import Tokenizer

    from bijdiff.data import read_lines
    from bijdiff.data.tokenizer import encode_lines

    tok = Tokenizer.from_str(module.extra_state["tokenizer"])
    assert metrics["n_tokens"] == len(encode_lines(tok, read_lines(metrics["data_files"]["test"])))
    assert metrics["nll_bound_stderr"] is None


def test_resume_continues_from_last_checkpoint(trained, tiny_train_cfg) -> None:
    result, _ = trained
    cfg = tiny_train_cfg("trainer.max_steps=6", f"ckpt_path={result['last_ckpt']}")
    resumed = train(cfg)
    assert resumed["global_step"] == 6
    assert int(load_module(resumed["last_ckpt"]).ema.num_updates) == 6


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_module(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_module(bad)


def test_cli_config_error_exits_2_with_one_line(tmp_path: Path, wiki_files) -> None:
    proc = subprocess.run(
        [sys.executable, "train.py", "model.n_heads=3", f"data.files.train={wiki_files['train']}",
         f"data.files.validation={wiki_files['validation']}", "data.vocab_size=300",
         f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=csv"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "bijdiff: error: model.d_model=256 must be divisible by model.n_heads=3" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("model", ["bijective", "hybrid"])
def test_bijective_and_hybrid_train_and_evaluate(model, tiny_train_cfg, tmp_path: Path, caplog) -> None:
    # a negative threshold makes the invertibility monitor warn at every check
    cfg = tiny_train_cfg(f"model={model}", "model.d_model=32", "model.n_heads=2", "model.cond_dim=16",
                         "callbacks.invertibility.every_n_steps=2", "callbacks.invertibility.threshold=-1")
    with caplog.at_level("INFO"):
        result = train(cfg)
    if model == "bijective":
        assert "trunk reconstruction error" in caplog.text and "exceeds -1" in caplog.text
    else:
        assert "not a bijection, nothing to monitor" in caplog.text
    header = (Path(result["output_dir"]) / "csv" / "metrics.csv").read_text().splitlines()[0]
    if model == "bijective":
        assert "invert/rel_error" in header and "invert/logdet_mean" in header
    else:
        assert "invert/rel_error" not in header
    metrics = evaluate(compose_config("eval", [f"ckpt_path={result['best_ckpt']}", f"paths.output_dir={tmp_path / 'eval'}",
                                               f"paths.cache_dir={cfg.paths.cache_dir}", "device=cpu", "eval.t_samples=2"]))
    assert metrics["model"] == model and math.isfinite(metrics["nll_per_token"])


@pytest.mark.parametrize("warmup, total", [(0, 100), (1, 24), (50, 500), (200, 20000)])
def test_the_lr_schedule_is_linear_warmup_then_cosine_to_the_floor(warmup: int, total: int) -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    scheduler = warmup_cosine(optimizer, warmup, total, floor=0.1)
    for step in range(total + 1):
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        expected = 3e-4 * ((step + 1) / warmup if step < warmup else cosine)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9), step
        optimizer.step()
        scheduler.step()


def test_weight_decay_shrinks_matrices_and_spares_embeddings_norms_and_biases() -> None:
    model = torch.nn.ModuleDict({"embed": torch.nn.Embedding(5, 4), "proj": torch.nn.Linear(4, 4),
                                 "norm": torch.nn.LayerNorm(4)})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay=0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # a zero gradient: only the decoupled decay can move a parameter
    optimizer.step()
    for name, p in model.named_parameters():
        decayed = name == "proj.weight"
        expected = before[name] * (1 - 0.1 * 0.5) if decayed else before[name]
        assert torch.equal(p.detach(), expected), name


def test_bf16_mixed_precision_trains_the_memory_efficient_bijective_trunk(wiki_files, tmp_path: Path) -> None:
    """Lightning's autocast around the reversible trunk's custom backward, the fused optimizer with clipping
    and the checkpoint: the run ends with finite weights and a finite validation bound. (On the CPU Lightning
    turns ``16-mixed`` into ``bf16-mixed``; the scaler's path is in ``test_host_sync.py``.)"""
    from .conftest import tiny_config

    result = train(tiny_config(wiki_files, tmp_path / "run", tmp_path / "cache", "model=bijective_affine",
                               "trainer.precision=bf16-mixed", "trainer.max_steps=3"))
    assert result["global_step"] == 3 and math.isfinite(result["best_val_nll"])
    state = torch.load(result["last_ckpt"], map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
