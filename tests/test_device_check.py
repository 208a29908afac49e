"""``bench/device_check.py --tiny``: every step of the accelerator check runs on the CPU, so the script cannot rot."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_the_device_check_runs_every_step_at_tiny_size(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/device_check.py", "--tiny", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "device_check-tiny.json").read_text())
    assert set(report["steps"]) == {"device_tests", "resume", "bf16_training", "memory", "throughput", "fsdp"}
    assert all(step["ok"] for step in report["steps"].values())
    steps = {name: step["result"] for name, step in report["steps"].items()}
    assert steps["resume"]["bit_identical"]  # fp32 on the CPU: a resumed run is the uninterrupted one
    assert steps["memory"]["bijective-memeff_growth_2_to_max"] <= 1.25 < steps["memory"]["standard_growth_2_to_max"]
    assert all(v["val_nll"] > 0 for v in steps["bf16_training"].values()) and steps["fsdp"]["finite"]
    assert "Device check of" in (tmp_path / "device_check-tiny.md").read_text()
