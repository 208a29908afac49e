"""Sampling speed against sample quality: tokens/s and network calls per sample against generative perplexity, every sampler.

    python bench/sampling_speed.py --diffusion RUN/checkpoints/best.ckpt --ar AR_RUN/checkpoints/best.ckpt \\
        [--analytic 16 64 256] [--confident 4 8 16 32 64] [--blockwise 8 16 32 --blocks 4] \\
        [--distilled STUDENT.ckpt:32 ...] \\
        [--temperatures 1 1.25 1.5] [--num-samples 64] \\
        [--out bench/results/sampling_speed]

Runs ``eval.py mode=sample`` on the diffusion checkpoint with the ``analytic``, ``confident`` and
``blockwise`` samplers at each step count and with ``ordered``, on each distilled student with
``analytic`` at the steps it was distilled for, and on the AR checkpoint (KV cache) at each
temperature: the same number of samples, all in one batch, every sample judged by the AR
checkpoint. Runs one at a time, so take it on an otherwise idle machine. Writes ``<out>.json``
(each run's ``eval.py`` metrics), ``<out>.png`` (tokens/s against generative perplexity) and
``<out>.md`` (the table, printed too), which marks the diffusion settings that are at least as good
as the AR model at temperature 1 and faster than it. As good means a generative perplexity no
higher *and* a per-sample entropy no more than ``ENTROPY_SLACK`` nats lower: a sampler can buy
perplexity with repetition, which the entropy shows. (The AR model at temperature 1 is judged by
itself, so its generative perplexity is its own sample entropy rate, the lowest any judge gives it.)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENTROPY_SLACK = 0.1  # nats of per-sample unigram entropy below the AR model's that still count as as diverse


def settings(args: argparse.Namespace) -> dict[str, list[str]]:
    """``{label: eval.py overrides}`` of every sampling run."""
    runs = {f"analytic-{k}": [f"ckpt_path={args.diffusion}", "sample.sampler=analytic", f"sample.steps={k}"] for k in args.analytic}
    runs |= {f"confident-{k}": [f"ckpt_path={args.diffusion}", "sample.sampler=confident", f"sample.steps={k}"]
             for k in args.confident}
    runs |= {f"blockwise-{k}": [f"ckpt_path={args.diffusion}", "sample.sampler=blockwise", f"sample.steps={k}",
                                f"sample.blocks={args.blocks}"] for k in args.blockwise}
    runs["ordered"] = [f"ckpt_path={args.diffusion}", "sample.sampler=ordered"]
    for student in args.distilled:
        ckpt, _, steps = student.rpartition(":")
        if not ckpt or not steps.isdigit():
            raise SystemExit(f"--distilled {student}: give CKPT:STEPS, a student checkpoint and the steps it was distilled for")
        runs[f"distilled-{steps}"] = [f"ckpt_path={Path(ckpt).resolve()}", "sample.sampler=analytic", f"sample.steps={steps}"]
    runs |= {f"ar-t{t:g}": [f"ckpt_path={args.ar}", f"sample.temperature={t:g}"] for t in args.temperatures}
    return runs


def measure(overrides: list[str], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One ``eval.py mode=sample`` run; its metrics."""
    cmd = [sys.executable, "eval.py", "mode=sample", f"judge_ckpt={args.ar}", f"sample.num_samples={args.num_samples}",
           f"sample.batch_size={args.num_samples}", f"device={args.device}", f"output_json={out}", *overrides, *args.set]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def table(results: dict[str, dict[str, Any]]) -> str:
    """The Markdown table; ``faster and as good`` against the AR model at temperature 1."""
    reference = results.get("ar-t1")
    lines = ["| sampler | steps | network calls / sample | tokens/s | gen ppl (AR judge) | entropy (nats) | faster than AR at T = 1 and as good |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label, m in results.items():
        name = f"AR, KV cache, T = {m['temperature']:g}" if label.startswith("ar-") else f"`{m['sampler']}`"
        if "blocks" in m:
            name += f", {m['blocks']} blocks"
        if label.startswith("distilled-"):
            name += ", distilled student"
        verdict = "–"
        if reference is not None and not label.startswith("ar-"):
            diverse = m["entropy"] >= reference["entropy"] - ENTROPY_SLACK
            as_good = m["gen_ppl"] <= reference["gen_ppl"] and diverse
            faster = m["tokens_per_s"] > reference["tokens_per_s"]
            quality = "as good" if as_good else ("worse" if diverse else "worse (less diverse)")
            verdict = "yes" if as_good and faster else f"{quality}, {'faster' if faster else 'slower'}"
        lines.append(f"| {name} | {m['steps']} | {m['network_calls_per_sample']:.1f} | {m['tokens_per_s']:,.0f} | "
                     f"{m['gen_ppl']:,.1f} | {m['entropy']:.2f} | {verdict} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Tokens/s against generative perplexity: one line per sampler over its steps, the AR model over temperatures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for label, m in results.items():
        groups.setdefault(label.split("-")[0], []).append((label, m))
    for group, members in groups.items():
        xs, ys = [m["gen_ppl"] for _, m in members], [m["tokens_per_s"] for _, m in members]
        ax.plot(xs, ys, marker="o", label="AR (KV cache), over temperature" if group == "ar" else group)
        for label, m in members:
            tag = f"T={m['temperature']:g}" if group == "ar" else (str(m["steps"]) if group != "ordered" else "")
            ax.annotate(tag, (m["gen_ppl"], m["tokens_per_s"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if "ar-t1" in results:
        ax.axvline(results["ar-t1"]["gen_ppl"], color="gray", linestyle="--", linewidth=0.8)
        ax.axhline(results["ar-t1"]["tokens_per_s"], color="gray", linestyle="--", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlabel="generative perplexity (AR judge; lower is better)",
           ylabel="tokens / s (higher is better)", title="Sampling speed against quality (labels: steps)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--diffusion", type=Path, required=True, help="an absorbing-graph diffusion checkpoint")
    parser.add_argument("--ar", type=Path, required=True, help="the AR checkpoint: the baseline and the judge")
    parser.add_argument("--analytic", type=int, nargs="*", default=[16, 64, 256])
    parser.add_argument("--confident", type=int, nargs="*", default=[4, 8, 16, 32, 64])
    parser.add_argument("--blockwise", type=int, nargs="*", default=[8, 16, 32],
                        help="steps of the blockwise sampler (multiples of --blocks)")
    parser.add_argument("--blocks", type=int, default=4, help="the blockwise sampler's blocks per sample")
    parser.add_argument("--distilled", nargs="*", default=[], metavar="CKPT:STEPS",
                        help="distilled students (study/distillation.py), each sampled by analytic at the steps it learnt")
    parser.add_argument("--temperatures", type=float, nargs="*", default=[1.0, 1.25, 1.5])
    parser.add_argument("--num-samples", type=int, default=64, help="samples per setting, drawn in one batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every eval.py run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sampling_speed")
    args = parser.parse_args()
    args.diffusion, args.ar = args.diffusion.resolve(), args.ar.resolve()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in settings(args).items():
            results[label] = measure(overrides, args, Path(tmp) / f"{label}.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(results))
    plot(results, args.out.with_suffix(".png"))
    print(table(results))


if __name__ == "__main__":
    main()
