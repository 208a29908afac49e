"""Does ``torch.compile`` speed up the coupling functions (F: attention, G: MLP), and do they stay exact?

    python bench/compile_branches.py [--batch 64 --seq 64 --threads 2 --repeats 7] [--out bench/results/compile_branches.json]

For each branch of a default-size block (d_model 256, 4 heads, MLP ratio 4, dropout 0.1) it
times one forward + backward in training mode, eager and compiled, alternating the two
(A B A B …) so that a load change hits both, and reports the medians. It also reports the
largest difference between the eager and compiled outputs (dropout off), which bounds how far
a compiled recomputation would move the reversible inverse.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from bijdiff.nn.layers import attention_branch, mlp_branch


def time_step(fn, x: torch.Tensor, cond: torch.Tensor) -> float:
    """Seconds for one forward + backward of ``fn(x, cond)``."""
    start = time.perf_counter()
    fn(x, cond).square().mean().backward()
    return time.perf_counter() - start


def measure(name: str, branch: torch.nn.Module, args: argparse.Namespace) -> dict:
    x = torch.randn(args.batch, args.seq, 256, requires_grad=True)
    cond = torch.randn(args.batch, 128)
    compiled = torch.compile(branch)
    start = time.perf_counter()
    time_step(compiled, x, cond)
    compile_seconds = time.perf_counter() - start
    for fn in (branch, compiled, branch, compiled):  # warm-up
        time_step(fn, x, cond)
    eager, fast = [], []
    for _ in range(args.repeats):
        eager.append(time_step(branch, x, cond))
        fast.append(time_step(compiled, x, cond))
    branch.eval()
    with torch.no_grad():
        diff = float((branch(x, cond) - compiled(x, cond)).abs().max())
        scale = float(branch(x, cond).abs().max())
    row = {"branch": name, "eager_ms": 1e3 * statistics.median(eager), "compiled_ms": 1e3 * statistics.median(fast),
           "compile_seconds": compile_seconds, "max_abs_diff_eval": diff, "max_abs_output": scale}
    row["speedup"] = row["eager_ms"] / row["compiled_ms"]
    print(f"{name:>4}: eager {row['eager_ms']:.0f} ms, compiled {row['compiled_ms']:.0f} ms "
          f"(×{row['speedup']:.2f}; compile {compile_seconds:.0f} s), |eager − compiled| ≤ {diff:.1e} "
          f"of outputs up to {scale:.1e}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "compile_branches.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    branches = {"F": attention_branch(256, 128, 4, 0.1), "G": mlp_branch(256, 128, 4.0, 0.1)}
    for branch in branches.values():  # a trained block's gate is not zero: give the zero-initialised adaLN weights
        torch.nn.init.normal_(branch.adaln.proj.weight, std=0.05)
    rows = [measure(name, branch.train(), args) for name, branch in branches.items()]
    result = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}",
              "settings": vars(args) | {"out": str(args.out)}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
