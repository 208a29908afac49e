"""Exact resume, Ctrl-C checkpoints and non-finite losses."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from bijdiff.app.train import train
from bijdiff.errors import CheckpointError, NonFiniteLossError
from bijdiff.lit import progress
from bijdiff.lit.progress import PlainProgress
from bijdiff.objectives import DiffusionObjective

from .conftest import ROOT, TINY, tiny_config


def _state(ckpt_path: Path) -> dict[str, torch.Tensor]:
    """Parameters, EMA shadows and optimizer moments of a checkpoint, flattened by name."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    flat = dict(ckpt["state_dict"])
    for i, s in ckpt["optimizer_states"][0]["state"].items():
        flat |= {f"opt.{i}.{k}": v for k, v in s.items() if torch.is_tensor(v)}
    return flat


def test_resumed_run_matches_the_uninterrupted_run(wiki_files, tmp_path: Path) -> None:
    # 10 batches per epoch: the checkpoint at step 14 is mid-epoch and the run crosses two epoch
    # boundaries; dropout and EMA are on, so every source of state must carry over.
    common = [
        "trainer.max_steps=24", "trainer.val_check_interval=14", "data.batch_size=2", "data.seq_len=8",
        "model.dropout=0.1", "ema.decay=0.9", "callbacks.checkpoint.filename='step{step}'",
        "callbacks.checkpoint.save_top_k=-1", "callbacks.progress.every=100", "+trainer.limit_train_batches=10",
    ]
    cache = tmp_path / "cache"
    full = train(tiny_config(wiki_files, tmp_path / "full", cache, *common))
    mid = tmp_path / "full" / "checkpoints" / "step14.ckpt"
    assert mid.is_file() and full["global_step"] == 24
    resumed = train(tiny_config(wiki_files, tmp_path / "resumed", cache, *common, f"ckpt_path={mid}"))
    assert resumed["global_step"] == 24

    a = _state(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = _state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a) and any(k.startswith("opt.") for k in a)
    worst = max(((a[k].double() - b[k].double()).abs().max().item(), k) for k in a)
    assert worst[0] <= 1e-6, f"resumed run diverged from the uninterrupted one at {worst[1]}: {worst[0]:.3g}"
    for run in ("full", "resumed"):  # the last logged training losses agree too
        rows = (tmp_path / run / "csv" / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        col = header.index("train/loss")
        losses = [r.split(",")[col] for r in rows[1:] if r.split(",")[col]]
        if run == "full":
            expected = float(losses[-1])
        else:
            assert abs(float(losses[-1]) - expected) <= 1e-6


def _logged(run: Path) -> list[tuple[str, str, str]]:
    """``(step, train/loss, val/nll)`` of every metrics.csv row that holds either."""
    with open(run / "csv" / "metrics.csv", newline="") as f:
        rows = [(r["step"], r.get("train/loss", ""), r.get("val/nll", "")) for r in csv.DictReader(f)]
    return [r for r in rows if r[1] or r[2]]


def test_a_run_resumed_in_its_own_directory_keeps_its_metrics(wiki_files, tmp_path: Path) -> None:
    # the first run goes on to step 6; resuming from step 4 drops its rows from step 4 on and logs them again
    common = ["trainer.max_steps=6", "trainer.val_check_interval=2", "callbacks.checkpoint.filename='step{step}'",
              "callbacks.checkpoint.save_top_k=-1"]
    cache = tmp_path / "cache"
    train(tiny_config(wiki_files, tmp_path / "uninterrupted", cache, *common))
    run = tmp_path / "run"
    train(tiny_config(wiki_files, run, cache, *common))
    train(tiny_config(wiki_files, run, cache, *common, f"ckpt_path={run / 'checkpoints' / 'step4.ckpt'}"))

    logged = _logged(run)
    assert len(set(logged)) == len(logged), "a row was logged twice"
    assert logged == _logged(tmp_path / "uninterrupted")
    assert {int(step) for step, _, nll in logged if nll} == {1, 3, 5}  # validations after steps 2, 4, 6


@pytest.mark.parametrize("content, message", [(None, "no such checkpoint to resume from"),
                                              (b"not a checkpoint", "cannot read it as a training checkpoint")])
def test_a_bad_resume_checkpoint_is_refused_before_training(tiny_train_cfg, tmp_path: Path, content, message) -> None:
    ckpt = tmp_path / "bad.ckpt"
    if content is not None:
        ckpt.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        train(tiny_train_cfg(f"ckpt_path={ckpt}"))
    assert not (tmp_path / "run").exists()


def test_ctrl_c_leaves_a_checkpoint_that_resumes(wiki_files, tmp_path: Path) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = TINY + [f"data.files.{k}={v}" for k, v in wiki_files.items()] + [
        f"paths.output_dir={out}", f"paths.cache_dir={cache}", f"hydra.run.dir={out}", "trainer.max_steps=100000",
        "trainer.val_check_interval=100000",
    ]
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # a hang below dumps every thread's stack on SIGABRT
        # a shell starts background jobs with SIGINT ignored, and Python then keeps ignoring it:
        # give the run the terminal's default, as when a user presses Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 5/"):
            proc.send_signal(signal.SIGINT)
            break
    try:
        rest, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        rest, _ = proc.communicate()
        pytest.fail("train.py did not stop within 300 s of Ctrl-C:\n" + ("".join(seen) + rest)[-6000:])
    output = "".join(seen) + rest
    assert proc.returncode != 0, output[-2000:]
    ckpt = out / "checkpoints" / "interrupted.ckpt"
    assert ckpt.is_file(), output[-2000:]
    assert f"to resume: ckpt_path={ckpt}" in output
    step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert step >= 5
    # the interrupted run's validation schedule: Lightning's restart reads it to place the checkpoint's step
    result = train(tiny_config(wiki_files, out, cache, f"ckpt_path={ckpt}", f"trainer.max_steps={step + 2}",
                               "trainer.val_check_interval=100000"))
    assert result["global_step"] == step + 2
    # resumed in its own directory, the run logs the steps after the checkpoint at their own numbers,
    # once; a Ctrl-C that lands after a step's update but before its row was logged loses that row
    steps = [int(s) for s, loss, _ in _logged(out) if loss]
    assert steps[-2:] == [step, step + 1]
    assert steps[:-2] in (list(range(step)), list(range(step - 1)))


def _nan_on_calls(monkeypatch: pytest.MonkeyPatch, bad_calls: set[int] | None) -> None:
    """Make the diffusion loss NaN on the given training calls (1-based; None: from the second on)."""
    real = DiffusionObjective.train_nats
    calls = {"n": 0}

    def patched(self, *args, **kwargs):
        calls["n"] += 1
        nats = real(self, *args, **kwargs)
        bad = calls["n"] >= 2 if bad_calls is None else calls["n"] in bad_calls
        return nats * float("nan") if bad else nats

    monkeypatch.setattr(DiffusionObjective, "train_nats", patched)


def test_nonfinite_losses_are_skipped_with_a_warning(wiki_files, tmp_path: Path, monkeypatch) -> None:
    _nan_on_calls(monkeypatch, {2, 3})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(tiny_config(wiki_files, tmp_path / "run", tmp_path / "cache", "trainer.max_steps=5"))
    messages = [str(w.message) for w in caught if "non-finite training loss" in str(w.message)]
    assert len(messages) == 2 and "optim.max_nonfinite_steps=10" in messages[0]
    assert result["global_step"] == 5
    ckpt = torch.load(result["last_ckpt"], map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_too_many_nonfinite_losses_stop_with_a_checkpoint(wiki_files, tmp_path: Path, monkeypatch) -> None:
    _nan_on_calls(monkeypatch, None)
    with pytest.raises(NonFiniteLossError, match=r"NaN/Inf in 3 steps \(optim.max_nonfinite_steps=2\).*Lower optim.lr"):
        train(tiny_config(wiki_files, tmp_path / "run", tmp_path / "cache", "trainer.max_steps=20", "optim.max_nonfinite_steps=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    # one good step and three skipped: the third's flag is read (without a host sync) before the next step
    assert state["global_step"] == 4 and state["bijdiff"]["nonfinite_steps"] == 3
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_an_error_during_validation_checkpoints_the_live_weights_not_the_ema(wiki_files, tmp_path: Path, monkeypatch) -> None:
    from bijdiff.lit import LitLanguageModel

    def failing_validation(self, batch, batch_idx):
        raise RuntimeError("disk full")

    monkeypatch.setattr(LitLanguageModel, "validation_step", failing_validation)
    with pytest.raises(RuntimeError, match="disk full"):
        train(tiny_config(wiki_files, tmp_path / "run", tmp_path / "cache", "ema.decay=0.9"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "interrupted.ckpt", map_location="cpu", weights_only=False)
    live = [v for k, v in state["state_dict"].items() if k.startswith("model.")]
    shadows = [state["state_dict"][f"ema.shadow.p{i}"] for i in range(len(live))]
    assert state["global_step"] == 2  # the first validation, after step 2 (TINY)
    assert any(not torch.equal(a, b) for a, b in zip(live, shadows)), "the EMA averages were saved as the live weights"


def test_no_interrupt_checkpoint_before_the_first_step(wiki_files, tmp_path: Path, monkeypatch) -> None:
    def failing_step(self, *args, **kwargs):
        raise RuntimeError("bad batch")

    monkeypatch.setattr(DiffusionObjective, "train_nats", failing_step)
    with pytest.raises(RuntimeError, match="bad batch"):
        train(tiny_config(wiki_files, tmp_path / "run", tmp_path / "cache"))
    assert not (tmp_path / "run" / "checkpoints" / "interrupted.ckpt").exists()


def test_a_resumed_run_estimates_its_remaining_time_from_its_own_steps(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    bar = PlainProgress(every=50)
    trainer = SimpleNamespace(global_step=400, max_steps=500, global_rank=0, callback_metrics={})
    clock = iter([1000.0, 1100.0])  # 100 s for the 50 steps since the resume at step 400
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    bar.on_train_start(trainer, None)
    trainer.global_step = 450
    bar.on_train_batch_end(trainer, None, None, None, 0)
    assert capsys.readouterr().out.strip() == "step 450/500 elapsed 0:01:40 eta 0:01:40"


class InterruptAt(L.Callback):
    """Presses Ctrl-C (sends this process SIGINT) in ``hook`` once ``global_step`` reaches ``step``."""

    def __init__(self, hook: str, step: int) -> None:
        self.step = step
        setattr(self, hook, self._maybe_interrupt)

    def _maybe_interrupt(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and not trainer.sanity_checking:
            self.step = -1  # once
            os.kill(os.getpid(), signal.SIGINT)


# where Ctrl-C can land, around the optimizer step and the validation after step 4
INTERRUPT_POINTS = [
    ("on_train_batch_start", 3),  # between steps
    ("on_before_backward", 3),  # inside a step, before its update
    ("on_train_batch_end", 3),  # after the update, before Lightning counts the batch done
    ("on_train_batch_end", 4),  # the same, at a step that validates next
    ("on_validation_batch_end", 4),  # inside validation
    ("on_validation_end", 4),  # after validation logged, while callbacks (samples) run
]


@pytest.mark.parametrize("hook,step", INTERRUPT_POINTS)
def test_a_run_interrupted_anywhere_resumes_in_place_at_the_right_steps(wiki_files, tmp_path: Path, hook: str, step: int) -> None:
    common = ["trainer.max_steps=8", "trainer.val_check_interval=4", "data.batch_size=2", "model.dropout=0.0"]
    cache = tmp_path / "cache"
    train(tiny_config(wiki_files, tmp_path / "full", cache, *common))
    run = tmp_path / "run"
    with pytest.raises(SystemExit):  # Lightning's KeyboardInterrupt handling ends the process with status 1
        train(tiny_config(wiki_files, run, cache, *common, "+callbacks.interrupt_at._target_=tests.test_resume.InterruptAt",
                          f"+callbacks.interrupt_at.hook={hook}", f"+callbacks.interrupt_at.step={step}"))
    ckpt = run / "checkpoints" / "interrupted.ckpt"
    train(tiny_config(wiki_files, run, cache, *common, f"ckpt_path={ckpt}"))
    expected, got = _logged(tmp_path / "full"), _logged(run)
    assert got == expected


@pytest.mark.parametrize("every,step", [(3, 6), (4, 4)])  # the last check at a plain step, or at a validated one
def test_a_periodic_checkpoint_resumes_in_place_at_the_right_steps(wiki_files, tmp_path: Path, every: int, step: int) -> None:
    # last.ckpt on the clock (here: at every check) is what a killed run resumes from
    common = ["trainer.max_steps=8", "trainer.val_check_interval=4", "data.batch_size=2", "model.dropout=0.0"]
    cache = tmp_path / "cache"
    train(tiny_config(wiki_files, tmp_path / "full", cache, *common))
    run = tmp_path / "run"
    train(tiny_config(wiki_files, run, cache, *common, "+callbacks.periodic_checkpoint.filename=periodic",
                      "callbacks.periodic_checkpoint.minutes=1e-9", f"callbacks.periodic_checkpoint.check_every_n_steps={every}"))
    ckpt = run / "checkpoints" / "periodic.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == step
    train(tiny_config(wiki_files, run, cache, *common, f"ckpt_path={ckpt}"))
    assert _logged(run) == _logged(tmp_path / "full")


def test_a_checkpoint_of_the_unfused_optimizer_resumes_fused(wiki_files, tmp_path: Path) -> None:
    """Checkpoints written before the fused AdamW store ``fused=None``; loading them must not turn the
    optimizer unfused (its step would refuse ``found_inf``)."""
    common = ("trainer.max_steps=4", "trainer.val_check_interval=2")
    first = train(tiny_config(wiki_files, tmp_path / "old", tmp_path / "cache", *common, "trainer.max_steps=2"))
    ckpt = torch.load(first["last_ckpt"], map_location="cpu", weights_only=False)
    for group in ckpt["optimizer_states"][0]["param_groups"]:
        group["fused"], group["foreach"] = None, None  # as the unfused AdamW saved them
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    resumed = train(tiny_config(wiki_files, tmp_path / "new", tmp_path / "cache", *common, f"ckpt_path={old}"))
    assert resumed["global_step"] == 4
    state = torch.load(resumed["last_ckpt"], map_location="cpu", weights_only=False)
    assert all(g["fused"] for g in state["optimizer_states"][0]["param_groups"])


def test_a_finite_loss_with_nonfinite_gradients_is_skipped(wiki_files, tmp_path: Path, monkeypatch) -> None:
    from bijdiff.lit import LitLanguageModel

    real = LitLanguageModel.on_before_optimizer_step
    calls = {"n": 0}

    def poisoned(self, optimizer):
        calls["n"] += 1
        if calls["n"] == 2:  # the second step's gradients overflow although its loss was finite
            next(p for p in self.model.parameters() if p.grad is not None).grad.fill_(float("inf"))
        real(self, optimizer)

    monkeypatch.setattr(LitLanguageModel, "on_before_optimizer_step", poisoned)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(tiny_config(wiki_files, tmp_path / "run", tmp_path / "cache", "trainer.max_steps=3"))
    assert [str(w.message).split(":")[0] for w in caught if "non-finite" in str(w.message)] == ["step 1"]
    state = torch.load(result["last_ckpt"], map_location="cpu", weights_only=False)
    assert state["bijdiff"]["nonfinite_steps"] == 1
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
