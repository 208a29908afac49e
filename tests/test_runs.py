"""What users run around training: W&B offline runs, Hydra multirun sweeps, samples while training."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from bijdiff.app.train import train

from .conftest import ROOT, TINY


def test_wandb_offline_run_records_metrics_config_samples_and_invertibility(tiny_train_cfg, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = tiny_train_cfg("logger=wandb", "model=bijective", "callbacks.invertibility.every_n_steps=2")
    result = train(cfg)
    runs = list((Path(result["output_dir"]) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    # wandb's offline record file is protobuf: keys and config values appear in it verbatim
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"train/loss", b"val/nll", b"invert/rel_error", b"invert/logdet_mean", b"samples", b"memory_efficient"):
        assert key in record, key
    tables = list((runs[0] / "files" / "media" / "table").glob("samples_*.table.json"))
    assert len(tables) == 2
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["step", "sample"] and len(table["data"]) == 4
    lines = (Path(result["output_dir"]) / "samples_during_training.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 4 and json.loads(lines[0])["step"] == 2  # two validations, four samples each


def test_multirun_sweep_runs_one_job_per_model_with_its_own_outputs(wiki_files, tmp_path: Path) -> None:
    args = [sys.executable, "train.py", "-m", "model=standard,bijective", *TINY, "trainer.max_steps=2",
            *[f"data.files.{k}={v}" for k, v in wiki_files.items()], f"paths.log_dir={tmp_path}",
            f"paths.cache_dir={tmp_path / 'cache'}", "logger=csv"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "train" / "multiruns").glob("*/*/"))
    jobs = [j for j in jobs if (j / ".hydra").is_dir()]
    assert len(jobs) == 2, jobs
    names = set()
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        names |= {o.split("=")[1] for o in overrides if o.startswith("model=")}
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert (job / "csv" / "metrics.csv").read_text().count("\n") > 1
    assert names == {"standard", "bijective"}
