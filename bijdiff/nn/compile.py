"""``torch.compile`` for the denoisers: every residual branch compiled in place, reversible ones included."""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .layers import ConditionedSublayer
from .reversible import ReversibleBlock

# only inductor's default: the CUDA-graph modes have not run with the reversible backward
COMPILE_MODES = ("default",)


def compile_sublayers(model: nn.Module, mode: str = "default") -> int:
    """Compile each ``ConditionedSublayer`` (the attention and MLP branches) in place; the number compiled.

    The branches are the whole trunk's compute: a standard block is ``x + F(x) + G(·)``, a
    reversible block couples with ``F`` and ``G``. Compiling them, not the trunk, leaves the
    reversible trunk's custom backward in Python: it calls the compiled ``F`` and ``G`` to rebuild
    and differentiate each block, and replays their dropout from the same RNG state as the
    forward (tested). With dropout, inductor then draws through eager's RNG calls
    (``fallback_random``, for the whole process). ``nn.Module.compile`` keeps parameter names, so
    checkpoints do not change.
    """
    if mode not in COMPILE_MODES:
        raise ConfigError(f"unknown compile mode {mode!r}; choose one of {list(COMPILE_MODES)}")
    if any(isinstance(m, ReversibleBlock) and m.stochastic for m in model.modules()):
        # dropout drawn by eager's RNG calls, so the backward's replay gives the forward's masks even where
        # one of the two passes runs a different graph (grad mode) or falls back to eager (cache limits)
        import torch._inductor.config  # here, so that train.py without compile never loads inductor

        torch._inductor.config.fallback_random = True
    branches = [m for m in model.modules() if isinstance(m, ConditionedSublayer)]
    for branch in branches:
        branch.compile(mode=mode)
    return len(branches)
