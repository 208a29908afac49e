"""RNG and autocast capture, so a recomputation replays exactly what the forward pass did."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import torch


@dataclass
class RngState:
    """The CPU generator state and, for CUDA/MPS inputs, the device generator state."""

    device: torch.device
    cpu: torch.Tensor
    accel: torch.Tensor | None


def capture_rng(device: torch.device) -> RngState:
    """Snapshot the generators that dropout on ``device`` draws from."""
    accel = None
    if device.type == "cuda":
        accel = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        accel = torch.mps.get_rng_state()
    return RngState(device, torch.get_rng_state(), accel)


@contextmanager
def replay_rng(state: RngState | None) -> Iterator[None]:
    """Run a block with the generators set to ``state``; the global generators are left as they were."""
    if state is None:
        yield
        return
    kind = state.device.type
    devices = [state.device] if kind == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=kind if kind in ("cuda", "mps") else "cuda"):
        torch.set_rng_state(state.cpu)
        if kind == "cuda":
            torch.cuda.set_rng_state(state.accel, state.device)
        elif kind == "mps":
            torch.mps.set_rng_state(state.accel)
        yield


def capture_autocast(device: torch.device) -> dict[str, Any]:
    """The autocast settings in force for ``device`` (to re-enter them during recomputation)."""
    kind = device.type if device.type in ("cuda", "cpu", "mps", "xpu") else "cpu"
    return {"device_type": kind, "enabled": torch.is_autocast_enabled(kind), "dtype": torch.get_autocast_dtype(kind)}


def autocast_from(settings: dict[str, Any] | None):
    """Re-enter captured autocast settings (a no-op context when there are none)."""
    return torch.autocast(**settings) if settings else nullcontext()
