"""Self-distillation through time, round after round, then every student's speed and quality.

    python study/distillation.py --teacher RUN/checkpoints/best.ckpt --ar AR_RUN/checkpoints/best.ckpt \\
        --runs runs/distill --steps 32 16 8 4 [--method consistency] [--set trainer.max_steps=600] \\
        [--out bench/results/sampling_speed_distilled]

Round ``i`` runs ``train.py experiment=distill distill.teacher=<the previous round's last.ckpt>
distill.steps=K_i distill.method=METHOD`` in ``RUNS/steps<K_i>`` (the first round from ``--teacher``, sampled by it at
``2·K_1`` steps); each ``K`` must be half the one before, since a student is trained to do in one
step what its teacher does in two. The student takes the teacher's network, tokenizer and data
files (``conf/experiment/distill.yaml``). A finished round is kept and a stopped one goes on from
its ``last.ckpt``; a kept round of another ``--method`` is refused. Then ``bench/sampling_speed.py`` measures, judged by ``--ar``, the original
teacher with ``analytic`` at ``2·K_1`` and at every ``K``, each student at its own ``K`` and the AR
model at temperature 1, one after another on an otherwise idle machine: ``<out>.{json,md,png}``
(by default ``bench/results/sampling_speed_distilled`` with ``_<method>`` for a method other than sdtt).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bijdiff.diffusion.distill import DISTILLATION_METHODS
from crossover import finished
from run import resume, run_config

ROOT = Path(__file__).resolve().parents[1]


def check_halving(steps: list[int]) -> None:
    """Each round's steps are half the previous round's (whole numbers, at least 1)."""
    if not steps or steps[-1] < 1 or any(a != 2 * b for a, b in zip(steps, steps[1:])):
        raise SystemExit(f"--steps {' '.join(map(str, steps))}: each round halves the steps, e.g. 32 16 8 4")


def train_round(teacher: Path, steps: int, run_dir: Path, method: str, overrides: list[str]) -> Path:
    """One round of ``method`` (or the rest of a stopped one); the student's ``last.ckpt``."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if (run_dir / ".hydra" / "config.yaml").is_file():
        kept = (run_config(run_dir).get("distill") or {}).get("method", "sdtt")
        if kept != method:
            raise SystemExit(f"{run_dir} is a round of distill.method={kept}, not {method}: give another --runs")
    if finished(run_dir):
        return last
    if last.is_file():
        resume(run_dir, [])
        return last
    cmd = [sys.executable, "train.py", "experiment=distill", f"distill.teacher={teacher}", f"distill.steps={steps}",
           f"distill.method={method}", *overrides, f"hydra.run.dir={run_dir}", "callbacks.progress.style=plain"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, required=True, help="an absorbing-graph denoiser's checkpoint")
    parser.add_argument("--ar", type=Path, help="the AR checkpoint that judges the samples (none: train only)")
    parser.add_argument("--runs", type=Path, required=True, help="where the rounds' run directories go")
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 16, 8, 4], help="each round's student steps")
    parser.add_argument("--method", choices=list(DISTILLATION_METHODS), default="sdtt",
                        help="who takes the two steps a student step learns (distill.method)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every round")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--out", type=Path, help="the benchmark's files (default: bench/results/sampling_speed_distilled[_METHOD])")
    args = parser.parse_args()
    suffix = "" if args.method == "sdtt" else f"_{args.method}"
    args.out = args.out or ROOT / "bench" / "results" / f"sampling_speed_distilled{suffix}"
    check_halving(args.steps)
    teacher, students = args.teacher.resolve(), []
    for steps in args.steps:
        teacher = train_round(teacher, steps, (args.runs / f"steps{steps}").resolve(), args.method, args.set)
        students.append(f"{teacher}:{steps}")
    if args.ar is None:
        return
    cmd = [sys.executable, "bench/sampling_speed.py", "--diffusion", str(args.teacher.resolve()), "--ar", str(args.ar.resolve()),
           "--analytic", *map(str, [2 * args.steps[0], *args.steps]), "--confident", "--blockwise", "--temperatures", "1",
           "--distilled", *students, "--num-samples", str(args.num_samples), "--out", str(args.out.resolve())]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
