"""What a user sees on a first run: clear errors before any work, a true summary, no third-party noise."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from bijdiff.app.preflight import check_accelerator, check_numbers
from bijdiff.app.train import _instantiate_logger, train
from bijdiff.errors import ConfigError
from bijdiff.lit.progress import StepRichProgressBar
from bijdiff.models import build_model, describe_model, model_label

from .conftest import ROOT, TINY, compose_config, tiny_config

# printed by Lightning, torch or W&B on every run before these were silenced or their causes removed
NOTICES = ("💡 Tip", "LeafSpec", "weights_only", "Total FLOPs", "ckpt_path=None", "HINT: Set", "anonymous",
           "Epoch 0/-2", "100% of the batches")


def test_a_run_prints_no_third_party_notices(wiki_files, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", *TINY, *[f"data.files.{k}={v}" for k, v in wiki_files.items()],
         f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}", "logger=wandb", "trainer.limit_val_batches=1.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "offline"},
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert [n for n in NOTICES if n in output] == [], output
    assert "done at step 4" in output
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "train.log").is_file()


def test_the_rich_bar_names_no_negative_epoch_count() -> None:
    bar = StepRichProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1, max_steps=500)
    assert bar._get_train_description(0).strip() == "Epoch 0"


def _train_quietly(capsys: pytest.CaptureFixture, cfg) -> tuple[dict, str]:
    result = train(cfg)
    return result, capsys.readouterr().out


def test_the_summary_says_when_no_validation_ran_and_where_checkpoints_went(wiki_files, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    result, out = _train_quietly(capsys, tiny_config(wiki_files, tmp_path / "a", cache, "model=ar",
                                                     "trainer.max_steps=2", "trainer.val_check_interval=1000"))
    line = next(x for x in out.splitlines() if x.startswith("bijdiff: done"))
    assert "nan" not in line and "no validation ran (trainer.val_check_interval=1000, trainer.max_steps=2)" in line
    assert f"checkpoints in {tmp_path / 'a' / 'checkpoints'};" in line
    # resumed into a new directory: the summary names the new run's folder, where its last.ckpt went
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    result, out = _train_quietly(capsys, tiny_config(wiki_files, tmp_path / "b", cache, "model=ar", "trainer.max_steps=4",
                                                     "trainer.val_check_interval=2", f"ckpt_path={last}"))
    line = next(x for x in out.splitlines() if x.startswith("bijdiff: done"))
    assert f"checkpoints in {tmp_path / 'b' / 'checkpoints'};" in line and (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    assert "best validation NLL (exact)" in line  # the AR model's likelihood is exact, not a bound
    assert "validation @ step 4: nll " in out and "nll bound" not in out


def test_a_diffusion_run_reports_a_bound(tiny_train_cfg, capsys) -> None:
    _, out = _train_quietly(capsys, tiny_train_cfg("trainer.max_steps=2"))
    assert "best validation NLL bound" in out and "validation @ step 2: nll bound" in out


def _no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("named", ["mps", "gpu"])
def test_a_missing_accelerator_is_refused_before_any_work(wiki_files, tmp_path: Path, monkeypatch, named) -> None:
    _no_accelerators(monkeypatch)
    # (the tiny config's trainer.accelerator=cpu would override the accelerator of trainer=gpu/mps)
    cfg = tiny_config(wiki_files, tmp_path / "run", tmp_path / "cache", f"trainer={named}", f"trainer.accelerator={named}")
    with pytest.raises(ConfigError, match=rf"trainer.accelerator={named}.*use trainer=cpu"):
        train(cfg)
    assert not (tmp_path / "cache").exists(), "data was loaded before the accelerator was checked"
    assert not (tmp_path / "run").exists(), "the failed run left its directory behind"


def test_an_available_accelerator_passes(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_accelerator(OmegaConf.create({"accelerator": "gpu", "devices": 2}))
    with pytest.raises(ConfigError, match="trainer.devices=4 but 2 CUDA GPU"):
        check_accelerator(OmegaConf.create({"accelerator": "gpu", "devices": 4}))
    with pytest.raises(ConfigError, match="trainer.accelerator='tpu'"):
        check_accelerator(OmegaConf.create({"accelerator": "tpu", "devices": 1}))


@pytest.mark.parametrize("override,message", [
    ("trainer.max_steps=abc", "trainer.max_steps must be an integer, got 'abc'"),
    ("data.batch_size=1.5", "data.batch_size must be an integer, got 1.5"),
    ("optim.lr=fast", "optim.lr must be a number, got 'fast'"),
    ("trainer.max_steps=0", "trainer.max_steps must be ≥ 1"),
])
def test_a_setting_that_is_not_a_number_is_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_numbers(compose_config("train", [override]))


def test_the_default_config_passes_the_checks() -> None:
    check_numbers(compose_config("train", []))


def test_eval_without_ckpt_path_says_what_to_add(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "eval.py", f"paths.log_dir={tmp_path}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "bijdiff: error: ckpt_path is required: add ckpt_path=<run>/checkpoints/best.ckpt to the command"
    assert not list((tmp_path / "eval" / "runs").iterdir()), "the failed evaluation left its run directory behind"


def test_the_cpu_preset_is_suggested_for_a_long_cpu_run(tiny_train_cfg, caplog) -> None:
    cfg = tiny_train_cfg("trainer.max_steps=20000", "data.files.train=/nonexistent/wiki.train.tokens")
    with caplog.at_level("INFO"), pytest.raises(Exception, match="data file not found"):
        train(cfg)
    assert "experiment=cpu is the preset sized for a CPU" in caplog.text


def test_the_affine_model_is_labelled_as_such(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config("train", ["model=bijective_affine", "logger=wandb", "model.d_model=32", "model.n_heads=2",
                                   "model.cond_dim=16", "model.n_layers=1", "data.vocab_size=50", f"paths.output_dir={tmp_path}"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert model_label(plain["model"]) == "bijective_affine"
    assert describe_model(plain, build_model(plain)).startswith("bijective_affine: 1/1 reversible blocks")
    logger = _instantiate_logger(cfg.logger.wandb, plain)
    assert logger._wandb_init["name"] == "train-bijective_affine-absorb" and "anonymous" not in logger._wandb_init


def test_trunk_checks_are_logged_at_the_steps_of_train_and_val_rows(tiny_train_cfg) -> None:
    result = train(tiny_train_cfg("model=bijective", "callbacks.invertibility.every_n_steps=2"))
    with open(Path(result["output_dir"]) / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    invert = [r["step"] for r in rows if r.get("invert/rel_error")]
    validation = [r["step"] for r in rows if r.get("val/nll")]
    assert invert == validation == ["1", "3"]
    epochs = [float(r["val/epochs"]) for r in rows if r.get("val/nll")]  # passes over the training split
    assert 0 < epochs[0] and epochs[1] == pytest.approx(2 * epochs[0])
