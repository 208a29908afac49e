"""The distillation rounds' bookkeeping: each round halves the steps."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distillation import check_halving  # noqa: E402


def test_rounds_must_halve_the_steps() -> None:
    check_halving([32, 16, 8, 4])
    check_halving([8])
    for bad in ([32, 8], [16, 8, 3], [0], [], [6, 3, 1]):
        with pytest.raises(SystemExit, match="each round halves the steps"):
            check_halving(bad)


def test_a_kept_round_of_another_method_is_refused(tmp_path: Path) -> None:
    from distillation import train_round

    for kept, config in (("sdtt", "distill:\n  steps: 32\n"), ("consistency", "distill:\n  method: consistency\n")):
        run_dir = tmp_path / kept
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "config.yaml").write_text(config)  # a round from before distill.method reads as sdtt
        other = "consistency" if kept == "sdtt" else "sdtt"
        with pytest.raises(SystemExit, match=f"is a round of distill.method={kept}, not {other}: give another --runs"):
            train_round(tmp_path / "teacher.ckpt", 32, run_dir, other, [])
