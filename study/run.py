"""Train and evaluate the comparison study, and write the Results tables (docs/results.md) and plots.

    python study/run.py --train ../shared/data/wikitext-2 --runs runs/study     # the whole study, one command
    python study/run.py --runs runs/study [--out study/results/standard] [--readme docs/results.md]   # evaluate only
    python study/run.py                                                         # redraw from --out only

``--train DATA_DIR`` first trains the study on the standard protocol (train on
``wiki.train.tokens``, validate on ``wiki.valid.tokens``, test on ``wiki.test.tokens``) into
``--runs``, one Hydra multirun per sweep of ``SWEEPS``, all at ``experiment=cpu``:
``model=ar,standard,bijective,bijective_affine,hybrid`` (absorbing graph),
``model=standard,bijective diffusion=uniform``, and seeds 1 and 2 of the main configurations:
equal step budget, parameter counts within 1%. It trains only the runs that have not
finished (``last.ckpt`` at ``trainer.max_steps``), and a run that stopped (a killed process) goes
on in its own directory from its ``last.ckpt`` (written at every validation), so an interrupted
study loses at most the steps since the last validation;
``--only`` picks runs by name. ``--set`` adds
overrides to every training run (e.g. a tiny model for a smoke test).

For each finished run under the ``--runs`` directories (of ``--only``, if given), named from its
config (``bijective``, ``bijective-affine``, ``standard-uniform``...), it runs ``eval.py`` for
the test perplexity (``<name>-ppl.json``), the exact likelihood of the first 256 test blocks
(``<name>-ppl-first256.json``, absorbing and AR), and samples judged by the study's ``ar`` run
(``<name>-sample-analytic<steps>.json`` for each ``--steps``, or ``--uniform-steps`` on the uniform
graph, ``<name>-sample-ordered.json``;
``ar-sample-t<T>.json`` for the AR model tempered to diffusion's generative perplexity,
``<name>-invert.json`` for the bijective trunks' inverse exactness; repeat
runs, ``<name>-seed<N>``, get the test perplexity only); it saves the run's validation curve
(``curves/<name>.csv``) and its parameters and bytes saved for backward (``<name>-memory.json``). Results already in ``--out`` are kept (delete a file to
redo it). Then it writes the tables (``study/tables.py``; with the seed table and which differences
exceed the seed spread) into ``--readme`` (default ``docs/results.md``) between the
``<!-- study-tables -->`` markers, the machine-readable ``--summary`` (default
``docs/results/summary.json``), the validation curves against steps (``val_nll.png``) and against
training time (``val_nll_vs_time.png``: mean and band over seeds), and generative
perplexity against sampling steps (``gen_ppl_vs_steps.png``).
"""
from __future__ import annotations

import argparse
import colorsys
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from omegaconf import OmegaConf

from curves import load_curve, median_tokens_per_s, save_curve
from summary import write_summary
from tables import check_readme, write_readme

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's bijdiff, as in the train.py and eval.py runs it starts there
from bijdiff.nn.memory import counting_saved_bytes  # noqa: E402
PRESET, BUDGET_MINUTES = "cpu", 30  # the experiment preset every study run trains with, and its budget on 2 CPU cores
PROTOCOL = f"standard protocol, experiment={PRESET}"  # named in the plots


def config_name(cfg: dict) -> str:
    """``<model>[-affine][-swiglu][-uniform][-notime][-seed<N>]`` from a composed training config (seed 0 unnamed)."""
    m, d = cfg["model"], cfg.get("diffusion", {})  # the AR baseline has no diffusion group
    name = m["name"]
    if m.get("coupling") == "affine" and name in ("bijective", "hybrid"):
        name += "-affine"
    if m.get("mlp") == "swiglu":
        name += "-swiglu"
    if d.get("graph") == "uniform":
        name += "-uniform"
    if name != "ar" and m.get("time_conditioning") is False:
        name += "-notime"
    if cfg.get("seed", 0):
        name += f"-seed{cfg['seed']}"
    return name


def run_config(run_dir: Path) -> dict:
    """The composed config a run was trained (or evaluated) with."""
    return yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())


def run_name(run_dir: Path) -> str:
    """The study's name for a run directory, from the config it was trained with."""
    return config_name(run_config(run_dir))


def last_step(run_dir: Path) -> int:
    """The optimizer step of the run's ``last.ckpt`` (0 without one)."""
    from bijdiff.app.train import resume_step

    last = run_dir / "checkpoints" / "last.ckpt"
    return resume_step(str(last)) if last.is_file() else 0


def scan_runs(roots: list[Path]) -> tuple[dict[str, Path], dict[str, Path]]:
    """The training runs under ``roots``: ``{name: dir}`` of the finished ones (``last.ckpt`` at
    ``trainer.max_steps``) and of the furthest unfinished one of each other name.

    An unfinished run resumes from ``last.ckpt`` (written at the end of every validation), not from
    an ``interrupted.ckpt`` that may have been written mid-step or mid-validation."""
    finished, unfinished = {}, {}
    for config in sorted(c for root in roots for c in root.glob("**/.hydra/config.yaml")):
        run_dir = config.parent.parent
        cfg = run_config(run_dir)
        if "trainer" not in cfg:
            continue  # an eval.py output directory, not a training run
        name, wanted, step = config_name(cfg), int(cfg["trainer"]["max_steps"]), last_step(run_dir)
        if step >= wanted:
            if name in finished:
                raise SystemExit(f"two runs are both {name!r}: {finished[name]} and {run_dir}; give --runs one study")
            finished[name] = run_dir
            continue
        print(f"study: {run_dir} ({name}) stopped at step {step} of {wanted}", flush=True)
        if step > unfinished.get(name, (0, None))[0]:
            unfinished[name] = step, run_dir
    return finished, {name: run_dir for name, (_, run_dir) in unfinished.items() if name not in finished}


def find_runs(roots: list[Path]) -> dict[str, Path]:
    """``{name: run directory}`` of the finished runs under ``roots``."""
    return scan_runs(roots)[0]


def early_stopping(patience: int) -> list[str]:
    """``train.py`` overrides that stop a run after ``patience`` validations without a lower ``val/nll`` (none for 0)."""
    if patience <= 0:
        return []
    return ["+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping",
            "+callbacks.early_stopping.monitor=val/nll", "+callbacks.early_stopping.mode=min",
            f"+callbacks.early_stopping.patience={patience}"]


def resume(run_dir: Path, data_files: list[str]) -> None:
    """Finish a stopped run in its own directory from its ``last.ckpt``, with the overrides it was started with."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    started = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    kept = [o for o in started if not o.startswith(("ckpt_path=", "data.files."))]
    with open(run_dir / "resumed.txt", "a") as f:  # the segment before this resume, for train_seconds
        f.write(f"{(run_dir / '.hydra' / 'config.yaml').stat().st_mtime} {ckpt.stat().st_mtime}\n")
    cmd = [sys.executable, "train.py", *kept, *data_files, f"ckpt_path={ckpt}", f"hydra.run.dir={run_dir}"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def train_seconds(run_dir: Path) -> float:
    """Wall time of the run: from its composed config to its final ``last.ckpt``, plus each segment
    before a resume (``resumed.txt``: config and checkpoint times; a resume that failed and was
    retried repeats a config time, and one that failed after rewriting the config is negative)."""
    config, last = (run_dir / ".hydra" / "config.yaml").stat().st_mtime, (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime
    segments: dict[float, float] = {config: last}
    record = run_dir / "resumed.txt"
    for line in record.read_text().splitlines() if record.is_file() else []:
        start, end = map(float, line.split())
        segments[start] = max(segments.get(start, start), end)
    return sum(max(0.0, end - start) for start, end in segments.items())


def write_train_times(runs: dict[str, Path], path: Path) -> None:
    """Each run's line of ``train_times.txt`` (wall time, median training tokens/s), derived afresh
    from its directory; the lines of runs not given (an ``--only`` rerun, earlier runs) are kept."""
    kept = [line for line in (path.read_text().splitlines() if path.is_file() else [])
            if line.split(" ", 1)[0] not in runs]
    lines = []
    for name, run_dir in runs.items():
        speed = median_tokens_per_s(run_dir)
        lines.append(f"{name} rc=0 seconds={train_seconds(run_dir):.0f}" + (f" tokens_per_s={speed:.0f}" if speed else ""))
    path.write_text("".join(f"{line}\n" for line in kept + lines))


def memory(run_dir: Path, out: Path) -> None:
    """Parameters and bytes autograd saves for one training loss at the run's batch shape, unless ``out`` exists."""
    if out.is_file():
        return
    import torch

    from bijdiff.app.checkpoint import load_module

    module = load_module(run_dir / "checkpoints" / "best.ckpt")
    data = module.hparams["cfg"]["data"]
    torch.manual_seed(0)
    x0 = torch.randint(0, int(module.hparams["num_tokens"]), (int(data["batch_size"]), int(data["seq_len"])))
    with counting_saved_bytes() as saved:
        module.objective.train_nats(module.model.train(), x0, torch.ones_like(x0, dtype=torch.bool)).sum()
    out.write_text(json.dumps({"parameters": sum(p.numel() for p in module.model.parameters()),
                               "saved_activation_bytes": saved[0], "batch": [int(data["batch_size"]), int(data["seq_len"])]},
                              indent=2) + "\n")


def evaluate(run_dir: Path, out: Path, *args: str, extra: Sequence[str] = ()) -> None:
    """``eval.py`` on the run's best checkpoint with overrides ``args``, then ``extra`` (which win), unless ``out`` exists."""
    if out.is_file():
        return
    overrides = dict(a.split("=", 1) for a in (*args, *extra))
    cmd = [sys.executable, "eval.py", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f"output_json={out}",
           *(f"{k}={v}" for k, v in overrides.items())]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def saved_curves(out: Path) -> dict[str, dict[int, float]]:
    """``{name: {step: val_nll}}`` from ``out/curves/*.csv``."""
    return {path.stem: load_curve(path) for path in sorted((out / "curves").glob("*.csv"))}


def colours(names: Sequence[str]) -> dict[str, str | tuple[float, float, float]]:
    """One matplotlib colour per configuration, the same in every plot; ``<name>-seed<N>`` shares ``<name>``'s
    (the default cycle up to 10 configurations, evenly spaced hues past it)."""
    config = {name: name.split("-seed")[0] for name in names}
    n = len(set(config.values()))
    palette = [f"C{i}" for i in range(n)] if n <= 10 else [colorsys.hsv_to_rgb(i / n, 0.8, 0.8) for i in range(n)]
    colour = dict(zip(sorted(set(config.values())), palette))
    return {name: colour[config[name]] for name in names}


def plot(out: Path) -> None:
    """``val_nll.png`` and ``val_nll_vs_time.png`` from the saved curves, ``gen_ppl_vs_steps.png`` from the
    analytic sample results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    curves = saved_curves(out)
    by_model: dict[str, list[tuple[int, float]]] = {}
    for path in out.glob("*-sample-analytic*.json"):
        name, _, steps = path.stem.partition("-sample-analytic")
        by_model.setdefault(name, []).append((int(steps), json.loads(path.read_text())["gen_ppl"]))
    colour = colours([*curves, *by_model])

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():  # a seed repeat dashed, in its configuration's colour
        ax.plot(list(curve), list(curve.values()), marker="o", label=name, color=colour[name],
                linestyle="--" if "-seed" in name else "-")
    ax.set(xlabel="optimizer step", ylabel="validation nats/token (bound; exact for ar)",
           title=f"Validation NLL ({PROTOCOL})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "val_nll.png", dpi=120)

    plot_against_time(out, curves, colour, plt)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in sorted(by_model.items()):
        ax.plot(*zip(*sorted(points)), marker="o", label=name, color=colour[name])
    ar = out / "ar-sample.json"
    if ar.is_file():
        ax.axhline(json.loads(ar.read_text())["gen_ppl"], color="black", linestyle="--", label="ar, temperature 1")
    ax.set_xscale("log")
    ax.set_xticks(sorted({steps for points in by_model.values() for steps, _ in points}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(yscale="log", xlabel="sampling steps (analytic)", ylabel="generative ppl (AR judge)",
           title=f"Samples, 64 tokens ({PROTOCOL})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gen_ppl_vs_steps.png", dpi=120)


def training_seconds(out: Path) -> dict[str, float]:
    """``{run: seconds per optimizer step}`` at the run's median training speed (``train_times.txt``)
    and batch shape (``<run>-memory.json``): validation and any other job on the machine left out."""
    times = out / "train_times.txt"
    per_step = {}
    for line in times.read_text().splitlines() if times.is_file() else []:
        name, *fields = line.split()
        speed = dict(f.split("=", 1) for f in fields).get("tokens_per_s")
        shape = out / f"{name}-memory.json"
        if speed and shape.is_file():
            batch, length = json.loads(shape.read_text())["batch"]
            per_step[name] = batch * length / float(speed)
    return per_step


def draw_over_seeds(ax: Any, config: str, curves: dict[str, dict[int, float]], x: Callable[[str, int], float],
                    colour: Any, every_step: bool = False) -> None:
    """One configuration's seeds on ``ax``: the mean curve at the steps every seed validated (``every_step``:
    at every step any seed did, over the seeds that did; for runs that stop early), at the mean of the
    seeds' ``x(run, step)`` (minutes, epochs...), and a band from the lowest to the highest seed."""
    steps = sorted(set().union(*curves.values()) if every_step else set.intersection(*(set(c) for c in curves.values())))
    having = [[n for n, c in curves.items() if s in c] for s in steps]
    xs = [statistics.fmean(x(n, s) for n in names) for s, names in zip(steps, having)]
    values = [[curves[n][s] for n in names] for s, names in zip(steps, having)]
    ax.plot(xs, [statistics.fmean(v) for v in values], marker="o", markersize=3, color=colour,
            label=f"{config} ({len(curves)} seed{'s' * (len(curves) > 1)})")
    if len(curves) > 1:
        ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], color=colour, alpha=0.2)


def plot_against_time(out: Path, curves: dict[str, dict[int, float]], colour: dict[str, Any], plt: Any) -> None:
    """``val_nll_vs_time.png``: each configuration's validation bound against training time, the mean
    over its seeds with a band from the lowest to the highest seed."""
    per_step = training_seconds(out)
    configs: dict[str, list[str]] = {}
    for name in curves:
        if name in per_step:
            configs.setdefault(name.split("-seed")[0], []).append(name)
    fig, ax = plt.subplots(figsize=(6, 4))
    for config, names in sorted(configs.items()):
        draw_over_seeds(ax, config, {n: curves[n] for n in names}, lambda n, s: s * per_step[n] / 60, colour[names[0]])
    ax.set(xlabel="training minutes at the run's median speed (2-core CPU)",
           ylabel="validation nats/token (bound; exact for ar)", title=f"Validation NLL against time ({PROTOCOL})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "val_nll_vs_time.png", dpi=120)


SWEEPS = {  # sweep -> (the models it trains, the overrides its runs share)
    "absorb": (["ar", "standard", "bijective", "bijective_affine", "hybrid"], []),
    "uniform": (["standard", "bijective"], ["diffusion=uniform"]),
    "seed1": (["ar", "standard", "bijective", "bijective_affine"], ["seed=1"]),  # how far a seed moves a result
    "seed2": (["standard", "bijective", "bijective_affine"], ["seed=2"]),
    # the standard trunk in its strongest common form at equal parameters: a gated (SwiGLU) MLP
    "swiglu": (["standard"], ["model.mlp=swiglu"]),
    "swiglu-seed1": (["standard"], ["model.mlp=swiglu", "seed=1"]),
    "swiglu-seed2": (["standard"], ["model.mlp=swiglu", "seed=2"]),
}


def planned_runs(overrides: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
    """``{name: (sweep, model)}`` for every run of the study, named from its composed config."""
    from hydra import compose, initialize_config_dir

    planned = {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        for sweep, (models, shared) in SWEEPS.items():
            for model in models:
                cfg = compose("train", overrides=[f"experiment={PRESET}", f"model={model}", *shared, *overrides])
                planned[config_name(OmegaConf.to_container(cfg))] = (sweep, model)
    return planned


def train_study(data_dir: Path, roots: list[Path], overrides: list[str], only: Sequence[str] = ()) -> None:
    """Train each study run (of ``only``, if given) that ``roots`` lack finished: a stopped run is
    finished in its own directory from its ``last.ckpt``, the others start in ``roots[0]``, one
    Hydra multirun per sweep."""
    planned = planned_runs(overrides)
    unknown = sorted(set(only) - set(planned))
    if unknown:
        raise SystemExit(f"unknown study runs {unknown}; choose from {sorted(planned)}")
    finished, stopped = scan_runs(roots)
    root = roots[0]
    todo = [name for name in planned if name not in finished and (not only or name in only)]
    files = [f"data.files.train={data_dir / 'wiki.train.tokens'}", f"data.files.validation={data_dir / 'wiki.valid.tokens'}",
             f"data.files.test={data_dir / 'wiki.test.tokens'}"]
    for name in todo:
        if name in stopped:
            resume(stopped[name], files)
    for sweep, (_, shared) in SWEEPS.items():
        models = [planned[name][1] for name in todo if planned[name][0] == sweep and name not in stopped]
        if not models:
            continue
        sweep_dir, n = (root / sweep).resolve(), 1
        while sweep_dir.exists():
            sweep_dir, n = (root / f"{sweep}-{n}").resolve(), n + 1
        cmd = [sys.executable, "train.py", "-m", f"experiment={PRESET}", f"model={','.join(models)}", *shared, *files,
               "callbacks.progress.style=plain", f"hydra.sweep.dir={sweep_dir}", *overrides]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)


def evaluate_runs(runs: dict[str, Path], judge_dir: Path | None, args: argparse.Namespace) -> None:
    """Every evaluation of every run that ``args.out`` lacks, the runs' curves and training times."""
    judge = f"judge_ckpt={judge_dir / 'checkpoints' / 'best.ckpt'}" if judge_dir else None
    sample = ["mode=sample", f"sample.num_samples={args.num_samples}", judge]
    todo = {name: evaluations(name, sample, args.steps, args.uniform_steps) for name in runs}
    needs_judge = sorted(name for name, evals in todo.items() for result, _ in evals
                         if "sample" in result and not (args.out / f"{name}-{result}.json").is_file())
    if needs_judge and judge is None:
        raise SystemExit(f"no finished ar run under {[str(r) for r in args.runs]} to judge the samples of {needs_judge}: "
                         "train it too (--only ar ...)")
    device = f"device={args.device}"
    write_train_times(runs, args.out / "train_times.txt")
    for name, run_dir in runs.items():
        save_curve(run_dir, args.out / "curves" / f"{name}.csv")
        memory(run_dir, args.out / f"{name}-memory.json")
        for result, overrides in todo[name]:
            evaluate(run_dir, args.out / f"{name}-{result}.json", device, *overrides, extra=args.eval_set)


AR_TEMPERATURES = (1.25, 1.5, 1.75)


def evaluations(name: str, sample: list[str], steps: Sequence[int], uniform_steps: Sequence[int] = (64,)
                ) -> list[tuple[str, list[str]]]:
    """``(result, eval.py overrides)`` for each evaluation of run ``name``; ``<name>-<result>.json`` holds it."""
    if "-seed" in name:  # a repeat run: its bound is what the repeat table reads
        return [("ppl", [])]
    absorbing = name == "ar" or not name.endswith("-uniform")
    todo = [("ppl", [])]
    if absorbing:
        todo.append(("ppl-first256", ["eval.exact=true", "eval.max_sequences=256"]))
    if name == "ar":  # tempered, to compare sampling speed with diffusion at equal generative perplexity
        return todo + [("sample", sample)] + [(f"sample-t{t:g}", [*sample, f"sample.temperature={t:g}"]) for t in AR_TEMPERATURES]
    todo += [(f"sample-analytic{k}", [*sample, "sample.sampler=analytic", f"sample.steps={k}"])
             for k in (steps if absorbing else uniform_steps)]
    if absorbing:
        todo.append(("sample-ordered", [*sample, "sample.sampler=ordered"]))
    if name.startswith("bijective"):  # what the bijective trunk buys: an inverse exact to rounding
        todo.append(("invert", ["mode=invert"]))
    return todo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="*", default=[],
                        help="directories holding the study's run directories (none: only redraw plots and tables from --out)")
    parser.add_argument("--out", type=Path, default=ROOT / "study" / "results" / "standard")
    parser.add_argument("--summary", type=Path, default=ROOT / "docs" / "results" / "summary.json",
                        help="where the machine-readable summary of the seeds' test results goes")
    parser.add_argument("--readme", type=Path, default=ROOT / "docs" / "results.md",
                        help="the Markdown file whose study-table markers the tables are written between (default: docs/results.md)")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 64, 256], help="analytic sampler steps (absorbing graph)")
    parser.add_argument("--uniform-steps", type=int, nargs="+", default=[64],
                        help="analytic sampler steps for the uniform graph, where every step runs the network "
                             "(64 steps took 3.5-12 min per run on a 2-core CPU, so 256 would take about 4 times that)")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train", type=Path, metavar="DATA_DIR", help="first train the study into --runs (its first directory)")
    parser.add_argument("--only", nargs="+", default=[], metavar="RUN",
                        help="train and evaluate only these runs (names as in the tables: ar, bijective-affine, standard-seed1...)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every training run")
    parser.add_argument("--eval-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides for every eval.py run, over the study's own (e.g. eval.max_sequences=16 for a smoke test)")
    args = parser.parse_args()
    args.runs = [r.resolve() for r in args.runs]  # train.py runs with the checkout as its directory

    check_readme(args.readme)  # before hours of training, not after
    if args.train:
        if not args.runs:
            raise SystemExit("--train needs --runs DIR: the directory the study's runs go to")
        train_study(args.train.resolve(), args.runs, args.set, args.only)
    runs = find_runs(args.runs)
    missing = sorted(set(args.only) - set(runs))
    if missing:
        raise SystemExit(f"no finished run {missing} under {[str(r) for r in args.runs]} (finished: {sorted(runs)})")
    args.out.mkdir(parents=True, exist_ok=True)
    if runs:
        evaluate_runs({k: v for k, v in runs.items() if not args.only or k in args.only}, runs.get("ar"), args)
    plot(args.out)
    write_readme(args.readme, args.out)
    if any(args.out.glob("*-ppl.json")):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        write_summary(args.summary, args.out, protocol="standard", preset=PRESET, budget_minutes=BUDGET_MINUTES,
                      commit=commit or "unknown")
    print(f"study: {len(runs)} runs; metrics and plots in {args.out}; tables written to {args.readme}")


if __name__ == "__main__":
    main()
