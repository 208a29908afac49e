"""What only an accelerator shows, in one prepared run: placement, exact resume, bf16 training, memory, speed, FSDP.

    python bench/device_check.py                       # one CUDA GPU, about 10 minutes
    python bench/device_check.py --tiny --out DIR      # the same steps on the CPU at tiny size (tests/test_device_check.py)

Steps, each timed and recorded even when it fails (the run goes on to the next):

1. ``tests/test_devices.py`` with ``BIJDIFF_TEST_DEVICE`` set to the device (placement, no float64);
2. exact resume: ``train.py`` for 2k steps straight, and for k steps then resumed to 2k, compared;
3. short ``bf16-mixed`` trainings of ``standard``, ``bijective`` (memory-efficient) and ``ar``;
4. the trunk's peak training memory from 2 to 48 blocks, standard against memory-efficient
   bijective (``torch.cuda.max_memory_allocated``; bytes saved for backward on the CPU), and the
   deepest of each that fits ``--budget-gib``, from the measured per-block growth;
5. training tokens/s and model FLOP utilisation (bf16 autocast) of the default size and of a
   GPT-2-small-size trunk (768 × 12, sequence 1024), bijective against standard, against the
   GPU's dense bf16 peak (a table of datasheet values) and the bf16 matmul rate measured here (model
   FLOPs: the memory-efficient trunk's recomputation is not counted);
6. one FSDP training step (``fully_shard`` of the whole model, one process).

Writes ``device_check.json`` and ``device_check.md`` (the docs table, with the date and the device's
name) to ``--out``; data are generated (``bijdiff.data.synthetic``) unless ``--data DIR`` holds
``wiki.{train,valid,test}.tokens``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# dense bf16 tensor-core peaks without sparsity, TFLOP/s, from the vendors' datasheets (SXM parts)
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0,
                    "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2, "RTX 6000 Ada": 364.2}
SIZES = {
    "tiny": {"model": dict(d_model=32, n_layers=2, n_heads=2, cond_dim=16), "vocab": 300, "seq": 16, "batch": 4,
             "train_steps": 4, "depths": [2, 4, 8], "gpt2": dict(d_model=64, n_layers=2, n_heads=2, seq=32, batch=2),
             "timed_steps": 2},
    "full": {"model": dict(d_model=256, n_layers=4, n_heads=4, cond_dim=128), "vocab": 8192, "seq": 128, "batch": 32,
             "train_steps": 60, "depths": [2, 4, 8, 16, 32, 48], "gpt2": dict(d_model=768, n_layers=12, n_heads=12, seq=1024, batch=8),
             "timed_steps": 10},
}


def synchronize(device: str) -> None:
    """Wait for the device (CUDA) so that a host clock times its work."""
    if device == "cuda":
        torch.cuda.synchronize()


def record(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    """Run one step of the check; its result, or its error, and its seconds go into ``results[name]``."""
    start = time.perf_counter()
    try:
        results[name] = {"ok": True, "result": fn()}
    except Exception as err:  # a failed step is a finding: record it and go on
        results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=5)}
    results[name]["seconds"] = time.perf_counter() - start
    status = "ok" if results[name]["ok"] else f"FAILED ({results[name]['error'][:200]})"
    print(f"device_check: {name}: {status} in {results[name]['seconds']:.0f} s", flush=True)


def device_tests(device: str) -> dict[str, Any]:
    """``tests/test_devices.py`` with its device test on ``device``."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_devices.py"],
                          cwd=ROOT, capture_output=True, text=True, env=os.environ | {"BIJDIFF_TEST_DEVICE": device}, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:])
    return {"summary": proc.stdout.strip().splitlines()[-1]}


def train_overrides(size: dict, files: dict[str, Path], out: Path, accelerator: str, *extra: str) -> list[str]:
    """``train.py`` overrides for a run of ``size`` on ``files`` into ``out``."""
    m = size["model"]
    return [f"model.{k}={v}" for k, v in m.items()] + [
        f"data.vocab_size={size['vocab']}", f"data.seq_len={size['seq']}", f"data.batch_size={size['batch']}",
        "data.eval_batch_size=32", f"trainer.accelerator={accelerator}", "trainer.devices=1", "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1", "optim.warmup_steps=2", "callbacks.progress.style=plain",
        f"paths.output_dir={out}", f"paths.cache_dir={out.parent / 'cache'}", "logger=csv",
        *(f"data.files.{k}={v}" for k, v in files.items()), *extra]


def run_train(overrides: list[str]) -> dict[str, Any]:
    """``train(cfg)`` of the composed training config, as ``train.py`` runs it."""
    from hydra import compose, initialize_config_dir

    from bijdiff.app.train import train

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return train(cfg)


def exact_resume(size: dict, files: dict[str, Path], work: Path, accelerator: str) -> dict[str, Any]:
    """Weights after 2k steps straight against k steps, a stop, and a resume to 2k (fp32)."""
    k = max(2, size["train_steps"] // 4)
    common = ("model=bijective", "trainer.precision=32-true", f"trainer.val_check_interval={k}", f"trainer.max_steps={2 * k}",
              "callbacks.checkpoint.filename='step{step}'", "callbacks.checkpoint.save_top_k=-1")
    straight = run_train(train_overrides(size, files, work / "straight", accelerator, *common))
    middle = work / "straight" / "checkpoints" / f"step{k}.ckpt"
    resumed = run_train(train_overrides(size, files, work / "resumed", accelerator, *common, f"ckpt_path={middle}"))
    a = torch.load(straight["last_ckpt"], map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(resumed["last_ckpt"], map_location="cpu", weights_only=False)["state_dict"]
    diff = max(float((a[key].double() - b[key].double()).abs().max()) for key in a if a[key].is_floating_point())
    return {"steps": 2 * k, "resumed_from": k, "max_abs_weight_difference": diff, "bit_identical": diff == 0.0,
            "val_nll_straight": straight["best_val_nll"], "val_nll_resumed": resumed["best_val_nll"]}


def bf16_training(size: dict, files: dict[str, Path], work: Path, accelerator: str) -> dict[str, Any]:
    """A short bf16-mixed run of each main model: does it train, and to what validation NLL."""
    out = {}
    for model in ("standard", "bijective", "ar"):
        start = time.perf_counter()
        result = run_train(train_overrides(size, files, work / f"bf16-{model}", accelerator, f"model={model}",
                                           "trainer.precision=bf16-mixed", f"trainer.max_steps={size['train_steps']}",
                                           f"trainer.val_check_interval={size['train_steps']}"))
        out[model] = {"steps": result["global_step"], "val_nll": result["best_val_nll"], "seconds": time.perf_counter() - start}
    return out


def peak_training_memory(variant: str, depth: int, size: dict, device: str) -> int:
    """Peak bytes of one trunk training step beyond its weights and gradients (CUDA allocator; autocast's
    bf16 weight copies included), or the bytes saved for backward (CPU)."""
    from reversible_memory import build_trunk, trunk_loss

    args = argparse.Namespace(d_model=size["model"]["d_model"], n_heads=size["model"]["n_heads"], batch=size["batch"], seq=size["seq"])
    trunk, x, cond = build_trunk(variant, depth, args)
    trunk, x, cond = trunk.to(device), x.to(device), cond.detach().to(device).requires_grad_(True)
    if device != "cuda":
        loss, saved = trunk_loss(trunk, x, cond, count=True)
        loss.backward()
        return saved
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, _ = trunk_loss(trunk, x, cond)
    loss.backward()
    torch.cuda.synchronize()
    gradients = sum(p.numel() * p.element_size() for p in trunk.parameters())  # grow with depth in any trunk
    return torch.cuda.max_memory_allocated() - base - gradients


def memory_curve(size: dict, device: str, budget_gib: float) -> dict[str, Any]:
    """Peak step memory against depth for both trunks; the deepest of each under the budget (linear in depth)."""
    curve = {v: {d: peak_training_memory(v, d, size, device) for d in size["depths"]} for v in ("standard", "bijective-memeff")}
    out: dict[str, Any] = {"depths": size["depths"], "peak_bytes": curve, "budget_bytes": budget_gib * 2**30}
    for variant, points in curve.items():
        depths = sorted(points)
        per_block = (points[depths[-1]] - points[depths[0]]) / (depths[-1] - depths[0])
        fixed = points[depths[0]] - per_block * depths[0]
        out[f"{variant}_growth_2_to_max"] = points[depths[-1]] / points[depths[0]]
        out[f"{variant}_deepest_in_budget"] = None if per_block <= 0 else int((out["budget_bytes"] - fixed) // per_block)
    return out


def bf16_matmul_tflops(device: str, n: int) -> float:
    """The best bf16 (fp32 on CPU) matmul rate measured here, TFLOP/s."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(10):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def throughput(size: dict, device: str) -> dict[str, Any]:
    """Training tokens/s and model FLOP utilisation, bf16 autocast, default size and the GPT-2-small-size trunk."""
    from throughput import VARIANTS, make_step

    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    datasheet = next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None) if device == "cuda" else None
    measured = bf16_matmul_tflops(device, 8192 if device == "cuda" else 512)
    out: dict[str, Any] = {"datasheet_bf16_tflops": datasheet, "measured_matmul_tflops": measured, "rows": []}
    shapes = {"default": dict(size["model"], seq=size["seq"], batch=size["batch"]), "gpt2-small": size["gpt2"]}
    for shape, spec in shapes.items():
        overrides = [f"model.{k}={spec[k]}" for k in ("d_model", "n_layers", "n_heads")]
        args = argparse.Namespace(vocab=size["vocab"], batch=spec["batch"], seq=spec["seq"], set=overrides, compile=None)
        # model FLOPs of the memory-efficient trunk: the plain bijective step's (its recomputation is not model work)
        _, bijective_flops, _ = make_step(VARIANTS["bijective"], args, device)
        for variant in ("standard", "bijective-memeff"):
            step, flops, params = make_step(VARIANTS[variant], args, device, torch.bfloat16 if device == "cuda" else None)
            flops = bijective_flops if variant == "bijective-memeff" else flops
            step()
            times = []
            for _ in range(size["timed_steps"]):
                synchronize(device)
                start = time.perf_counter()
                step()
                synchronize(device)
                times.append(time.perf_counter() - start)
            t = statistics.median(times)
            row = {"shape": shape, "variant": variant, "parameters": params, "batch": spec["batch"], "seq": spec["seq"],
                   "step_s": t, "tokens_per_s": spec["batch"] * spec["seq"] / t, "tflop_per_s": flops / t / 1e12,
                   "mfu_measured_peak": flops / t / 1e12 / measured}
            if datasheet:
                row["mfu_datasheet_peak"] = flops / t / 1e12 / datasheet
            out["rows"].append(row)
    by = {(r["shape"], r["variant"]): r for r in out["rows"]}
    out["bijective_over_standard_step_time"] = {s: by[(s, "bijective-memeff")]["step_s"] / by[(s, "standard")]["step_s"] for s in shapes}
    return out


def fsdp_step(size: dict, device: str) -> dict[str, Any]:
    """One FSDP2 (``fully_shard``) training step of the memory-efficient bijective denoiser, one process."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    from bijdiff import build_model
    from bijdiff.lit.module import build_optimizer
    from bijdiff.objectives import build_objective

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        m = dict(size["model"], name="bijective", mlp_ratio=4.0, dropout=0.1, coupling="additive", affine_clamp=2.0,
                 memory_efficient=True, mixing="none", actnorm=False)
        cfg = {"model": m, "diffusion": {"graph": "absorb", "noise": {"name": "loglinear", "eps": 1e-3}, "t_min": 1e-3},
               "data": {"vocab_size": size["vocab"]}}
        torch.manual_seed(0)
        model = build_model(cfg).to(device).train()
        fully_shard(model)
        for method in ("logits", "logits_at"):  # the objective calls these, not forward: FSDP must gather around them too
            register_fsdp_forward_method(model, method)
        objective = build_objective(cfg, model)
        optimizer = build_optimizer(model, {"lr": 1e-3, "weight_decay": 0.0, "betas": (0.9, 0.98), "eps": 1e-8})
        x0 = torch.randint(0, size["vocab"] - 1, (size["batch"], size["seq"]), device=device)
        losses = []
        for _ in range(2):
            optimizer.zero_grad()
            loss = objective.train_nats(model, x0, torch.ones_like(x0, dtype=torch.bool)).mean()
            loss.backward()
            optimizer.found_inf = (~torch.isfinite(loss.detach())).float()  # as training sets it
            optimizer.step()
            losses.append(float(loss))
        return {"losses": losses, "finite": all(map(torch.isfinite, map(torch.tensor, losses)))}
    finally:
        dist.destroy_process_group()


def markdown(report: dict[str, Any]) -> str:
    """The docs table of one run."""
    lines = [f"Device check of {report['date']} on **{report['device_name']}** (torch {report['torch']}, "
             f"{'tiny sizes' if report['tiny'] else 'full sizes'}; `python bench/device_check.py"
             f"{' --tiny' if report['tiny'] else ''}`).", "", "| step | result |", "| --- | --- |"]
    for name, entry in report["steps"].items():
        if not entry["ok"]:
            lines.append(f"| {name} | **failed**: {entry['error'][:160]} |")
            continue
        r = entry["result"]
        if name == "throughput":
            cells = "; ".join(f"{row['shape']} {row['variant']}: {row['tokens_per_s']:,.0f} tok/s, MFU "
                              f"{row.get('mfu_datasheet_peak', row['mfu_measured_peak']):.0%}" for row in r["rows"])
            text = cells + "; bijective/standard step time " + ", ".join(f"{k} ×{v:.2f}" for k, v in r["bijective_over_standard_step_time"].items())
        elif name == "memory":
            text = (f"peak growth from {r['depths'][0]} to {r['depths'][-1]} blocks: standard ×{r['standard_growth_2_to_max']:.2f}, "
                    f"bijective memory-efficient ×{r['bijective-memeff_growth_2_to_max']:.2f}; deepest in "
                    f"{r['budget_bytes'] / 2**30:g} GiB: {r['standard_deepest_in_budget']} vs {r['bijective-memeff_deepest_in_budget']}")
        elif name == "resume":
            text = (f"{r['steps']} steps, resumed from {r['resumed_from']}: max weight difference {r['max_abs_weight_difference']:.3g}"
                    f"{' (bit-identical)' if r['bit_identical'] else ''}")
        elif name == "bf16_training":
            text = "; ".join(f"{k}: val {v['val_nll']:.3f} after {v['steps']} steps" for k, v in r.items())
        else:
            text = json.dumps(r)[:200]
        lines.append(f"| {name} | {text} (in {entry['seconds']:.0f} s) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU: the same steps, in seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--data", type=Path, default=None, help="a directory with wiki.{train,valid,test}.tokens (default: generated)")
    parser.add_argument("--budget-gib", type=float, default=None, help="memory budget for the deepest trunk (default 16, tiny: 0.001)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these steps")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device_check: no CUDA GPU here; run with --tiny for the CPU version of the same steps")
    size = SIZES["tiny" if args.tiny else "full"]
    accelerator = "cpu" if args.tiny else "gpu"
    budget = args.budget_gib or (0.001 if args.tiny else 16.0)
    work = Path(tempfile.mkdtemp(prefix="device_check-"))
    if args.data:
        files = {"train": args.data / "wiki.train.tokens", "validation": args.data / "wiki.valid.tokens", "test": args.data / "wiki.test.tokens"}
    else:
        from bijdiff.data.synthetic import write_synthetic_splits

        files = write_synthetic_splits(work / "data", (400, 60, 70) if args.tiny else (20000, 1000, 1000))
    steps: dict[str, Callable[[], Any]] = {
        "device_tests": lambda: device_tests(device),
        "resume": lambda: exact_resume(size, files, work / "resume", accelerator),
        "bf16_training": lambda: bf16_training(size, files, work, accelerator),
        "memory": lambda: memory_curve(size, device, budget),
        "throughput": lambda: throughput(size, device),
        "fsdp": lambda: fsdp_step(size, device),
    }
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "tiny": args.tiny,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__, "steps": {},
    }
    for name, fn in steps.items():
        if args.only is None or name in args.only:
            record(report["steps"], name, fn)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-tiny" if args.tiny else ""
    (args.out / f"device_check{suffix}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / f"device_check{suffix}.md").write_text(markdown(report))
    print(markdown(report))
    if not all(entry["ok"] for entry in report["steps"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
