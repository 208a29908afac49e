"""Memory and speed of the trunk vs depth: standard, bijective, bijective memory-efficient.

    python bench/reversible_memory.py [--depths 2 4 8 16 32] [--out bench/results/reversible_memory.json]

Per train step of the trunk alone (embedding-sized input, loss on the output, backward
included): bytes saved for backward (``saved_tensors_hooks``) and peak RSS, each (variant, depth)
alone in a fresh process; and the median step time over ``--repeats`` steps after ``--warmup``
steps, the three variants' steps interleaved in one process per depth so that load from
elsewhere on the machine affects them alike.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("standard", "bijective", "bijective-memeff")


def build_trunk(variant: str, depth: int, args: argparse.Namespace):
    """The variant's trunk at ``depth`` blocks with an embedding-sized input and a conditioning vector."""
    import torch

    from bijdiff import build_model

    torch.manual_seed(0)
    name = "standard" if variant == "standard" else "bijective"
    model_cfg = {"name": name, "d_model": args.d_model, "n_layers": depth, "n_heads": args.n_heads, "mlp_ratio": 4.0,
                 "dropout": 0.0, "cond_dim": 128, "coupling": "additive", "affine_clamp": 2.0,
                 "memory_efficient": variant.endswith("memeff"), "mixing": "none", "actnorm": False}
    model = build_model({"model": model_cfg, "diffusion": {"graph": "absorb"}, "data": {"vocab_size": 1024}})
    trunk, width = model.backbone, args.d_model * (1 if name == "standard" else 2)
    return trunk, torch.randn(args.batch, args.seq, width), torch.randn(args.batch, 128, requires_grad=True)


def trunk_loss(trunk, x, cond, count: bool = False):
    """The trunk's forward and a loss on its output; with ``count``, also the bytes saved for backward."""
    from bijdiff.nn.memory import counting_saved_bytes

    with counting_saved_bytes() if count else contextlib.nullcontext([0]) as saved:
        out = trunk(x.requires_grad_(True), cond)
        out = out[0] if isinstance(out, tuple) else out
        loss = out.square().mean()
    return loss, saved[0]


def make_step(variant: str, depth: int, args: argparse.Namespace):
    """A train step of the trunk (forward, loss, backward) returning the bytes saved for backward."""
    trunk, x, cond = build_trunk(variant, depth, args)

    def step(count: bool = False) -> int:
        loss, saved = trunk_loss(trunk, x, cond, count)
        loss.backward()
        return saved

    return step


def memory_worker(variant: str, depth: int, args: argparse.Namespace) -> dict:
    """Saved-for-backward bytes and peak RSS of one variant, alone in its process."""
    saved = make_step(variant, depth, args)(count=True)
    return {"saved_bytes": saved, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def time_worker(depth: int, args: argparse.Namespace) -> dict:
    """Median step time of every variant, steps interleaved in one process so machine noise hits all alike."""
    steps = {v: make_step(v, depth, args) for v in VARIANTS}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
        for v in order:
            start = time.perf_counter()
            steps[v]()
            times[v].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/reversible_memory.json"))
    parser.add_argument("--memory-worker", nargs=2, metavar=("VARIANT", "DEPTH"), help=argparse.SUPPRESS)
    parser.add_argument("--time-worker", type=int, metavar="DEPTH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker[0], int(args.memory_worker[1]), args)))
        return
    if args.time_worker:
        print(json.dumps(time_worker(args.time_worker, args)))
        return

    def run(*worker_args: str) -> dict:
        cmd = [sys.executable, __file__, *worker_args, "--d-model", str(args.d_model), "--n-heads", str(args.n_heads),
               "--batch", str(args.batch), "--seq", str(args.seq), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
        return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])

    rows = []
    for depth in args.depths:
        step_s = run("--time-worker", str(depth))
        for variant in VARIANTS:
            rows.append({"variant": variant, "depth": depth, **run("--memory-worker", variant, str(depth)), "step_s": step_s[variant]})
            print(f"{variant:>18} depth {depth:>2}: saved {rows[-1]['saved_bytes'] / 2**20:8.1f} MiB, "
                  f"peak RSS {rows[-1]['peak_rss_mb']:7.0f} MB, step {rows[-1]['step_s'] * 1000:7.1f} ms", flush=True)

    by = {(r["variant"], r["depth"]): r for r in rows}
    lo, hi = min(args.depths), max(args.depths)
    mid = 8 if 8 in args.depths else args.depths[len(args.depths) // 2]
    summary = {
        "memeff_saved_ratio_deepest_vs_shallowest": by["bijective-memeff", hi]["saved_bytes"] / by["bijective-memeff", lo]["saved_bytes"],
        f"memeff_step_vs_standard_depth{mid}": by["bijective-memeff", mid]["step_s"] / by["standard", mid]["step_s"],
        f"plain_bijective_step_vs_standard_depth{mid}": by["bijective", mid]["step_s"] / by["standard", mid]["step_s"],
    }
    machine = f"{platform.processor() or platform.machine()}, {platform.system()}, torch threads default"
    payload = {"settings": vars(args) | {"out": str(args.out)}, "machine": machine, "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")

    print("\n| depth | " + " | ".join(f"{v} saved MiB / RSS MB / step ms" for v in VARIANTS) + " |")
    print("| --- |" + " --- |" * len(VARIANTS))
    for depth in args.depths:
        cells = [f"{by[v, depth]['saved_bytes'] / 2**20:.1f} / {by[v, depth]['peak_rss_mb']:.0f} / {by[v, depth]['step_s'] * 1000:.0f}" for v in VARIANTS]
        print(f"| {depth} | " + " | ".join(cells) + " |")
    for k, v in summary.items():
        print(f"{k}: {v:.3f}")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for v in VARIANTS:
        axes[0].plot(args.depths, [by[v, d]["saved_bytes"] / 2**20 for d in args.depths], marker="o", label=v)
        axes[1].plot(args.depths, [by[v, d]["step_s"] * 1000 for d in args.depths], marker="o", label=v)
    axes[0].set(xscale="log", yscale="log", xlabel="depth (blocks)", ylabel="saved for backward (MiB)")
    axes[1].set(xscale="log", yscale="log", xlabel="depth (blocks)", ylabel="train step (ms)")
    for ax in axes:
        ax.set_xticks(args.depths, [str(d) for d in args.depths], minor=False)
        ax.set_xticks([], minor=True)
        ax.legend()
    fig.suptitle(f"trunk d_model {args.d_model}, batch {args.batch} x {args.seq} tokens")
    fig.tight_layout()
    png = args.out.with_suffix(".png")
    fig.savefig(png, dpi=110)
    print(f"plot written to {png}")


if __name__ == "__main__":
    main()
