"""Training throughput of the default model against the machine's measured fp32 matmul peak.

    python bench/throughput.py [--batch 32] [--seq 128] [--steps 10] [--variants ...] [--set model.dropout=0.0 ...]
                               [--compile default] [--out bench/results/throughput.json]

For ``model=standard``, ``model=bijective`` without and with memory efficiency (``--variants``
adds ``bijective_affine``, ``standard-uniform`` and ``ar``; the default config otherwise:
d_model 256, 4 layers, vocabulary 8192, absorbing graph): the median time of a
full training step (SEDD loss, backward, gradient clipping, the fused AdamW of training) on random tokens, tokens/s,
the FLOPs of one step as counted with ``torch.utils.flop_counter``'s formulas (matmuls and attention; the
memory-efficient variant's recomputation included), and achieved GFLOP/s as a fraction of the
best fp32 matmul rate measured in the same run. Steps of the variants are interleaved so that
load from elsewhere on the machine affects them alike.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "standard": ["model=standard"],
    "bijective": ["model=bijective", "model.memory_efficient=false"],
    "bijective-memeff": ["model=bijective", "model.memory_efficient=true"],
    "bijective_affine": ["model=bijective_affine"],
    "standard-uniform": ["model=standard", "diffusion=uniform"],
    "ar": ["model=ar"],
}
DEFAULT_VARIANTS = ("standard", "bijective", "bijective-memeff")


def matmul_peak(n: int, repeats: int) -> float:
    """Best fp32 GFLOP/s of an ``n × n`` matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


aten = torch.ops.aten
# PyTorch has no formula for the CPU flash-attention kernels; their shapes match the CUDA ones
FORMULAS = dict(flop_registry) | {
    aten._scaled_dot_product_flash_attention_for_cpu: flop_registry[aten._scaled_dot_product_flash_attention],
    aten._scaled_dot_product_flash_attention_for_cpu_backward:
        flop_registry[aten._scaled_dot_product_flash_attention_backward],
}


class CountFlops(TorchDispatchMode):
    """Sums the FLOPs of every op PyTorch has a formula for (matmuls, attention, convolutions).

    A dispatch mode rather than ``FlopCounterMode``, whose per-module tracking cannot follow
    modules that run inside a custom autograd function's backward (the memory-efficient stack).
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = FORMULAS.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def make_step(overrides: list[str], args: argparse.Namespace, device: str = "cpu", autocast: torch.dtype | None = None):
    """A full training step of the configured model on ``device`` (under autocast to ``autocast``, if given)
    and the FLOPs it performs."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from bijdiff import build_model
    from bijdiff.lit.module import build_optimizer
    from bijdiff.nn.compile import compile_sublayers
    from bijdiff.objectives import build_objective

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides + [f"data.vocab_size={args.vocab}"] + args.set)
    plain = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "diffusion") if k in cfg}  # AR: no diffusion
    plain["data"] = {"vocab_size": args.vocab}
    torch.manual_seed(0)
    model = build_model(plain).train().to(device)
    objective = build_objective(plain, model)
    optimizer = build_optimizer(model, OmegaConf.to_container(cfg.optim, resolve=True))
    x0 = torch.randint(0, args.vocab - 1, (args.batch, args.seq), device=device)
    mask = torch.ones_like(x0, dtype=torch.bool)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            loss = objective.train_nats(model, x0, mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    with CountFlops() as counter:  # eager: the same FLOPs a compiled step performs
        step()
    if args.compile:
        compile_sublayers(model, args.compile)
        step()  # compiles forward and backward before any step is timed
    params = sum(p.numel() for p in model.parameters())
    return step, counter.total, params


def profile(args: argparse.Namespace) -> None:
    """The operators that take the time of one training step, by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step, flops, _ = make_step(VARIANTS[args.profile], args)
    for _ in range(args.warmup):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"{flops / 1e9:.1f} GFLOP in the step (matmuls and attention)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--matmul-n", type=int, default=2048)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(DEFAULT_VARIANTS),
                        help="which models to time (default: the standard trunk and the bijective one without and with memory efficiency)")
    parser.add_argument("--profile", choices=list(VARIANTS), help="print where one step of this variant spends its time, then exit")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every variant, e.g. model.dropout=0.0")
    parser.add_argument("--compile", choices=["default"], default=None,
                        help="torch.compile every variant's attention and MLP branches (as train.py compile=MODE)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "throughput.json")
    args = parser.parse_args()

    if args.profile:
        profile(args)
        return
    peak = matmul_peak(args.matmul_n, 10)
    steps = {name: make_step(VARIANTS[name], args) for name in args.variants}
    times: dict[str, list[float]] = {name: [] for name in args.variants}
    for i in range(args.warmup + args.steps):
        for name, (step, _, _) in steps.items():
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    peak = max(peak, matmul_peak(args.matmul_n, 10))  # again after the steps: the best of both

    tokens = args.batch * args.seq
    rows = []
    for name, (_, flops, params) in steps.items():
        t = statistics.median(times[name])
        rows.append({
            "variant": name, "parameters": params, "step_s": t, "tokens_per_s": tokens / t,
            "gflop_per_step": flops / 1e9, "gflop_per_s": flops / t / 1e9, "fraction_of_peak": flops / t / 1e9 / peak,
        })
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "matmul_peak_gflop_per_s": peak, "batch": args.batch, "seq_len": args.seq, "vocab": args.vocab,
        "steps": args.steps, "overrides": args.set, "compile": args.compile, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"fp32 matmul peak ({args.matmul_n}², best of 20): {peak:.1f} GFLOP/s; batch {args.batch} × {args.seq} tokens; "
          f"overrides: {' '.join(args.set) or 'none'}; compile: {args.compile or 'no'}")
    print("| variant | params | step (s) | tokens/s | GFLOP/step | GFLOP/s | of peak |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['variant']} | {r['parameters'] / 1e6:.2f}M | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
              f"{r['gflop_per_step']:.1f} | {r['gflop_per_s']:.1f} | {r['fraction_of_peak']:.0%} |")


if __name__ == "__main__":
    main()
