"""The Results tables (in ``docs/results.md``) from the study's ``eval.py`` outputs.

    python study/tables.py [--dir study/results] [--readme docs/results.md]

Reads ``<run>-ppl.json`` (bound or exact perplexity on the whole test split),
``<run>-ppl-first256.json`` (exact likelihood on the first 256 blocks), ``<run>-sample-*.json``
(samples judged by the AR model), ``<run>-invert.json`` (inverse exactness of a bijective trunk),
``<run>-seed<N>-ppl.json`` (the other
seeds of a row's configuration: mean ± seed standard deviation, and which differences exceed
twice their combined standard deviation), ``<run>-memory.json`` (parameters, bytes saved for backward by one
training loss at the run's batch shape) and ``train_times.txt`` (lines ``<run> rc=0 seconds=N tokens_per_s=M``, wall time and median training
speed, as ``study/run.py`` writes them), and prints the Markdown tables, or with ``--readme FILE``
(``docs/results.md`` for the project's tables) writes them between that file's ``<!-- study-tables -->`` markers. Missing files leave rows out.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from summary import differences, seed_results, seed_table

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- study-tables:begin -->", "<!-- study-tables:end -->"
RUNS = ("ar", "standard", "standard-swiglu", "standard-notime", "bijective", "bijective-affine", "hybrid", "hybrid-affine",
        "standard-uniform", "bijective-uniform", "bijective-affine-uniform", "hybrid-uniform")
NAMES = {
    "ar": "`ar` (exact)",
    "standard": "`standard` SEDD, absorbing (bound)",
    "standard-notime": "`standard` SEDD, absorbing, no time conditioning (bound)",
    "standard-swiglu": "`standard` SEDD, absorbing, gated (SwiGLU) MLP (bound)",
    "bijective": "`bijective` SEDD, absorbing, additive, memory-efficient (bound)",
    "bijective-affine": "`bijective` SEDD, absorbing, affine, memory-efficient (bound)",
    "hybrid": "`hybrid` (RRSS) SEDD, absorbing, additive (bound)",
    "standard-uniform": "`standard` SEDD, uniform, geometric noise (bound)",
    "bijective-uniform": "`bijective` SEDD, uniform, geometric noise (bound)",
}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _clock(seconds: float | None) -> str:
    return "–" if seconds is None else f"{int(seconds) // 60} m {int(seconds) % 60:02d} s"


def _bound(m: dict) -> str:
    """``≤ nll ± stderr`` of a bound, or the exact NLL of an exact evaluation (the AR model)."""
    if "nll_bound_stderr" not in m:
        return f"{m['nll_exact_per_token']:.3f} (exact)"
    return f"≤ {m['nll_per_token']:.3f} ± {m['nll_bound_stderr']:.3f}"


def _per_word(ppl: float | None, prefix: str = "") -> str:
    """Per-word perplexity, or "–" where ``eval.py`` gives none (a subset of the split has no word count)."""
    return "–" if ppl is None else f"{prefix}{ppl:,.1f}"


def train_times(directory: Path) -> dict[str, dict[str, float]]:
    """``{run: {"seconds": wall time, "tokens_per_s": median training speed}}`` from ``train_times.txt``
    (lines ``<run> rc=0 seconds=N [tokens_per_s=M]``; the speed only where it was recorded)."""
    path = directory / "train_times.txt"
    times = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        m = re.match(r"(\S+) rc=0 seconds=(\d+)(?: tokens_per_s=(\d+))?", line)
        if m:
            times[m.group(1)] = {"seconds": float(m.group(2))} | ({"tokens_per_s": float(m.group(3))} if m.group(3) else {})
    return times


def likelihood_table(directory: Path) -> list[str]:
    times = train_times(directory)
    rows = ["| model | parameters | saved activations / step | train wall time | train tokens/s | test nats/token | ppl/token | ppl/word |",
            "| --- | ---: | ---: | --- | ---: | --- | --- | --- |"]
    unigram = None
    for run in RUNS:
        m = _load(directory / f"{run}-ppl.json")
        if m is None:
            continue
        unigram = unigram or m
        if "nll_bound_stderr" not in m:  # an exact likelihood (the AR model)
            nll, ppl, word = m["nll_exact_per_token"], m["ppl_exact_per_token"], m["ppl_exact_per_word"]
            cells = f"{nll:.3f} | {ppl:,.1f} | {_per_word(word)}"
        else:
            cells = f"{_bound(m)} | ≤ {m['ppl_bound_per_token']:,.1f} | {_per_word(m['ppl_bound_per_word'], '≤ ')}"
        mem = _load(directory / f"{run}-memory.json")
        size = f"{mem['parameters'] / 1e6:.2f} M | {mem['saved_activation_bytes'] / 2**20:,.0f} MiB" if mem else "– | –"
        time = times.get(run, {})
        speed = f"{time['tokens_per_s']:,.0f}" if "tokens_per_s" in time else "–"
        rows.append(f"| {NAMES.get(run, f'`{run}` (bound)')} | {size} | {_clock(time.get('seconds'))} | {speed} | {cells} |")
    if unigram is not None:
        u = unigram
        rows.insert(2, f"| unigram (add-½) | – | – | – | – | {u['unigram_nll_per_token']:.3f} | "
                       f"{u['unigram_ppl_per_token']:,.1f} | {_per_word(u['unigram_ppl_per_word'])} |")
    return rows


def exact_table(directory: Path) -> list[str]:
    rows = ["| model (first 256 test blocks) | bound nats/token | exact nats/token | exact ppl/token |",
            "| --- | --- | --- | --- |"]
    for run in RUNS:
        m = _load(directory / f"{run}-ppl-first256.json")
        if m is None:
            continue
        bound = _bound(m) if "nll_bound_stderr" in m else "–"
        rows.append(f"| `{run}` | {bound} | {m['nll_exact_per_token']:.3f} | {m['ppl_exact_per_token']:,.1f} |")
    return rows


def sample_table(directory: Path) -> list[str]:
    rows = ["| model, sampler | network calls / sample | gen. ppl (AR judge) | entropy | distinct-4 | tokens/s |",
            "| --- | --- | --- | --- | --- | --- |"]
    for run in RUNS:
        samples = [_load(path) for path in directory.glob(f"{run}-sample*.json")]
        for m in sorted(samples, key=lambda m: (m["sampler"], m["steps"], m.get("temperature", 1.0))):
            how = f"ancestral, temperature {m.get('temperature', 1.0):g}" if m["model"] == "ar" else (
                m["sampler"] if m["sampler"] == "ordered" else f"{m['sampler']}, {m['steps']} steps")
            rows.append(f"| `{run}`, {how} | {m['network_calls_per_sample']:.3g} | {m['gen_ppl']:,.1f} | {m['entropy']:.2f} | "
                        f"{m['distinct_4']:.2f} | {m['tokens_per_s']:.1f} |")
    return rows


def invert_table(directory: Path) -> list[str]:
    """``eval.py mode=invert`` on the trained bijective trunks: how exact their inverse and log-det are."""
    rows = ["| model | relative reconstruction error fp32 / fp64 | log-det (mean) | "
            "log-det sum error fp32 / fp64 | tokens recovered fp32 / fp64 |", "| --- | --- | --- | --- | --- |"]
    for run in RUNS:
        m = _load(directory / f"{run}-invert.json")
        if m is not None:
            rows.append(f"| `{run}` | {m['rel_error_fp32']:.1e} / {m['rel_error_fp64']:.1e} | {m['logdet_mean_fp64']:,.1f} | "
                        f"{m['logdet_sum_error_fp32']:.1e} / {m['logdet_sum_error_fp64']:.1e} | "
                        f"{m['token_round_trip_fp32']:.4f} / {m['token_round_trip_fp64']:.4f} |")
    return rows if len(rows) > 2 else []


def tables(directory: Path) -> str:
    """The tables as Markdown, separated by blank lines."""
    found = seed_results(directory)
    results = {run: found[run] for run in [*RUNS, *sorted(set(found) - set(RUNS))] if run in found}
    parts = (likelihood_table(directory), exact_table(directory), sample_table(directory), invert_table(directory),
             seed_table(results), differences(results))
    return "\n\n".join("\n".join(t) for t in parts if t)


def check_readme(readme: Path) -> str:
    """The file's text (docs/results.md), if it has the study-table markers to write between; else a clear exit."""
    if not readme.is_file():
        raise SystemExit(f"no README {readme} to write the tables into: pass --readme FILE, a file with {BEGIN} and {END} lines")
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} … {END} markers to write the tables between")
    return text


def write_readme(readme: Path, directory: Path) -> None:
    """Replace what stands between the file's (docs/results.md's) study-table markers."""
    head, rest = check_readme(readme).split(BEGIN, 1)
    readme.write_text(f"{head}{BEGIN}\n{tables(directory)}\n{END}{rest.split(END, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "study" / "results")
    parser.add_argument("--readme", type=Path, help="write the tables into this Markdown file (docs/results.md for the project's tables) instead of printing them")
    args = parser.parse_args()
    if args.readme:
        write_readme(args.readme, args.dir)
    else:
        print(tables(args.dir))


if __name__ == "__main__":
    main()
