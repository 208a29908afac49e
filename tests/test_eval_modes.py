"""eval.py modes on tiny checkpoints: exact likelihood, the AR baseline, samples with a judge, inversion."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bijdiff.app.evaluate import evaluate
from bijdiff.app.train import train
from bijdiff.errors import ConfigError

from .conftest import ROOT, TINY, compose_config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, wiki_files) -> dict[str, str]:
    """Tiny runs sharing one data cache (hence one tokenizer): ar, absorbing standard, bijective, uniform."""
    tmp = tmp_path_factory.mktemp("modes")
    runs = {"ar": ["model=ar"], "absorb": [], "bijective": ["model=bijective"], "uniform": ["diffusion=uniform"]}
    out = {"cache": str(tmp / "cache")}
    for name, extra in runs.items():
        cfg = compose_config("train", extra + TINY + [f"data.files.{k}={v}" for k, v in wiki_files.items()]
                             + [f"paths.output_dir={tmp / name}", f"paths.cache_dir={tmp / 'cache'}"])
        out[name] = train(cfg)["last_ckpt"]
    return out


def run_eval(checkpoints: dict[str, str], name: str, tmp_path: Path, *extra: str) -> dict:
    cfg = compose_config("eval", [f"ckpt_path={checkpoints[name]}", f"paths.output_dir={tmp_path}",
                                  f"paths.cache_dir={checkpoints['cache']}", "device=cpu", *extra])
    return evaluate(cfg)


def test_exact_likelihood_of_an_absorbing_model(checkpoints, tmp_path: Path) -> None:
    m = run_eval(checkpoints, "absorb", tmp_path, "eval.exact=true", "eval.exact_variants_per_call=37")
    for key in ("ppl_bound_per_token", "ppl_bound_per_word", "ppl_exact_per_token", "ppl_exact_per_word", "nll_exact_per_token"):
        assert math.isfinite(m[key]) and m[key] > 0, key
    assert math.isclose(m["ppl_exact_per_word"], math.exp(m["nll_exact_per_token"] * m["n_tokens"] / m["n_words"]), rel_tol=1e-9)
    # the batching of variants does not change the number
    again = run_eval(checkpoints, "absorb", tmp_path / "again", "eval.exact=true", "eval.exact_variants_per_call=500")
    assert math.isclose(again["nll_exact_per_token"], m["nll_exact_per_token"], rel_tol=1e-5)


def test_ar_baseline_reports_exact_perplexity_only(checkpoints, tmp_path: Path) -> None:
    m = run_eval(checkpoints, "ar", tmp_path)
    assert m["model"] == "ar" and m["graph"] is None
    assert "ppl_bound_per_token" not in m and "nll_bound_stderr" not in m
    assert m["nll_exact_per_token"] == m["nll_per_token"]
    assert math.isclose(m["ppl_exact_per_token"], math.exp(m["nll_per_token"]), rel_tol=1e-9)


def test_exact_likelihood_is_refused_for_the_uniform_graph(checkpoints, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval.exact=true needs an absorbing-graph model"):
        run_eval(checkpoints, "uniform", tmp_path, "eval.exact=true")
    m = run_eval(checkpoints, "uniform", tmp_path, "eval.t_samples=2")
    assert m["graph"] == "uniform" and math.isfinite(m["nll_per_token"]) and m["nll_bound_stderr"] > 0


@pytest.mark.parametrize("name, sampler", [("absorb", "analytic"), ("absorb", "euler"), ("absorb", "ordered"),
                                           ("absorb", "confident"), ("absorb", "blockwise"), ("uniform", "analytic"),
                                           ("ar", "analytic")])
def test_sample_mode_writes_jsonl_and_judges_with_the_ar_model(checkpoints, tmp_path: Path, name, sampler) -> None:
    m = run_eval(checkpoints, name, tmp_path, "mode=sample", f"sample.sampler={sampler}", "sample.steps=4",
                 "sample.num_samples=5", "sample.batch_size=2", f"judge_ckpt={checkpoints['ar']}")
    rows = [json.loads(line) for line in Path(m["samples_path"]).read_text().splitlines()]
    assert len(rows) == 5 and all(len(r["ids"]) == m["length"] == 16 for r in rows)
    num_tokens = 299  # vocab 300 minus [MASK]: no [MASK] may survive sampling
    assert all(0 <= i < num_tokens for r in rows for i in r["ids"])
    assert math.isfinite(m["gen_ppl"]) and m["gen_ppl"] > 1 and 0 < m["distinct_1"] <= 1 and m["entropy"] > 0
    if name == "ar" or sampler == "ordered":
        assert m["network_calls_per_sample"] == 16
    elif name == "uniform":
        assert m["network_calls_per_sample"] == 5  # steps + 1
    elif sampler in ("confident", "blockwise"):
        assert m["network_calls_per_sample"] == 4  # one per step, each unmasking 4 of the 16 positions
    else:  # absorbing: a sequence is run only at the steps where a position unmasks
        assert 1 <= m["network_calls_per_sample"] <= 5
    assert m["tokens_per_s"] > 0


def test_judge_must_be_autoregressive(checkpoints, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="judge must be an autoregressive checkpoint"):
        run_eval(checkpoints, "absorb", tmp_path, "mode=sample", "sample.num_samples=1", "sample.steps=1",
                 f"judge_ckpt={checkpoints['absorb']}")


def test_sample_temperature_is_for_the_ar_model_only(checkpoints, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only with an AR checkpoint"):
        run_eval(checkpoints, "absorb", tmp_path, "mode=sample", "sample.temperature=1.5")
    m = run_eval(checkpoints, "ar", tmp_path, "mode=sample", "sample.temperature=1.5", "sample.num_samples=2")
    assert m["temperature"] == 1.5 and len(Path(m["samples_path"]).read_text().splitlines()) == 2


def test_invert_mode_measures_an_exact_inverse(checkpoints, tmp_path: Path) -> None:
    m = run_eval(checkpoints, "bijective", tmp_path, "mode=invert", "invert.batches=1")
    assert m["rel_error_fp64"] < 1e-12 and m["rel_error_fp32"] < 1e-5
    assert m["token_round_trip_fp32"] == 1.0 and m["logdet_sum_error_fp64"] < 1e-9


def test_invert_mode_on_a_standard_checkpoint_exits_2_naming_the_layers(checkpoints, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "eval.py", f"ckpt_path={checkpoints['absorb']}", "mode=invert", f"paths.log_dir={tmp_path}",
         f"paths.cache_dir={checkpoints['cache']}", "device=cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "bijdiff: error: the trunk SS is not invertible: layer(s) 0, 1 are standard (S) blocks" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_max_sequences_evaluates_a_prefix_per_token_only(checkpoints, tmp_path: Path) -> None:
    full = run_eval(checkpoints, "absorb", tmp_path / "full", "eval.t_samples=1")
    part = run_eval(checkpoints, "absorb", tmp_path / "part", "eval.t_samples=1", "eval.max_sequences=2", "eval.exact=true")
    assert part["subset"] and part["n_sequences"] == 2 and part["n_tokens"] == 32 < full["n_tokens"]
    assert part["n_words"] is None and part["ppl_bound_per_word"] is None and part["ppl_exact_per_word"] is None
    assert math.isfinite(part["ppl_exact_per_token"]) and math.isfinite(part["unigram_ppl_per_token"])
    with pytest.raises(ConfigError, match="eval.max_sequences must be"):
        run_eval(checkpoints, "absorb", tmp_path / "bad", "eval.max_sequences=0")


PREFIX, SUFFIX = " The film was", " by critics ."


@pytest.mark.parametrize("name, sampler, suffix", [("absorb", "analytic", SUFFIX), ("absorb", "euler", SUFFIX),
                                                   ("absorb", "ordered", SUFFIX), ("absorb", "confident", SUFFIX),
                                                   ("absorb", "blockwise", SUFFIX),
                                                   ("uniform", "euler", SUFFIX),
                                                   ("bijective", "analytic", ""), ("ar", "analytic", "")])
def test_sample_mode_fills_between_a_given_prefix_and_suffix(checkpoints, tmp_path: Path, name, sampler, suffix) -> None:
    m = run_eval(checkpoints, name, tmp_path, "mode=sample", f"sample.sampler={sampler}", "sample.steps=4", "sample.num_samples=3",
                 f"sample.prefix='{PREFIX}'", f"sample.suffix='{suffix}'", "sample.fill=5")
    rows = [json.loads(line) for line in Path(m["samples_path"]).read_text().splitlines()]
    given = rows[0]["given"]
    assert m["given_positions"] == len(given) == m["length"] - 5 and m["num_samples"] == len(rows) == 3
    n_prefix = next(i for i in range(m["length"]) if i not in given)
    for row in rows:
        assert row["given"] == given and len(row["ids"]) == m["length"]
        assert [row["ids"][i] for i in given] == [rows[0]["ids"][i] for i in given]  # given tokens bit-identical
        assert row["text"].startswith(PREFIX) and row["text"].endswith(suffix)
        assert sorted(set(range(m["length"])) - set(given)) == list(range(n_prefix, n_prefix + 5))  # one span of 5


def test_the_ar_model_refuses_a_suffix_and_fill_must_leave_room(checkpoints, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="continues a prefix only"):
        run_eval(checkpoints, "ar", tmp_path, "mode=sample", f"sample.suffix='{SUFFIX}'")
    with pytest.raises(ConfigError, match="sample.fill=0"):
        run_eval(checkpoints, "absorb", tmp_path, "mode=sample", f"sample.prefix='{PREFIX}'", "sample.fill=0")
    with pytest.raises(ConfigError, match="disagrees"):
        run_eval(checkpoints, "absorb", tmp_path, "mode=sample", f"sample.prefix='{PREFIX}'", "sample.fill=3", "sample.length=4")


def test_without_fill_the_span_fills_the_training_length(checkpoints, tmp_path: Path) -> None:
    m = run_eval(checkpoints, "absorb", tmp_path, "mode=sample", "sample.num_samples=1", f"sample.prefix='{PREFIX}'")
    assert m["length"] == 16 and 0 < m["given_positions"] < 16


def test_text_generator_from_python(checkpoints) -> None:
    from bijdiff.app.generation import TextGenerator

    generator = TextGenerator.load(checkpoints["absorb"], device="cpu")
    completions = generator.generate(prefix=PREFIX, suffix=SUFFIX, fill=4, num_samples=2, steps=4, seed=3)
    assert len(completions) == 2 and all(c.text.startswith(PREFIX) and c.text.endswith(SUFFIX) for c in completions)
    assert all(len(c.generated) == 4 for c in completions)
    again = generator.generate(prefix=PREFIX, suffix=SUFFIX, fill=4, num_samples=2, steps=4, seed=3)
    assert [c.ids for c in again] == [c.ids for c in completions]  # a seed gives the same draws
    given = generator.given_ids(PREFIX, "", 3)
    pattern = torch.where(torch.arange(len(given)) % 2 == 0, given.clamp_min(0), torch.tensor(-1))  # any pattern
    ids, calls = generator.sample_ids(pattern, num_samples=2, steps=4)
    assert torch.equal(ids[:, ::2], pattern[::2].expand(2, -1)) and calls >= 1


def test_conditional_sampling_from_the_command_line(checkpoints, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "eval.py", f"ckpt_path={checkpoints['absorb']}", "mode=sample", f"sample.prefix='{PREFIX}'",
         f"sample.suffix='{SUFFIX}'", "sample.fill=4", "sample.num_samples=2", "sample.steps=4", f"paths.output_dir={tmp_path}",
         f"paths.cache_dir={checkpoints['cache']}", "device=cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["text"] in proc.stdout for r in rows)  # every completed text is printed
