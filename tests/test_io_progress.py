"""The shared helpers: atomic writes and the one progress-line format."""
from __future__ import annotations

import json

import pytest

from bijdiff.io import atomic_path, write_json_atomic
from bijdiff.progress import Progress, progress_line


def test_atomic_writes_leave_the_whole_file_or_none(tmp_path) -> None:
    path = write_json_atomic(tmp_path / "sub" / "metrics.json", {"b": 1, "a": 2})
    assert json.loads(path.read_text()) == {"a": 2, "b": 1}
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "tokens.npy") as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path  # np.save keeps the name; rename stays on one filesystem
        tmp.write_text("half")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # no target, no temporary left behind


def test_progress_line_format_and_eta() -> None:
    # a run resumed at step 400: its rate counts the 50 steps it did itself
    assert progress_line("step", 450, 500, 100.0, counted=50) == "step 450/500 elapsed 0:01:40 eta 0:01:40"
    assert progress_line("step", 7, None, 5.0, details=" loss 1.0000") == "step 7 loss 1.0000 elapsed 0:00:05"


def test_progress_reports_each_tenth_once(capsys) -> None:
    progress = Progress("sample", 100)
    for done in range(16, 101, 16):
        progress.update(done)
    progress.update(100)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == ["16/100", "32/100", "48/100", "64/100", "80/100", "96/100", "100/100"]
