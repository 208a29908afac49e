"""The study pipeline's bookkeeping: run names from configs, and the README tables from eval.py outputs."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run as study  # noqa: E402
from run import evaluations, find_runs, planned_runs, run_name, train_study  # noqa: E402
from summary import differences, summary  # noqa: E402
from tables import BEGIN, END, write_readme  # noqa: E402

UNIGRAM = {"unigram_nll_per_token": 6.6, "unigram_ppl_per_token": 735.1, "unigram_ppl_per_word": 6445.6}


def _write(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("model, graph, seed, expected", [
    ({"name": "ar"}, "absorb", 0, "ar"),
    ({"name": "bijective", "coupling": "additive"}, "absorb", 0, "bijective"),
    ({"name": "bijective", "coupling": "affine"}, "absorb", 0, "bijective-affine"),
    ({"name": "hybrid", "coupling": "additive"}, "uniform", 0, "hybrid-uniform"),
    ({"name": "standard", "time_conditioning": False}, "absorb", 0, "standard-notime"),
    ({"name": "standard"}, "absorb", 1, "standard-seed1"),
])
def test_run_name_follows_the_composed_config(tmp_path: Path, model: dict, graph: str, seed: int, expected: str) -> None:
    (tmp_path / ".hydra").mkdir()
    config = {"model": model, "diffusion": {"graph": graph}, "seed": seed}
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    assert run_name(tmp_path) == expected


def test_tables_are_written_between_the_markers_only(tmp_path: Path) -> None:
    _write(tmp_path / "ar-ppl.json", {**UNIGRAM, "nll_exact_per_token": 5.0651, "ppl_exact_per_token": 158.4,
                                      "ppl_exact_per_word": 837.3})
    _write(tmp_path / "bijective-ppl.json", {**UNIGRAM, "nll_per_token": 5.9791, "nll_bound_stderr": 0.0188,
                                             "ppl_bound_per_token": 394.9, "ppl_bound_per_word": 2818.1})
    _write(tmp_path / "bijective-memory.json", {"parameters": 8_261_119, "saved_activation_bytes": 287_092_636})
    _write(tmp_path / "bijective-sample-analytic64.json", {
        "model": "bijective", "sampler": "analytic", "steps": 64, "network_calls_per_sample": 40.7,
        "gen_ppl": 1697.9, "entropy": 3.76, "distinct_4": 0.97, "tokens_per_s": 154.9})
    _write(tmp_path / "bijective-affine-invert.json", {
        "rel_error_fp32": 5.73e-05, "rel_error_fp64": 1.77e-13, "logdet_mean_fp64": 5186.37,
        "logdet_sum_error_fp32": 0.00146, "logdet_sum_error_fp64": 4.5e-12,
        "token_round_trip_fp32": 1.0, "token_round_trip_fp64": 1.0})
    _write(tmp_path / "bijective-seed1-ppl.json", {"nll_per_token": 6.0412, "nll_bound_stderr": 0.0191})
    (tmp_path / "train_times.txt").write_text("bijective rc=0 seconds=1185 tokens_per_s=2392\nstandard rc=1 seconds=3\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\nbefore\n{BEGIN}\nstale table\n{END}\nafter\n")

    write_readme(readme, tmp_path)
    text = readme.read_text()

    assert text.startswith("# Title\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "stale table" not in text
    assert "| unigram (add-½) | – | – | – | – | 6.600 | 735.1 | 6,445.6 |" in text
    assert "| `ar` (exact) | – | – | – | – | 5.065 | 158.4 | 837.3 |" in text
    assert ("| `bijective` SEDD, absorbing, additive, memory-efficient (bound) | 8.26 M | 274 MiB | 19 m 45 s | 2,392 | "
            "≤ 5.979 ± 0.019 | ≤ 394.9 | ≤ 2,818.1 |") in text
    assert "| `bijective`, analytic, 64 steps | 40.7 | 1,697.9 | 3.76 | 0.97 | 154.9 |" in text
    assert "| `bijective-affine` | 5.7e-05 / 1.8e-13 | 5,186.4 | 1.5e-03 / 4.5e-12 | 1.0000 / 1.0000 |" in text
    # two seeds: mean, seed sd |5.979 − 6.041|/√2, Monte-Carlo error √(0.019² + 0.019²)/2
    assert "| `bijective` | 0, 1 | ≤ 6.010 ± 0.044 | 0.013 |" in text
    assert "standard" not in text.split(BEGIN)[1]  # no files, no row; a failed run's time is not read


def test_a_subset_evaluation_has_no_per_word_column(tmp_path: Path) -> None:
    subset = {**UNIGRAM, "unigram_ppl_per_word": None, "nll_per_token": 6.25, "nll_bound_stderr": 0.18,
              "ppl_bound_per_token": 518.0, "ppl_bound_per_word": None}
    _write(tmp_path / "hybrid-ppl.json", subset)
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    write_readme(readme, tmp_path)
    assert "| ≤ 6.250 ± 0.180 | ≤ 518.0 | – |" in readme.read_text()
    assert "| 6.600 | 735.1 | – |" in readme.read_text()


def test_a_readme_without_markers_is_refused_and_left_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        write_readme(readme, tmp_path)
    assert readme.read_text() == "# no markers\n"


def test_the_study_refuses_a_missing_readme_before_it_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["run.py", "--train", str(tmp_path), "--runs", str(tmp_path / "runs"),
                                      "--readme", str(tmp_path / "README.md")])
    with pytest.raises(SystemExit, match="no README .* pass --readme FILE"):
        study.main()
    assert not (tmp_path / "runs").exists()


def _fake_run(run_dir: Path, model: str, steps: int, seed: int = 0, interrupted: int | None = None) -> Path:
    """A run directory as train.py leaves it: composed config, overrides, ``last.ckpt`` at ``steps``
    and, for a stopped run, ``interrupted.ckpt`` at ``interrupted``."""
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"model": {"name": model}, "diffusion": {"graph": "absorb"}, "seed": seed, "trainer": {"max_steps": 4}}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        ["experiment=quick", f"model={model}", "data.files.train=/old/wiki.valid.tokens", "trainer.max_steps=4"]))
    (run_dir / "checkpoints").mkdir()
    torch.save({"global_step": steps}, run_dir / "checkpoints" / "last.ckpt")
    if interrupted is not None:
        torch.save({"global_step": interrupted}, run_dir / "checkpoints" / "interrupted.ckpt")
    return run_dir


def test_every_planned_study_run_has_its_own_name() -> None:
    planned = planned_runs()
    assert len(planned) == sum(len(models) for models, _ in study.SWEEPS.values())
    assert {"ar", "bijective-affine", "hybrid", "standard-uniform", "ar-seed1", "bijective-affine-seed2",
            "standard-swiglu-seed2"} <= set(planned)


def test_find_runs_leaves_out_unfinished_runs_and_eval_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _fake_run(tmp_path / "absorb" / "0", "ar", steps=4)
    _fake_run(tmp_path / "absorb" / "1", "standard", steps=2)
    (tmp_path / "eval" / ".hydra").mkdir(parents=True)
    (tmp_path / "eval" / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"mode": "ppl"}))

    assert find_runs([tmp_path]) == {"ar": tmp_path / "absorb" / "0"}
    assert "stopped at step 2 of 4" in capsys.readouterr().out


def test_an_interrupted_study_resumes_what_stopped_and_starts_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_run(tmp_path / "absorb" / "0", "ar", steps=4)
    # killed at step 3: it goes on from last.ckpt, written at the end of a validation, not from a
    # mid-step interrupted.ckpt
    stopped = _fake_run(tmp_path / "absorb" / "1", "standard", steps=2, interrupted=3)
    _fake_run(tmp_path / "seed1" / "0", "standard", steps=4, seed=1)
    commands = []
    monkeypatch.setattr(study.subprocess, "run", lambda cmd, **_: commands.append(cmd[2:]))

    train_study(tmp_path / "data", [tmp_path], [])

    assert commands[0] == ["experiment=quick", "model=standard", "trainer.max_steps=4",
                           f"data.files.train={tmp_path / 'data' / 'wiki.train.tokens'}",
                           f"data.files.validation={tmp_path / 'data' / 'wiki.valid.tokens'}",
                           f"data.files.test={tmp_path / 'data' / 'wiki.test.tokens'}",
                           f"ckpt_path={stopped / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={stopped}"]
    assert (stopped / "resumed.txt").is_file()
    sweeps = {next(a for a in c if a.startswith("hydra.sweep.dir=")).rsplit("/", 1)[1]:
              next(a for a in c if a.startswith("model=")) for c in commands[1:]}
    assert sweeps == {"absorb-1": "model=bijective,bijective_affine,hybrid", "uniform": "model=standard,bijective",
                      "seed1-1": "model=ar,bijective,bijective_affine", "seed2": "model=standard,bijective,bijective_affine",
                      "swiglu": "model=standard", "swiglu-seed1": "model=standard", "swiglu-seed2": "model=standard"}

    commands.clear()
    train_study(tmp_path / "data", [tmp_path], [], only=["ar", "bijective-seed1"])
    assert [next(a for a in c if a.startswith("model=")) for c in commands] == ["model=bijective"]
    with pytest.raises(SystemExit, match="unknown study runs \\['bijective-seed7'\\]"):
        train_study(tmp_path, [tmp_path], [], only=["bijective-seed7"])


def test_a_resumed_run_counts_the_time_before_each_resume_once(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", "standard", steps=4)
    config, last = run / ".hydra" / "config.yaml", run / "checkpoints" / "last.ckpt"
    os.utime(config, (1000, 1000))
    os.utime(last, (1600, 1600))  # the final segment: 600 s
    # started at 0, checkpoint at 300: a resume that failed before rewriting the config, its retry,
    # and one that failed after rewriting it (its checkpoint is older than its config)
    (run / "resumed.txt").write_text("0 300\n0 300\n900 300\n")
    assert study.train_seconds(run) == 900


def test_train_times_are_derived_afresh_for_the_runs_given_and_kept_for_the_others(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", "standard", steps=4)
    os.utime(run / ".hydra" / "config.yaml", (1000, 1000))
    os.utime(run / "checkpoints" / "last.ckpt", (1600, 1600))
    (run / "csv").mkdir()
    (run / "csv" / "metrics.csv").write_text("step,train/tokens_per_s\n9,2000.0\n19,2100.0\n29,2200.0\n")
    times = tmp_path / "train_times.txt"
    times.write_text("ar rc=0 seconds=1089\nstandard rc=0 seconds=600\n")  # standard written before the speed was
    study.write_train_times({"standard": run}, times)
    study.write_train_times({"standard": run}, times)  # a rerun adds no second line
    assert times.read_text() == "ar rc=0 seconds=1089\nstandard rc=0 seconds=600 tokens_per_s=2100\n"


def test_the_training_speed_is_the_median_so_steps_that_include_a_validation_do_not_count(tmp_path: Path) -> None:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "step,train/tokens_per_s,val/nll\n9,2000.0,\n19,150.0,\n19,,6.5\n29,2100.0,\n39,2050.0,\n")
    assert study.median_tokens_per_s(tmp_path) == 2025.0
    (tmp_path / "csv" / "metrics.csv").write_text("step,val/nll\n19,6.5\n")
    assert study.median_tokens_per_s(tmp_path) is None


def test_each_run_gets_the_evaluations_its_graph_and_trunk_allow() -> None:
    def results(name: str) -> list[str]:
        return [result for result, _ in evaluations(name, ["mode=sample"], [16, 64], uniform_steps=[8])]

    assert results("ar") == ["ppl", "ppl-first256", "sample", "sample-t1.25", "sample-t1.5", "sample-t1.75"]
    assert results("standard") == ["ppl", "ppl-first256", "sample-analytic16", "sample-analytic64", "sample-ordered"]
    assert results("bijective-affine")[-1] == "invert"  # exact inverse: measured on the trained trunk
    assert results("bijective-uniform") == ["ppl", "sample-analytic8", "invert"]  # no exact likelihood, fewer steps
    assert results("hybrid") == results("standard")  # not invertible as a whole
    assert results("bijective-seed1") == ["ppl"]


def test_a_seed_repeat_is_drawn_in_its_configurations_colour_and_configurations_differ() -> None:
    names = ["ar", "standard", "standard-seed1", "bijective", "bijective-seed1", *(f"variant{i}" for i in range(9))]
    colour = study.colours(names)
    assert colour["standard-seed1"] == colour["standard"] and colour["bijective-seed1"] == colour["bijective"]
    configs = [n for n in names if "-seed" not in n]
    assert len({str(colour[n]) for n in configs}) == len(configs) == 12  # past the 10 default colours too


def test_summary_lists_every_seed_of_every_configuration(tmp_path: Path) -> None:
    for name, nll in [("standard", 6.0), ("standard-seed1", 6.1), ("bijective-affine-seed2", 5.8)]:
        _write(tmp_path / f"{name}-ppl.json", {"nll_per_token": nll, "nll_bound_stderr": 0.02, "ppl_bound_per_word": 3000.0, **UNIGRAM})
    _write(tmp_path / "ar-ppl.json", {"nll_exact_per_token": 4.6, "ppl_exact_per_word": 430.0, **UNIGRAM})
    _write(tmp_path / "ar-ppl-first256.json", {"nll_exact_per_token": 4.5})  # not a test-split result

    s = summary(tmp_path, protocol="standard", preset="cpu", budget_minutes=30, commit="abc")

    assert (s["protocol"], s["preset"], s["budget_minutes"], s["commit"], s["unigram_nats_per_token"]) == ("standard", "cpu", 30, "abc", 6.6)
    assert s["configurations"] == {
        "ar": [{"seed": 0, "nats_per_token": 4.6, "stderr": 0.0, "ppl_per_word": 430.0}],
        "bijective_affine": [{"seed": 2, "nats_per_token": 5.8, "stderr": 0.02, "ppl_per_word": 3000.0}],
        "standard": [{"seed": 0, "nats_per_token": 6.0, "stderr": 0.02, "ppl_per_word": 3000.0},
                     {"seed": 1, "nats_per_token": 6.1, "stderr": 0.02, "ppl_per_word": 3000.0}],
    }


def test_a_difference_counts_only_beyond_twice_the_combined_seed_spread() -> None:
    def runs(*values: float) -> list[dict]:
        return [{"seed": i, "nats_per_token": v, "stderr": 0.01, "ppl_per_word": None, "exact": False} for i, v in enumerate(values)]

    rows = differences({"a": runs(6.0, 6.1), "b": runs(5.0, 5.02), "c": runs(6.0, 6.2), "d": runs(5.5)})
    # a − b: 1.04 against 2·√(0.0707²/2 + 0.0141²/2) = 0.102; a − c: −0.05 against 2·√(0.0707²/2 + 0.1414²/2) = 0.224
    assert "| `a` − `b` | +1.040 | 0.102 | yes |" in rows
    assert "| `a` − `c` | -0.050 | 0.224 | no |" in rows
    assert not any("`d`" in row for row in rows)  # one seed: no spread to compare with


def test_training_time_per_step_comes_from_each_runs_median_speed_and_batch(tmp_path: Path) -> None:
    (tmp_path / "train_times.txt").write_text(
        "standard rc=0 seconds=900 tokens_per_s=4096\nstandard-seed1 rc=0 seconds=950 tokens_per_s=2048\nar rc=0 seconds=600\n")
    for name in ("standard", "standard-seed1", "ar"):
        _write(tmp_path / f"{name}-memory.json", {"batch": [64, 64]})
    # ar has no measured speed: it is left out rather than drawn at a made-up time
    assert study.training_seconds(tmp_path) == {"standard": 1.0, "standard-seed1": 2.0}


def test_the_time_plot_draws_each_configuration_once_over_its_seeds(tmp_path: Path) -> None:
    plt = pytest.importorskip("matplotlib.pyplot")
    (tmp_path / "train_times.txt").write_text("standard rc=0 seconds=9 tokens_per_s=4096\nstandard-seed1 rc=0 seconds=9 tokens_per_s=4096\n")
    for name in ("standard", "standard-seed1"):
        _write(tmp_path / f"{name}-memory.json", {"batch": [64, 64]})
    curves = {"standard": {100: 6.5, 200: 6.2}, "standard-seed1": {100: 6.4, 200: 6.3, 300: 6.0}}
    study.plot_against_time(tmp_path, curves, study.colours(list(curves)), plt)
    assert (tmp_path / "val_nll_vs_time.png").stat().st_size > 0
    legend = [t.get_text() for t in plt.gcf().axes[0].get_legend().get_texts()]
    assert legend == ["standard (2 seeds)"]


def test_the_data_constrained_split_halves_the_test_file_at_an_article(tmp_path: Path) -> None:
    from data_constrained import write_split

    from bijdiff.data.synthetic import write_synthetic_splits

    source = write_synthetic_splits(tmp_path / "classic", (70, 60, 140))
    manifest = write_split(tmp_path / "classic", tmp_path / "constrained")
    out = tmp_path / "constrained"
    assert (out / "wiki.train.tokens").read_bytes() == source["validation"].read_bytes()
    halves = [(out / f"wiki.{s}.tokens").read_text() for s in ("valid", "test")]
    assert halves[0] + halves[1] == source["test"].read_text()  # nothing lost, nothing repeated
    assert halves[1].startswith(" = ") and halves[1].split("\n")[0].endswith(" = ")  # the test half starts an article
    words = [manifest[f"wiki.{s}.tokens"]["words"] for s in ("valid", "test")]
    assert abs(words[0] - words[1]) < 0.3 * sum(words)


def test_the_sweep_table_gives_each_seeds_best_validation_and_its_step(tmp_path: Path) -> None:
    from sweep import table

    (tmp_path / "baseline-seed0.csv").write_text("step,val_nll\n100,6.0\n200,5.2\n300,5.5\n400,5.9\n")
    (tmp_path / "baseline-seed1.csv").write_text("step,val_nll\n100,6.1\n200,5.4\n300,5.3\n400,5.6\n")
    row = next(line for line in table(tmp_path, 6.6).splitlines() if line.startswith("| `baseline`"))
    assert row.endswith("| 5.200 (200) / 5.300 (300) |")  # an overfitting run is judged at its best, not its end
