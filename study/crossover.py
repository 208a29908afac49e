"""Long runs to a crossover: the AR model against diffusion denoisers trained for many epochs, compared at their best checkpoints.

    python study/data_constrained.py --data ../shared/data/wikitext-2 --out data/wikitext-2-constrained
    python study/crossover.py --data data/wikitext-2-constrained --runs runs/crossover \\
        --out study/results/data-constrained                          # the data-constrained benchmark
    python study/crossover.py --data ../shared/data/wikitext-2 --runs runs/long --out study/results/long \\
        --steps 100000 --set trainer=gpu data.batch_size=256          # the standard protocol at a GPU budget

Trains each model of ``--models`` once per seed of ``--seeds`` at ``--preset`` (default
``experiment=data_constrained``) on ``DATA/wiki.{train,valid,test}.tokens``, for ``--steps``
optimizer steps (default: the preset's) or until the validation NLL has not improved for
``--patience`` validations (Lightning's ``EarlyStopping``; 0 turns it off). The AR model also gets
``--ar-set``: the regularisation a fair AR baseline has in this regime (tune it first, e.g.
``study/sweep.py --base experiment=data_constrained model=ar --candidates baseline dropout0.3 wd0.1``).
A run stopped part-way (a killed process) goes on from its ``last.ckpt``; a finished one is kept.

Each run's best checkpoint (lowest validation NLL: the early-stopped model) is evaluated on the
whole test split: the AR model's exact NLL, the diffusion models' bound and, on the absorbing
graph, their exact likelihood by ordered unmasking (``<run>-ppl.json``). ``--out`` gets the
validation curves with epochs (``curves/<run>.csv``), ``val_nll_vs_epochs.png`` (mean and band
over seeds) and ``crossover.md``: the best test numbers per model over seeds, the epoch at which
each peaked, which differences exceed twice their combined seed spread, and where (if anywhere)
each diffusion model's best validation NLL so far falls below the AR model's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from curves import load_curve, read_curve, save_curve
from run import colours, draw_over_seeds, evaluate, last_step, resume, run_config
from summary import differences, seed_results, seed_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("ar", "standard", "bijective_affine")


def run_name(model: str, seed: int) -> str:
    """``bijective-affine`` for seed 0, ``bijective-affine-seed1`` for seed 1: the study's names, so its seed tables read them."""
    return model.replace("_", "-") + (f"-seed{seed}" if seed else "")


def stopped_early(curve: dict[int, float], patience: int) -> bool:
    """Whether the last ``patience`` validations all failed to improve on the best before them (EarlyStopping's rule)."""
    if patience <= 0 or len(curve) <= patience:
        return False
    values = [curve[s] for s in sorted(curve)]
    return min(values[-patience:]) >= min(values[:-patience])


def finished(run_dir: Path, patience: int) -> bool:
    """A run that reached its ``trainer.max_steps`` or stopped early, with a ``last.ckpt`` to show for it."""
    config = run_dir / ".hydra" / "config.yaml"
    if not (run_dir / "checkpoints" / "last.ckpt").is_file() or not config.is_file():
        return False
    max_steps = int(yaml.safe_load(config.read_text())["trainer"]["max_steps"])
    return last_step(run_dir) >= max_steps or stopped_early(read_curve(run_dir), patience)


def train_command(model: str, seed: int, run_dir: Path, files: list[str], args: argparse.Namespace) -> list[str]:
    """The ``train.py`` command of one run."""
    steps = [f"trainer.max_steps={args.steps}"] if args.steps else []
    early = ["+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping",
             "+callbacks.early_stopping.monitor=val/nll", "+callbacks.early_stopping.mode=min",
             f"+callbacks.early_stopping.patience={args.patience}"] if args.patience > 0 else []
    regularisation = args.ar_set if model == "ar" else []
    return [sys.executable, "train.py", f"experiment={args.preset}", f"model={model}", f"seed={seed}", *steps, *early,
            *regularisation, *args.set, *files, f"hydra.run.dir={run_dir}", "callbacks.progress.style=plain"]


def train_runs(args: argparse.Namespace) -> dict[str, Path]:
    """Train (or finish) every run of ``--models`` × ``--seeds``; ``{run name: directory}``."""
    data = args.data.resolve()
    files = [f"data.files.{split}={data / f'wiki.{name}.tokens'}"
             for split, name in (("train", "train"), ("validation", "valid"), ("test", "test"))]
    runs = {}
    for seed in args.seeds:
        for model in args.models:
            name = run_name(model, seed)
            run_dir = runs[name] = (args.runs / name).resolve()
            if finished(run_dir, args.patience):
                continue
            if (run_dir / "checkpoints" / "last.ckpt").is_file():
                resume(run_dir, files)
                continue
            cmd = train_command(model, seed, run_dir, files, args)
            print("$", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
    return runs


def best_so_far(curve: dict[float, float]) -> dict[float, float]:
    """The running minimum of a curve."""
    best, out = float("inf"), {}
    for x in sorted(curve):
        best = out[x] = min(best, curve[x])
    return out


def crossover_epoch(ar: dict[float, float], diffusion: dict[float, float]) -> float | None:
    """The first epoch (of those both curves have) at which the diffusion model's best validation NLL so far is
    below the AR model's; None if it never is."""
    a, d = best_so_far(ar), best_so_far(diffusion)
    return next((e for e in sorted(set(a) & set(d)) if d[e] < a[e]), None)


def mean_over_seeds(out: Path, names: list[str]) -> dict[float, float]:
    """``{epochs: mean validation NLL}`` over a model's seeds, at the steps every seed validated."""
    nll = [load_curve(out / "curves" / f"{n}.csv") for n in names]
    epochs = [load_curve(out / "curves" / f"{n}.csv", column=2) for n in names]
    steps = sorted(set.intersection(*(set(c) for c in nll)))
    return {statistics.fmean(e[s] for e in epochs): statistics.fmean(c[s] for c in nll) for s in steps}


def report(out: Path, models: list[str], seeds: list[int]) -> str:
    """``crossover.md``: best test numbers over seeds, the epoch each run peaked at, and the crossover epochs."""
    by_model = {m: [run_name(m, s) for s in seeds if (out / "curves" / f"{run_name(m, s)}.csv").is_file()] for m in models}
    by_model = {m: names for m, names in by_model.items() if names}
    lines = ["| model | seeds | best validation nats/token | at epoch (each seed) |", "| --- | --- | --- | --- |"]
    for model, names in by_model.items():
        bests, at = [], []
        for name in names:
            nll, epochs = load_curve(out / "curves" / f"{name}.csv"), load_curve(out / "curves" / f"{name}.csv", column=2)
            step = min(nll, key=nll.get)
            bests.append(nll[step])
            at.append(f"{epochs[step]:.3g}")
        spread = f" ± {statistics.stdev(bests):.3f}" if len(bests) > 1 else ""
        lines.append(f"| `{model}` | {len(names)} | {statistics.fmean(bests):.3f}{spread} | {' / '.join(at)} |")
    results = seed_results(out)
    lines += ["", "Test split, best checkpoints (the AR model exact; diffusion the bound, its exact likelihood below):", "",
              *seed_table(results), "", *differences(results), ""]
    for name in (n for names in by_model.values() for n in names):
        path = out / f"{name}-ppl.json"
        m = json.loads(path.read_text()) if path.is_file() else {}
        if "nll_bound_stderr" in m and "nll_exact_per_token" in m:
            lines.append(f"- `{name}`: exact {m['nll_exact_per_token']:.3f} nats/token by ordered unmasking "
                         f"(bound {m['nll_per_token']:.3f} ± {m['nll_bound_stderr']:.3f})")
    if "ar" in by_model:
        ar = mean_over_seeds(out, by_model["ar"])
        for model, names in by_model.items():
            if model != "ar":
                epoch = crossover_epoch(ar, mean_over_seeds(out, names))
                where = f"at epoch {epoch:.3g}" if epoch is not None else "nowhere within the runs' epochs"
                lines.append(f"- `{model}`'s best validation NLL so far (mean over seeds) falls below the AR model's {where}")
    return "\n".join(lines) + "\n"


def plot(out: Path, models: list[str], seeds: list[int], title: str) -> None:
    """``val_nll_vs_epochs.png``: each model's validation NLL against epochs, mean and band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colour = colours(models)
    for model in models:
        names = [run_name(model, s) for s in seeds if (out / "curves" / f"{run_name(model, s)}.csv").is_file()]
        if names:
            epochs = {n: load_curve(out / "curves" / f"{n}.csv", column=2) for n in names}
            draw_over_seeds(ax, model, {n: load_curve(out / "curves" / f"{n}.csv") for n in names},
                            lambda n, s: epochs[n][s], colour[model])
    ax.set(xlabel="epochs (passes over the training split)", ylabel="validation nats/token (bound; exact for ar)",
           title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "val_nll_vs_epochs.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="directory of wiki.{train,valid,test}.tokens (none: only evaluate and report)")
    parser.add_argument("--runs", type=Path, required=True, help="where the run directories are (and go)")
    parser.add_argument("--out", type=Path, required=True, help="where evaluations, curves, the plot and crossover.md go")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--preset", default="data_constrained", help="the experiment preset every run starts from")
    parser.add_argument("--steps", type=int, default=None, help="the budget in optimizer steps (default: the preset's)")
    parser.add_argument("--patience", type=int, default=5, help="validations without improvement before a run stops (0: never)")
    parser.add_argument("--ar-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="the AR model's regularisation, tuned first (default: the preset's, dropout 0.1 and no weight decay)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run")
    parser.add_argument("--eval-set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every eval.py run")
    parser.add_argument("--title", default="Validation NLL against epochs")
    args = parser.parse_args()
    args.runs = args.runs.resolve()
    if args.data:
        runs = train_runs(args)
    else:
        runs = {run_name(m, s): args.runs / run_name(m, s) for s in args.seeds for m in args.models}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, run_dir in runs.items():
        if not finished(run_dir, args.patience):
            print(f"crossover: {run_dir} has not finished; left out", flush=True)
            continue
        save_curve(run_dir, args.out / "curves" / f"{name}.csv")
        cfg = run_config(run_dir)  # ordered unmasking needs the absorbing graph; the AR model's NLL is exact anyway
        exact = ["eval.exact=true"] if cfg["model"]["name"] != "ar" and cfg["diffusion"]["graph"] == "absorb" else []
        evaluate(run_dir, args.out / f"{name}-ppl.json", *exact, extra=args.eval_set)
    plot(args.out, args.models, args.seeds, args.title)
    (args.out / "crossover.md").write_text(report(args.out, args.models, args.seeds))
    print((args.out / "crossover.md").read_text())


if __name__ == "__main__":
    main()
