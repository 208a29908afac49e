"""The many-epoch comparison: early-stopping bookkeeping, the crossover epoch, and one tiny end-to-end run."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

STUDY = Path(__file__).resolve().parents[1]
ROOT = STUDY.parent
sys.path.insert(0, str(STUDY))
sys.path.insert(0, str(ROOT / "tests"))
from crossover import best_step, crossover_step, outdated, report, run_name, stopped_early, train_command  # noqa: E402
from conftest import TINY  # noqa: E402

from bijdiff.data.synthetic import write_synthetic_splits  # noqa: E402


def test_a_run_stopped_early_once_patience_validations_failed_to_improve() -> None:
    falling = {100: 6.0, 200: 5.5, 300: 5.4, 400: 5.3}
    assert not stopped_early(falling, patience=2)
    turned = {100: 6.0, 200: 5.5, 300: 5.6, 400: 5.5}  # equal to the best is no improvement
    assert stopped_early(turned, patience=2)
    assert not stopped_early(turned, patience=3)  # the best is one of the last three
    assert not stopped_early(turned, patience=0)  # early stopping off


def test_the_crossover_is_where_the_diffusion_models_best_so_far_drops_below_the_ar_models() -> None:
    ar = {100: 5.0, 200: 4.8, 300: 4.9, 400: 5.1}  # overfits after step 200: its best stays 4.8
    diffusion = {100: 6.0, 200: 5.5, 300: 4.85, 400: 4.7}
    assert crossover_step([ar], [diffusion]) == 400  # at step 300 it is below AR's current 4.9 but not its best 4.8
    assert crossover_step([ar], [{s: v + 1 for s, v in diffusion.items()}]) is None


def test_a_run_that_stopped_early_keeps_its_best_and_seeds_are_averaged_on_their_bests() -> None:
    """The AR runs stop at steps 300 and 400; the diffusion runs go on to 800 and cross after both stopped."""
    ar = [{100: 5.0, 200: 4.8, 300: 4.9}, {100: 5.1, 200: 4.9, 300: 4.7, 400: 4.8}]  # final bests 4.8 and 4.7
    diffusion = [{s: 6.2 - s / 500 for s in range(100, 900, 100)}, {s: 6.3 - s / 500 for s in range(100, 900, 100)}]
    # mean of the diffusion bests at step s: 6.25 - s/500 < 4.75 from s = 800 (4.65) but not at 700 (4.85)
    assert crossover_step(ar, diffusion) == 800
    flat = [{s: max(v, 4.76) for s, v in c.items()} for c in diffusion]  # levels off just above AR's final 4.75
    assert crossover_step(ar, flat) is None


def test_only_the_ar_model_gets_the_regularisation_and_early_stopping_composes(tmp_path: Path) -> None:
    args = argparse.Namespace(preset="data_constrained", steps=300, patience=4, ar_set=["model.dropout=0.3"], set=[])
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for model, dropout in (("ar", 0.3), ("standard", 0.1)):
            cmd = train_command(model, 1, tmp_path / "run", [], args)
            cfg = compose("train", overrides=[a for a in cmd[2:] if not a.startswith("hydra.")])
            assert (cfg.model.name, cfg.model.dropout, cfg.seed, cfg.trainer.max_steps) == (model, dropout, 1, 300)
            assert cfg.callbacks.early_stopping.patience == 4 and cfg.callbacks.early_stopping.monitor == "val/nll"
    assert run_name("bijective_affine", 0) == "bijective-affine" and run_name("ar", 1) == "ar-seed1"


AR = {50: 6.0, 100: 5.2, 150: 5.0, 200: 5.1, 250: 5.3}                 # peaks at 150, then overfits
DIFFUSION = {100: 6.5, 200: 5.6, 300: 5.05, 400: 4.98, 500: 4.97}        # first below 5.0 at 400


def write_curve(out: Path, name: str, curve: dict[int, float], steps_per_epoch: float = 50.0) -> None:
    """A curve file as ``save_curve`` writes it, with epochs."""
    (out / "curves").mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{s},{v},{s / steps_per_epoch}\n" for s, v in curve.items())
    (out / "curves" / f"{name}.csv").write_text("step,val_nll,epochs\n" + rows)


def test_an_evaluation_is_outdated_when_the_best_checkpoint_moved_or_the_bound_is_too_noisy(tmp_path: Path) -> None:
    assert best_step(AR) == 150
    assert not outdated(tmp_path / "missing.json", 400, 16)
    (tmp_path / "r.json").write_text(json.dumps({"global_step": 400, "t_samples": 4}))
    assert not outdated(tmp_path / "r.json", 400, None)      # exact (AR): the draws do not matter
    assert outdated(tmp_path / "r.json", 400, 16)            # a bound with 4 draws, 16 wanted
    assert outdated(tmp_path / "r.json", 600, None)          # the run found a better checkpoint
    (tmp_path / "r.json").write_text(json.dumps({"global_step": 400, "t_samples": 16}))
    assert not outdated(tmp_path / "r.json", 400, 16)


def test_report_states_the_crossover_epoch_and_runs_stopped_by_hand(tmp_path: Path) -> None:
    write_curve(tmp_path, "ar", AR)
    write_curve(tmp_path, "bijective-affine", DIFFUSION)
    (tmp_path / "ar-ppl.json").write_text(json.dumps({"nll_exact_per_token": 5.1, "ppl_exact_per_word": 800.0}))
    (tmp_path / "bijective-affine-ppl.json").write_text(json.dumps(
        {"nll_per_token": 5.2, "nll_bound_stderr": 0.02, "ppl_bound_per_word": 900.0, "nll_exact_per_token": 5.05}))
    text = report(tmp_path, ["ar", "bijective_affine"], [0], {"bijective-affine": 500})
    assert "| `ar` | 1 | 5.000 | 3 | 5 |" in text                              # best 5.0 at step 150 = epoch 3
    assert "crosses below the AR model's at epoch 8 (step 400)" in text
    assert "exact 5.050 nats/token by ordered unmasking (bound 5.200 ± 0.020)" in text
    assert "`bijective-affine` stopped at step 500 before its budget or patience ran out" in text


@pytest.mark.slow
def test_two_tiny_models_train_stop_and_are_compared(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic_splits(data)
    out = tmp_path / "out"
    tiny = [a for a in TINY if not a.startswith("trainer.max_steps")]
    cmd = [sys.executable, str(STUDY / "crossover.py"), "--data", str(data), "--runs", str(tmp_path / "runs"),
           "--out", str(out), "--models", "ar", "standard", "--seeds", "0", "--steps", "6", "--patience", "1",
           "--set", *tiny, f"paths.cache_dir={tmp_path / 'cache'}", "logger=csv",
           "--eval-set", "eval.max_sequences=4", f"paths.cache_dir={tmp_path / 'cache'}"]
    subprocess.run(cmd, cwd=ROOT, check=True, env={"BIJDIFF_CACHE_DIR": str(tmp_path / "cache"), **_env()})

    for name in ("ar", "standard"):
        curve = (out / "curves" / f"{name}.csv").read_text().splitlines()
        assert curve[0] == "step,val_nll,epochs" and len(curve) >= 2
        assert 0 < float(curve[-1].split(",")[2])  # epochs grow with the steps
    standard = json.loads((out / "standard-ppl.json").read_text())
    assert "nll_exact_per_token" in standard and "nll_bound_stderr" in standard  # bound and ordered-unmasking exact
    report = (out / "crossover.md").read_text()
    assert "| `ar` | 1 |" in report and "| `standard` | 1 |" in report
    assert "- `standard`: the best validation NLL so far (mean over seeds) " in report
    assert "- `standard`: exact " in report  # the ordered-unmasking likelihood next to the bound
    assert (out / "val_nll_vs_epochs.png").stat().st_size > 0
    # a second call finds both runs finished and every evaluation done: nothing is trained again
    again = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=_env())
    assert "$ train.py" not in again.stdout
    # --no-eval reports what is there: a missing evaluation stays missing instead of being made
    (out / "standard-ppl.json").unlink()
    report_only = [a for a in cmd if a not in ("--data", str(data))] + ["--no-eval"]
    quiet = subprocess.run(report_only, cwd=ROOT, check=True, capture_output=True, text=True, env=_env())
    assert "$ eval.py" not in quiet.stdout and not (out / "standard-ppl.json").exists()
    reported = (out / "crossover.md").read_text()
    assert "- `standard`: exact " not in reported and "| `ar` | 0 | exact " in reported  # what exists is still reported


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "BIJDIFF_CACHE_DIR"}


def test_a_run_directory_without_a_checkpoint_is_refused_not_overwritten(tmp_path: Path) -> None:
    from crossover import train_runs

    (tmp_path / "runs" / "ar").mkdir(parents=True)
    args = argparse.Namespace(data=tmp_path / "data", runs=tmp_path / "runs", models=["ar"], seeds=[0], patience=5)
    with pytest.raises(SystemExit, match="exists without checkpoints/last.ckpt .* delete it"):
        train_runs(args)
