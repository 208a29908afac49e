"""Per-configuration results over seeds: the seed table of docs/results.md and ``docs/results/summary.json``.

A configuration's seed-0 run is ``<config>-ppl.json`` and its other seeds ``<config>-seed<N>-ppl.json``
(``eval.py`` outputs of the study, on the whole test split).
"""
from __future__ import annotations

import itertools
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

SEED_FILE = re.compile(r"^(?P<config>.+?)(?:-seed(?P<seed>\d+))?-ppl$")


def seed_results(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """``{config: [{"seed", "nats_per_token", "stderr", "ppl_per_word"}, ...]}``: the bound (exact for AR) of each seed."""
    results: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*-ppl.json")):
        match = SEED_FILE.match(path.stem)
        if match is None:
            continue
        m = json.loads(path.read_text())
        exact = "nll_bound_stderr" not in m
        results.setdefault(match["config"], []).append({
            "seed": int(match["seed"] or 0),
            "nats_per_token": m["nll_exact_per_token"] if exact else m["nll_per_token"],
            "stderr": 0.0 if exact else m["nll_bound_stderr"],
            "ppl_per_word": m.get("ppl_exact_per_word" if exact else "ppl_bound_per_word"),  # None on a subset
            "exact": exact,
        })
    return {config: sorted(runs, key=lambda r: r["seed"]) for config, runs in results.items()}


def spread(runs: list[dict[str, Any]]) -> tuple[float, float | None, float]:
    """Mean nats/token over seeds, the seed standard deviation (None for one seed) and the Monte-Carlo
    standard error of the mean (the estimator's own noise, independent across seeds)."""
    values = [r["nats_per_token"] for r in runs]
    sd = statistics.stdev(values) if len(values) > 1 else None
    mc = math.sqrt(sum(r["stderr"] ** 2 for r in runs)) / len(runs)
    return statistics.fmean(values), sd, mc


def seed_table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Mean ± seed standard deviation per configuration, per token and per word."""
    rows = ["| configuration | seeds | test nats/token, mean ± seed sd | Monte-Carlo s.e. of the mean | ppl/word, mean |",
            "| --- | --- | --- | --- | --- |"]
    for config, runs in results.items():
        mean, sd, mc = spread(runs)
        kind = "exact" if runs[0]["exact"] else "≤"
        seeds = ", ".join(str(r["seed"]) for r in runs)
        per_word = [r["ppl_per_word"] for r in runs if r["ppl_per_word"] is not None]
        words = f"{statistics.fmean(per_word):,.0f}" if per_word else "–"
        rows.append(f"| `{config}` | {seeds} | {kind} {mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else " (one seed)")
                    + f" | {mc:.3f} | {words} |")
    return rows if len(rows) > 2 else []


def differences(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each pair of configurations with ≥ 2 seeds: the difference of means against twice its standard
    deviation ``sqrt(sd_a²/n_a + sd_b²/n_b)`` (the seed spread holds the Monte-Carlo noise too)."""
    rows = ["| pair | difference of means | 2 × s.d. of the difference | beyond the spread |", "| --- | --- | --- | --- |"]
    multi = {c: r for c, r in results.items() if len(r) > 1}
    for a, b in itertools.combinations(multi, 2):
        (ma, sa, _), (mb, sb, _) = spread(multi[a]), spread(multi[b])
        combined = math.sqrt(sa**2 / len(multi[a]) + sb**2 / len(multi[b]))
        diff = ma - mb
        rows.append(f"| `{a}` − `{b}` | {diff:+.3f} | {2 * combined:.3f} | {'yes' if abs(diff) > 2 * combined else 'no'} |")
    return rows if len(rows) > 2 else []


def summary(directory: Path, protocol: str, preset: str, budget_minutes: float, commit: str) -> dict[str, Any]:
    """The machine-readable summary of the study (``docs/results/summary.json``)."""
    results = seed_results(directory)
    unigram = next((json.loads(p.read_text())["unigram_nll_per_token"] for p in sorted(directory.glob("*-ppl.json"))), None)
    return {
        "protocol": protocol, "preset": preset, "budget_minutes": budget_minutes, "commit": commit,
        "unigram_nats_per_token": unigram,
        "configurations": {config.replace("-", "_"): [{k: r[k] for k in ("seed", "nats_per_token", "stderr", "ppl_per_word")}
                                                      for r in runs] for config, runs in results.items()},
    }


def write_summary(path: Path, directory: Path, **fields: Any) -> None:
    """Write the summary as JSON (sorted keys, one trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary(directory, **fields), indent=2, sort_keys=True) + "\n")
