"""Learning-speed sweep: which training settings get a diffusion denoiser off the unigram plateau, across seeds.

    python study/sweep.py --data ../shared/data/wikitext-2 --runs runs/sweep \
        --candidates baseline notime lr1e-3 --seeds 0 1 [--set KEY=VALUE ...]

Trains each candidate (``CANDIDATES``: a name and its ``train.py`` overrides on top of ``--base``)
once per seed on the standard protocol (train on ``wiki.train.tokens``, validate on
``wiki.valid.tokens``), skipping runs whose curve is already in ``--out``, saves each validation
curve as ``<candidate>-seed<N>.csv`` in ``--out``, and writes ``sweep.md`` there: per candidate
the validation bound at a quarter of the steps and at the end (mean ± seed standard deviation, and
each seed's), against the validation split's unigram level.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from curves import load_curve, save_curve
from run import early_stopping

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES: dict[str, list[str]] = {
    "baseline": [],
    "notime": ["model.time_conditioning=false"],
    "lr1e-3": ["optim.lr=1e-3"],
    "lr5e-4": ["optim.lr=5e-4"],
    "lr4e-3": ["optim.lr=4e-3"],
    "nodropout": ["model.dropout=0"],
    "noema": ["ema.decay=0"],
    "noclip": ["trainer.gradient_clip_val=0"],
    # the AR baseline's regularisation on the data-constrained benchmark (study/crossover.py --ar-set)
    "dropout0.3": ["model.dropout=0.3"],
    "wd0.1": ["optim.weight_decay=0.1"],
    "dropout0.3-wd0.1": ["model.dropout=0.3", "optim.weight_decay=0.1"],
    "dropout0.5-wd0.1": ["model.dropout=0.5", "optim.weight_decay=0.1"],
}


def curve_path(out: Path, candidate: str, seed: int) -> Path:
    """Where the sweep keeps one run's validation curve."""
    return out / f"{candidate}-seed{seed}.csv"


def train(candidate: str, seed: int, args: argparse.Namespace) -> None:
    """One ``train.py`` run of the candidate at ``seed``; its curve is copied to ``--out``."""
    run_dir = (args.runs / f"{candidate}-seed{seed}").resolve()
    data = args.data.resolve()
    files = [f"data.files.train={data / 'wiki.train.tokens'}", f"data.files.validation={data / 'wiki.valid.tokens'}",
             f"data.files.test={data / 'wiki.test.tokens'}"]
    cmd = [sys.executable, "train.py", *args.base, *CANDIDATES[candidate], *args.set, *early_stopping(args.patience), *files, f"seed={seed}",
           f"paths.output_dir={run_dir}", "callbacks.progress.style=plain"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    save_curve(run_dir, curve_path(args.out, candidate, seed))


def at_or_before(curve: dict[int, float], step: int) -> float:
    """The curve's value at the last validation at or before ``step``."""
    return curve[max(s for s in curve if s <= step)]


def table(out: Path, unigram: float) -> str:
    """The Markdown table of every candidate whose curves are in ``out``."""
    lines = [f"Validation nats/token (the bound; exact for the AR model; validation-split unigram: {unigram:.3f}); "
             "mean ± seed standard deviation, then each seed's value; best: each seed's lowest validation and its step.", "",
             "| candidate | seeds | last validation by a quarter of the steps | end | each seed, end | best, each seed (step) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for candidate in CANDIDATES:
        paths = sorted(out.glob(f"{candidate}-seed*.csv"))
        if not paths:
            continue
        curves = [load_curve(p) for p in paths]
        end = min(max(c) for c in curves)
        quarter_step = max(s for s in curves[0] if s <= end // 4)
        quarter = [at_or_before(c, quarter_step) for c in curves]
        final = [c[end] if end in c else at_or_before(c, end) for c in curves]

        def cell(values: list[float]) -> str:
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            return f"{statistics.fmean(values):.3f}{spread}"

        seeds = ", ".join(p.stem.rsplit("-seed", 1)[1] for p in paths)
        lines.append(f"| `{candidate}` | {seeds} | {cell(quarter)} (step {quarter_step}) | {cell(final)} (step {end}) | "
                     + " / ".join(f"{v:.3f}" for v in final) + " | "
                     + " / ".join(f"{min(c.values()):.3f} ({min(c, key=c.get)})" for c in curves) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="directory of wiki.{train,valid,test}.tokens (none: only rewrite the table)")
    parser.add_argument("--runs", type=Path, default=Path("runs/sweep"), help="where the run directories go")
    parser.add_argument("--out", type=Path, default=ROOT / "study" / "results" / "sweep")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--base", nargs="*", default=["experiment=cpu"], metavar="KEY=VALUE",
                        help="overrides every run starts from (default: experiment=cpu)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides after the candidate's")
    parser.add_argument("--patience", type=int, default=0,
                        help="stop a run after this many validations without improvement (0: run every step)")
    parser.add_argument("--unigram", type=float, required=True,
                        help="the validation split's add-½ unigram nats/token (6.664 for the standard protocol's 8,192-token BPE)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data:
        for seed in args.seeds:
            for candidate in args.candidates:
                if not curve_path(args.out, candidate, seed).is_file():
                    train(candidate, seed, args)
    (args.out / "sweep.md").write_text(table(args.out, args.unigram))
    print((args.out / "sweep.md").read_text())


if __name__ == "__main__":
    main()
