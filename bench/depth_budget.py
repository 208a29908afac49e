"""The deepest trunk whose training memory fits a fixed budget: standard vs memory-efficient bijective.

    python bench/depth_budget.py [--budget-mib 1024] [--batch 32] [--seq 128] [--d-model 256]

Training memory of a trunk here = the bytes autograd saves for backward (counted with
``saved_tensors_hooks`` over a real forward) + 16 bytes per parameter (fp32 weight, gradient and
AdamW's two moments). Saved bytes are measured at depths 2 and 4 to get each variant's
per-block cost, the deepest depth under the budget is predicted from that, and the prediction
is checked by measuring that depth and the next one: the reported depth fits, the next does not
(or the search stopped at ``--max-depth``).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from reversible_memory import build_trunk, trunk_loss

VARIANTS = ("standard", "bijective-memeff")


def training_bytes(variant: str, depth: int, args: argparse.Namespace) -> tuple[int, int]:
    """(saved-for-backward bytes, parameter-state bytes) of one forward at ``depth``."""
    trunk, x, cond = build_trunk(variant, depth, args)
    _, saved = trunk_loss(trunk, x, cond, count=True)
    return saved, 16 * sum(p.numel() for p in trunk.parameters())


def deepest(variant: str, args: argparse.Namespace) -> dict:
    budget = args.budget_mib * 2**20
    (s2, p2), (s4, p4) = training_bytes(variant, 2, args), training_bytes(variant, 4, args)
    per_block = ((s4 + p4) - (s2 + p2)) / 2
    fixed = (s2 + p2) - 2 * per_block
    depth = max(1, min(args.max_depth, int((budget - fixed) // per_block)))
    while True:  # check the prediction: step down until it fits, then confirm the next one does not
        total = sum(training_bytes(variant, depth, args))
        if total <= budget or depth == 1:
            break
        depth -= 1
    nxt = sum(training_bytes(variant, depth + 1, args)) if depth < args.max_depth else None
    while nxt is not None and nxt <= budget and depth + 1 < args.max_depth:
        depth, total = depth + 1, nxt
        nxt = sum(training_bytes(variant, depth + 1, args))
    return {"variant": variant, "deepest_depth": depth, "bytes_at_deepest": total, "bytes_at_next": nxt,
            "per_block_bytes": per_block, "fixed_bytes": fixed, "fits": total <= budget}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-mib", type=float, default=1024)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--max-depth", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "depth_budget.json")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    rows = [deepest(v, args) for v in VARIANTS]
    payload = {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": platform.platform(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"budget {args.budget_mib:.0f} MiB (saved activations + 16 B/parameter); trunk d_model {args.d_model}, "
          f"batch {args.batch} × {args.seq} tokens")
    print("| variant | deepest trunk that fits | MiB at that depth | MiB one block deeper | MiB per block |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        nxt = f"{r['bytes_at_next'] / 2**20:,.0f}" if r["bytes_at_next"] is not None else "– (max depth)"
        print(f"| {r['variant']} | {r['deepest_depth']} | {r['bytes_at_deepest'] / 2**20:,.0f} | {nxt} | "
              f"{r['per_block_bytes'] / 2**20:.1f} |")


if __name__ == "__main__":
    main()
