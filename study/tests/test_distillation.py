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
