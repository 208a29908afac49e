"""The crossover study's reading of curves: early-stopping rule, the crossover step, and its report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "study"))
crossover = pytest.importorskip("crossover")

AR = {50: 6.0, 100: 5.2, 150: 5.0, 200: 5.1, 250: 5.3}                 # peaks at 150, then overfits
DIFFUSION = {100: 6.5, 200: 5.6, 300: 5.05, 400: 4.98, 500: 4.97}        # first below 5.0 at 400


def write_curve(out: Path, name: str, curve: dict[int, float], steps_per_epoch: float = 50.0) -> None:
    """A curve file as ``save_curve`` writes it, with epochs."""
    (out / "curves").mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{s},{v},{s / steps_per_epoch}\n" for s, v in curve.items())
    (out / "curves" / f"{name}.csv").write_text("step,val_nll,epochs\n" + rows)


def test_stopped_early_follows_the_patience_rule() -> None:
    assert crossover.stopped_early(AR, patience=2)        # 200 and 250 both fail to beat 5.0
    assert not crossover.stopped_early(AR, patience=3)    # 150 is inside the last three and is the best
    assert not crossover.stopped_early(DIFFUSION, patience=2)
    assert not crossover.stopped_early(AR, patience=0)


def test_crossover_step_carries_the_stopped_model_s_best() -> None:
    # the AR model stopped at 250 keeps its best 5.0; the diffusion model's best so far is below it from 400
    assert crossover.crossover_step([AR], [DIFFUSION]) == 400
    assert crossover.crossover_step([AR], [{k: v + 0.1 for k, v in DIFFUSION.items()}]) is None
    # over seeds it is the mean of each seed's best so far: 4.98 and 5.03 average 5.005, above 5.0, until 500
    other = {k: v + 0.05 for k, v in DIFFUSION.items()}
    assert crossover.crossover_step([AR], [DIFFUSION, other]) == 500


def test_best_step_and_evaluated_step(tmp_path: Path) -> None:
    assert crossover.best_step(AR) == 150
    assert crossover.evaluated_step(tmp_path / "missing.json") is None
    (tmp_path / "r.json").write_text(json.dumps({"global_step": 400}))
    assert crossover.evaluated_step(tmp_path / "r.json") == 400


def test_report_states_the_crossover_epoch_and_runs_stopped_by_hand(tmp_path: Path) -> None:
    write_curve(tmp_path, "ar", AR)
    write_curve(tmp_path, "bijective-affine", DIFFUSION)
    (tmp_path / "ar-ppl.json").write_text(json.dumps({"nll_exact_per_token": 5.1, "ppl_exact_per_word": 800.0}))
    (tmp_path / "bijective-affine-ppl.json").write_text(json.dumps(
        {"nll_per_token": 5.2, "nll_bound_stderr": 0.02, "ppl_bound_per_word": 900.0, "nll_exact_per_token": 5.05}))
    text = crossover.report(tmp_path, ["ar", "bijective_affine"], [0], {"bijective-affine": 500})
    assert "| `ar` | 1 | 5.000 | 3 | 5 |" in text                              # best 5.0 at step 150 = epoch 3
    assert "crosses below the AR model's at epoch 8 (step 400)" in text
    assert "exact 5.050 nats/token by ordered unmasking (bound 5.200 ± 0.020)" in text
    assert "`bijective-affine` stopped at step 500 before its budget or patience ran out" in text
