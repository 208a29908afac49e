"""Run directories: a killed run resumes in place, one in use or finished is refused, a failed start leaves none."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from bijdiff.app.rundir import RunDirectory
from bijdiff.app.train import train
from bijdiff.errors import ConfigError

from .conftest import ROOT, TINY, tiny_config
from .test_resume import _logged

RUN_TIMEOUT = 300  # seconds for any one train.py process (tests share 2 cores with other work)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tokenizer and token cache for the module's runs, so only the first run builds it."""
    return tmp_path_factory.mktemp("cache")


def _cli_args(wiki_files: dict[str, Path], out: Path, cache: Path, *extra: str) -> list[str]:
    """``train.py`` overrides for a tiny run on the generated files, writing to ``out`` (Hydra's run directory)."""
    return (TINY + [f"data.files.{k}={v}" for k, v in wiki_files.items()]
            + [f"paths.cache_dir={cache}", f"hydra.run.dir={out}", f"paths.output_dir={out}", *extra])


def _start(args: list[str]) -> subprocess.Popen[str]:
    """Start ``python train.py`` in the background with its stdout and stderr merged into one pipe."""
    return subprocess.Popen(
        [sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # as in test_resume: a background job starts with SIGINT ignored; give it the terminal's default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _read_until(proc: subprocess.Popen[str], prefix: str, timeout: float = RUN_TIMEOUT) -> list[str]:
    """The run's output lines up to the first that starts with ``prefix``; the run is killed after ``timeout`` s."""
    watchdog = threading.Timer(timeout, proc.kill)  # closes the pipe, which ends the loop below
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(prefix):
                return lines
    finally:
        watchdog.cancel()
    pytest.fail(f"train.py ended (status {proc.wait()}) without printing {prefix!r}:\n" + "".join(lines)[-4000:])


def _kill(proc: subprocess.Popen[str]) -> str:
    """SIGKILL the run if it is still alive, reap it and return the output it had not yet been read."""
    if proc.poll() is None:
        proc.kill()
    if proc.stdout is None or proc.stdout.closed:  # already reaped
        proc.wait(timeout=60)
        return ""
    rest, _ = proc.communicate(timeout=60)
    return rest or ""


def _train_py(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``python train.py`` to the end and capture stdout and stderr separately."""
    return subprocess.run([sys.executable, "train.py", *args], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one ``bijdiff: error:`` line of a refused run (exit status 2, no traceback)."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-4000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("bijdiff: error:")]
    assert len(errors) == 1, done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    return errors[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (recursively, hidden ones too) by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _stat_snapshot(root: Path, skip: set[str]) -> dict[str, tuple[int, int, bytes] | None]:
    """Every file under ``root`` by relative path: size, mtime and bytes (None for the growing ``skip`` ones)."""
    out: dict[str, tuple[int, int, bytes] | None] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            out[rel] = None if rel in skip else (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
    return out


def _losses(run: Path) -> list[tuple[int, str]]:
    """``(step, train/loss)`` of every metrics.csv row that holds a training loss, in file order."""
    return [(int(step), loss) for step, loss, _ in _logged(run) if loss]


def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(wiki_files, cache: Path, tmp_path: Path) -> None:
    # no validation (its own last.ckpt would hide the periodic one); last.ckpt on the clock at every 5th step
    common = ["trainer.max_steps=20", "trainer.val_check_interval=1000", "callbacks.periodic_checkpoint.minutes=1e-6",
              "callbacks.periodic_checkpoint.check_every_n_steps=5"]
    run = tmp_path / "run"
    proc = _start(_cli_args(wiki_files, run, cache, *common))
    try:
        seen = _read_until(proc, "step 13/")
        proc.send_signal(signal.SIGKILL)
        output = "".join(seen) + _kill(proc)
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL, output[-2000:]

    ckpt = run / "checkpoints" / "last.ckpt"
    step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert step % 5 == 0 and 5 <= step <= 13, step
    assert not [p for p in run.rglob("*") if ".tmp" in p.name], "a half-written file was left behind"
    text = (run / "csv" / "metrics.csv").read_text()
    assert text.endswith("\n"), "metrics.csv ends in half a row"
    header, *rows = text.splitlines()
    assert all(len(r.split(",")) == len(header.split(",")) for r in rows), "metrics.csv holds a partial row"
    killed_at = max(s for s, _ in _losses(run))
    assert killed_at >= step

    result = train(tiny_config(wiki_files, run, cache, *common, f"ckpt_path={ckpt}"))
    assert result["global_step"] == 20
    train(tiny_config(wiki_files, tmp_path / "uninterrupted", cache, *common))
    expected, got = _losses(tmp_path / "uninterrupted"), _losses(run)
    assert [s for s, _ in expected] == list(range(20))
    assert got == expected, f"killed at step {killed_at}, resumed from step {step}:\n got {got}\nwant {expected}"


def test_a_second_run_on_a_directory_in_use_is_refused(wiki_files, cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # last.ckpt at every step, so the second run below names a checkpoint of this run: a resume in place
    first = _start(_cli_args(wiki_files, run, cache, "trainer.max_steps=100000", "trainer.val_check_interval=100000",
                             "callbacks.periodic_checkpoint.minutes=1e-6",
                             "callbacks.periodic_checkpoint.check_every_n_steps=1"))
    try:
        _read_until(first, "step 3/")
        ckpt = run / "checkpoints" / "last.ckpt"
        assert ckpt.is_file()
        growing = {"csv/metrics.csv", "checkpoints/last.ckpt"}
        before = _stat_snapshot(run, growing)

        error = _error_line(_train_py(_cli_args(wiki_files, run, cache, f"ckpt_path={ckpt}")))
        assert str(run.resolve()) in error
        in_process = RunDirectory(run, resume_from=str(ckpt))
        try:
            with pytest.raises(ConfigError, match="in use"):
                in_process.claim()
        finally:
            in_process.release()

        assert _stat_snapshot(run, growing) == before, "the refused run changed the first run's files"
        assert first.poll() is None, "the first run stopped:\n" + _kill(first)[-4000:]
    finally:
        _kill(first)


def test_a_finished_run_is_never_modified_by_a_new_run(wiki_files, cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(wiki_files, run, cache))
    before = _snapshot(run)
    assert "checkpoints/last.ckpt" in before and "csv/metrics.csv" in before

    error = _error_line(_train_py(_cli_args(wiki_files, run, cache)))
    assert str(run.resolve()) in error and "ckpt_path=" in error
    assert _snapshot(run) == before

    with pytest.raises(ConfigError, match="ckpt_path="):
        train(tiny_config(wiki_files, run, cache))
    assert _snapshot(run) == before


@pytest.mark.parametrize("override, words", [
    ("trainer.max_steps=abc", ["trainer.max_steps"]),
    ("trainer.accelerator=mps", ["mps", "trainer=cpu"]),
])
def test_a_run_that_fails_before_training_leaves_no_directory(wiki_files, cache: Path, tmp_path: Path,
                                                              override: str, words: list[str]) -> None:
    if override.endswith("mps") and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    run = tmp_path / "run"
    error = _error_line(_train_py(_cli_args(wiki_files, run, cache, override)))
    assert all(w in error for w in words), error
    assert not run.exists(), f"left behind: {sorted(p.name for p in run.iterdir())}"


def test_rerun_into_a_resumed_directory_keeps_every_row(wiki_files, cache: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(wiki_files, run, cache, "trainer.max_steps=6"))
    ckpt = run / "checkpoints" / "last.ckpt"
    result = train(tiny_config(wiki_files, run, cache, "trainer.max_steps=8", f"ckpt_path={ckpt}"))
    assert result["global_step"] == 8
    logged = _logged(run)
    assert [s for s, _ in _losses(run)] == list(range(8)), f"(step, train/loss, val/nll) rows: {logged}"
    assert len(set(logged)) == len(logged), f"a row was logged twice: {logged}"
    assert [int(s) for s, _, nll in logged if nll] == [1, 3, 5, 7]  # validations after steps 2, 4, 6, 8
