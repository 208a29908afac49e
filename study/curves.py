"""Summarise training runs' validation curves as a Markdown table (and optionally a PNG plot).

Usage: python study/curves.py NAME=RUN_DIR [NAME=RUN_DIR ...] [--png curves.png]
RUN_DIR is a ``train.py`` run directory (it holds ``csv/metrics.csv``).
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path


def read_curve(run_dir: Path, column: str = "val/nll") -> dict[int, float]:
    """``{step: value}`` of a validation metric in a run's CSV log (the step is the optimizer step of the validation)."""
    curve: dict[int, float] = {}
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get(column):
                curve[int(row["step"]) + 1] = float(row[column])
    return curve


def save_curve(run_dir: Path, out: Path) -> None:
    """The run's validation curve as ``step,val_nll`` rows (``step,val_nll,epochs`` where the run logged
    ``val/epochs``), so results outlive the run directory."""
    out.parent.mkdir(parents=True, exist_ok=True)
    nll, epochs = read_curve(run_dir), read_curve(run_dir, "val/epochs")
    if set(nll) <= set(epochs):  # a run begun before val/epochs was logged has no (or only later) epochs
        rows = "".join(f"{step},{value!r},{epochs[step]!r}\n" for step, value in nll.items())
        out.write_text("step,val_nll,epochs\n" + rows)
    else:
        out.write_text("step,val_nll\n" + "".join(f"{step},{value!r}\n" for step, value in nll.items()))


def load_curve(path: Path, column: int = 1) -> dict[int, float]:
    """``{step: val_nll}`` from a curve ``save_curve`` wrote (``column=2``: ``{step: epochs}``)."""
    lines = path.read_text().splitlines()[1:]
    return {int(fields[0]): float(fields[column]) for fields in (line.split(",") for line in lines)}


def median_tokens_per_s(run_dir: Path) -> float | None:
    """Median training tokens/s in a run's CSV log: the median leaves out the steps whose time includes a validation."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        speeds = [float(row["train/tokens_per_s"]) for row in csv.DictReader(f) if row.get("train/tokens_per_s")]
    return statistics.median(speeds) if speeds else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    parser.add_argument("--png", type=Path, default=None, help="write a plot of val/nll vs step")
    parser.add_argument("--unigram", type=float, default=None, help="unigram nats/token to draw as a reference")
    args = parser.parse_args()
    curves = {}
    for spec in args.runs:
        name, _, path = spec.partition("=")
        curves[name] = read_curve(Path(path))
    steps = sorted({s for c in curves.values() for s in c})
    print("| run | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("| --- |" + " --- |" * len(steps))
    for name, c in curves.items():
        cells = [f"{c[s]:.3f} ({math.exp(c[s]):.0f})" if s in c else "" for s in steps]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, c in curves.items():
            ax.plot(list(c), list(c.values()), marker="o", label=name)
        if args.unigram:
            ax.axhline(args.unigram, color="gray", ls="--", label="unigram")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation ELBO bound (nats/token)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        print(f"\nplot written to {args.png}")


if __name__ == "__main__":
    main()
