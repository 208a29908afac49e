"""Data parallel on CPU (gloo): the memory-efficient trunk's gradients, and ``trainer=ddp`` end to end."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bijdiff import build_model

from .conftest import ROOT, TINY, compose_config

WORLD = 2
BATCH, LENGTH, VOCAB = 4, 12, 50


def _tiny_bijective():
    cfg = compose_config(
        "train",
        ["model=bijective", "model.memory_efficient=true", "model.coupling=affine", "model.dropout=0.0",
         "model.d_model=32", "model.n_layers=3", "model.n_heads=2", "model.cond_dim=16", f"data.vocab_size={VOCAB}"],
    )
    torch.manual_seed(0)
    return build_model(cfg).double()


def _inputs():
    g = torch.Generator().manual_seed(1)
    x_t = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=g)
    sigma = torch.rand(BATCH, generator=g, dtype=torch.float64) + 0.1
    weights = torch.randn(BATCH, LENGTH, VOCAB, generator=g, dtype=torch.float64)
    return x_t, sigma, weights


def _loss(model, x_t, sigma, weights):
    out = model(x_t, sigma)
    return (torch.nan_to_num(out, neginf=0.0) * weights).sum() / BATCH


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_tiny_bijective())
        x_t, sigma, weights = _inputs()
        part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        for _ in range(2):  # a second iteration catches reducer state left over from the first
            model.zero_grad(set_to_none=True)
            (_loss(model, x_t[part], sigma[part], weights[part]) * WORLD).backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in model.module.named_parameters()}, Path(out_dir) / "ddp_grads.pt")
        # no rank tears gloo down while the other may still use the connection (a teardown race
        # otherwise aborts one process now and then: "terminate called without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_memory_efficient_trunk_gradients_match_under_ddp(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ddp = torch.load(tmp_path / "ddp_grads.pt")

    model = _tiny_bijective()
    assert model.backbone.memory_efficient
    _loss(model, *_inputs()).backward()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and set(names) == set(ddp)
    for n, p in model.named_parameters():
        assert ddp[n] is not None, f"{n}: no gradient under DDP"
        assert torch.allclose(ddp[n], p.grad, rtol=1e-9, atol=1e-12), f"{n}: DDP gradient differs"


def test_trainer_ddp_trains_on_two_cpu_processes_and_skips_a_nan_on_one_rank(wiki_files, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = TINY + [f"data.files.{k}={v}" for k, v in wiki_files.items()] + [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "model=bijective", "trainer.max_steps=3",
        f"paths.output_dir={out}", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}",
    ]
    # tests/nan_on_rank1.py is train.py with rank 1's second loss made NaN: both ranks must skip it
    script = str(ROOT / "tests" / "nan_on_rank1.py")
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "bijdiff: done at step 3" in output
    assert "step 1: non-finite training loss or gradients, step skipped" in output
    assert (out / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
