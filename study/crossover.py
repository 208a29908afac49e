"""Long runs to a crossover: the AR model against diffusion denoisers trained for many epochs, compared at their best checkpoints.

    python study/data_constrained.py --data ../shared/data/wikitext-2 --out data/wikitext-2-constrained
    python study/crossover.py --data data/wikitext-2-constrained --runs runs/crossover \\
        --out study/results/data-constrained                          # the data-constrained benchmark
    python study/crossover.py --data ../shared/data/wikitext-2 --runs runs/long --out study/results/long --preset cpu \\
        --steps 100000 --set trainer=gpu data.batch_size=256 trainer.val_check_interval=1000   # the standard protocol, GPU budget

Trains each model of ``--models`` once per seed of ``--seeds`` at ``--preset`` (default
``experiment=data_constrained``) on ``DATA/wiki.{train,valid,test}.tokens``, for ``--steps``
optimizer steps (default: the preset's) or until the validation NLL has not improved for
``--patience`` validations (Lightning's ``EarlyStopping``; 0 turns it off). The AR model also gets
``--ar-set``: the regularisation a fair AR baseline has in this regime (tune it first, e.g.
``study/sweep.py --base experiment=data_constrained model=ar --candidates baseline dropout0.3 wd0.1``).
A run stopped part-way (a killed process) goes on from its ``last.ckpt``; a finished one is kept.
Without ``--data`` nothing trains: a run stopped part-way is reported as it stands, and said to be,
and an evaluation is made again when the run's best checkpoint has moved on since (or a bound
was made with other than ``BOUND_T_SAMPLES`` time draws); ``--no-eval`` runs no evaluation and
reports the ones in ``--out`` as they are.

Each run's best checkpoint (lowest validation NLL: the early-stopped model) is evaluated on the
whole test split: the AR model's exact NLL, the diffusion models' bound (``BOUND_T_SAMPLES`` time
draws per sequence) and, on the absorbing
graph, their exact likelihood by ordered unmasking (``<run>-ppl.json``). ``--out`` gets the
validation curves with epochs (``curves/<run>.csv``), ``val_nll_vs_epochs.png`` (mean and band
over seeds) and ``crossover.md``: the best test numbers per model over seeds, the epoch at which
each peaked, which differences exceed twice their combined seed spread, and where (if anywhere)
each diffusion model's best validation NLL so far (mean over seeds; a run that stopped early keeps
its final best) falls below the AR model's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from curves import load_curve, read_curve, save_curve
from run import colours, draw_over_seeds, early_stopping, evaluate, last_step, resume, run_config
from summary import differences, seed_results, seed_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("ar", "standard", "bijective_affine")
# the models differ by hundredths of a nat: 16 time draws per sequence put the bound's Monte-Carlo
# standard error near 0.013 nats/token on the 162 k-token test half (eval.py's default 4: 0.025)
BOUND_T_SAMPLES = 16


def run_name(model: str, seed: int) -> str:
    """``bijective-affine`` for seed 0, ``bijective-affine-seed1`` for seed 1: the study's names, so its seed tables read them."""
    return model.replace("_", "-") + (f"-seed{seed}" if seed else "")


def stopped_early(curve: dict[int, float], patience: int) -> bool:
    """Whether the last ``patience`` validations all failed to improve on the best before them (EarlyStopping's rule)."""
    if patience <= 0 or len(curve) <= patience:
        return False
    values = [curve[s] for s in sorted(curve)]
    return min(values[-patience:]) >= min(values[:-patience])


def finished(run_dir: Path) -> bool:
    """A run that reached its ``trainer.max_steps`` or stopped early under the patience it was trained
    with, with a ``last.ckpt`` to show for it."""
    if not (run_dir / "checkpoints" / "last.ckpt").is_file() or not (run_dir / ".hydra" / "config.yaml").is_file():
        return False
    cfg = run_config(run_dir)
    patience = int((cfg.get("callbacks") or {}).get("early_stopping", {}).get("patience", 0))
    return last_step(run_dir) >= int(cfg["trainer"]["max_steps"]) or stopped_early(read_curve(run_dir), patience)


def train_command(model: str, seed: int, run_dir: Path, files: list[str], args: argparse.Namespace) -> list[str]:
    """The ``train.py`` command of one run."""
    steps = [f"trainer.max_steps={args.steps}"] if args.steps else []
    regularisation = args.ar_set if model == "ar" else []
    return [sys.executable, "train.py", f"experiment={args.preset}", f"model={model}", f"seed={seed}", *steps,
            *early_stopping(args.patience),
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
            if finished(run_dir):
                continue
            if (run_dir / "checkpoints" / "last.ckpt").is_file():
                resume(run_dir, files)
                continue
            if run_dir.exists():
                raise SystemExit(f"{run_dir} exists without checkpoints/last.ckpt (it stopped before its first "
                                 "validation): delete it to start that run again")
            cmd = train_command(model, seed, run_dir, files, args)
            print("$", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
    return runs


def best_so_far(curve: dict[int, float]) -> dict[int, float]:
    """The running minimum of a curve."""
    best, out = float("inf"), {}
    for x in sorted(curve):
        best = out[x] = min(best, curve[x])
    return out


def mean_best(curves: list[dict[int, float]], steps: list[int]) -> dict[int, float]:
    """``{step: mean over seeds of each seed's best validation NLL up to that step}`` at ``steps``: a run that
    stopped keeps its final best (early stopping's promise); steps before every seed has validated are left out."""
    bests = [best_so_far(c) for c in curves]
    out = {}
    for step in steps:
        values = [b[max(t for t in b if t <= step)] for b in bests if min(b) <= step]
        if len(values) == len(bests):
            out[step] = statistics.fmean(values)
    return out


def crossover_step(ar: list[dict[int, float]], diffusion: list[dict[int, float]]) -> int | None:
    """The first validation step at which a diffusion model's best validation NLL so far (mean over its
    seeds) is below the AR model's, each carried past the end of runs that stopped; None if it never is."""
    steps = sorted(set().union(*ar, *diffusion))
    a, d = mean_best(ar, steps), mean_best(diffusion, steps)
    return next((s for s in steps if s in a and s in d and d[s] < a[s]), None)


def best_step(curve: dict[int, float]) -> int:
    """The validation step of a curve's lowest NLL: where ``best.ckpt`` was saved."""
    return min(curve, key=curve.get)


def outdated(result: Path, step: int, t_samples: int | None) -> bool:
    """Whether an evaluation JSON measured another checkpoint than the one at ``step`` or (for a bound)
    with other than ``t_samples`` time draws; False without one."""
    if not result.is_file():
        return False
    m = json.loads(result.read_text())
    return int(m["global_step"]) != step or (t_samples is not None and m.get("t_samples") != t_samples)


def curves_of(out: Path, names: list[str], column: int = 1) -> list[dict[int, float]]:
    """The saved curves (``column=2``: epochs) of the runs ``names``, with a clear error for a curve without epochs."""
    curves = []
    for name in names:
        path = out / "curves" / f"{name}.csv"
        if column == 2 and not path.read_text().startswith("step,val_nll,epochs"):
            raise SystemExit(f"{path} has no epochs column: its run did not log val/epochs (trained before it was "
                             "logged); train it again")
        curves.append(load_curve(path, column))
    return curves


def report(out: Path, models: list[str], seeds: list[int], unfinished: dict[str, int] | None = None) -> str:
    """``crossover.md``: best test numbers over seeds, the epoch each run peaked at, and the crossover epochs;
    ``unfinished`` names the runs stopped (at that step) before their budget or patience ran out."""
    by_model = {m: [run_name(m, s) for s in seeds if (out / "curves" / f"{run_name(m, s)}.csv").is_file()] for m in models}
    by_model = {m: names for m, names in by_model.items() if names}
    lines = ["| model | seeds | best validation nats/token | at epoch (each seed) | validated up to epoch (each seed) |",
             "| --- | --- | --- | --- | --- |"]
    curves = {m: curves_of(out, names) for m, names in by_model.items()}
    epochs_of = {m: curves_of(out, names, column=2) for m, names in by_model.items()}
    for model, names in by_model.items():
        nll, epochs = curves[model], epochs_of[model]
        peaks = [best_step(c) for c in nll]
        bests = [c[p] for c, p in zip(nll, peaks)]
        spread = f" ± {statistics.stdev(bests):.3f}" if len(bests) > 1 else ""
        lines.append(f"| `{model}` | {len(names)} | {statistics.fmean(bests):.3f}{spread} | "
                     f"{' / '.join(f'{e[p]:.3g}' for e, p in zip(epochs, peaks))} | {' / '.join(f'{e[max(e)]:.3g}' for e in epochs)} |")
    for name, step in (unfinished or {}).items():
        lines.append(f"\n`{name}` stopped at step {step} before its budget or patience ran out: its numbers are its best so far.")
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
        for model in by_model:
            if model == "ar":
                continue
            step = crossover_step(curves["ar"], curves[model])
            epochs = epochs_of[model][0]
            per_step = epochs[max(epochs)] / max(epochs)  # the same data and batch for every run
            where = (f"crosses below the AR model's at epoch {step * per_step:.3g} (step {step})" if step is not None
                     else f"stays above the AR model's up to epoch {max(epochs.values()):.3g}")
            lines.append(f"- `{model}`: the best validation NLL so far (mean over seeds) {where}")
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
            epochs = dict(zip(names, curves_of(out, names, column=2)))
            draw_over_seeds(ax, model, dict(zip(names, curves_of(out, names))), lambda n, s: epochs[n][s], colour[model],
                            every_step=True)
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
    parser.add_argument("--no-eval", action="store_true",
                        help="report the evaluations already in --out as they are, without running eval.py")
    parser.add_argument("--title", default="Validation NLL against epochs")
    args = parser.parse_args()
    args.runs = args.runs.resolve()
    if args.data:
        runs = train_runs(args)
    else:
        runs = {run_name(m, s): args.runs / run_name(m, s) for s in args.seeds for m in args.models}
    args.out.mkdir(parents=True, exist_ok=True)
    unfinished = {}
    for name, run_dir in runs.items():
        if not (run_dir / "checkpoints" / "best.ckpt").is_file():
            print(f"crossover: {run_dir} has no best.ckpt yet; left out", flush=True)
            continue
        if not finished(run_dir):
            unfinished[name] = last_step(run_dir)
            print(f"crossover: {run_dir} stopped at step {unfinished[name]} before its budget or patience ran out; "
                  "reported as it stands (run crossover.py with --data to finish it)", flush=True)
        save_curve(run_dir, args.out / "curves" / f"{name}.csv")
        cfg = run_config(run_dir)  # ordered unmasking needs the absorbing graph; the AR model's NLL is exact anyway
        diffusion = cfg["model"]["name"] != "ar"
        result = args.out / f"{name}-ppl.json"
        stale = outdated(result, best_step(read_curve(run_dir)), BOUND_T_SAMPLES if diffusion else None)
        if args.no_eval:
            if stale:
                print(f"crossover: {result} measured another checkpoint or drew other than {BOUND_T_SAMPLES} times "
                      "per sequence; reported as it is", flush=True)
            continue
        if stale:
            result.unlink()  # the run went on and found a better checkpoint since, or the bound is too noisy
        exact = ["eval.exact=true"] if diffusion and cfg["diffusion"]["graph"] == "absorb" else []
        bound = [f"eval.t_samples={BOUND_T_SAMPLES}"] if diffusion else []
        evaluate(run_dir, result, *exact, *bound, extra=args.eval_set)
    plot(args.out, args.models, args.seeds, args.title)
    (args.out / "crossover.md").write_text(report(args.out, args.models, args.seeds, unfinished))
    print((args.out / "crossover.md").read_text())


if __name__ == "__main__":
    main()
