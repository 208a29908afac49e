"""Trunks: the stack of blocks between embedding and head, called ``trunk(h, cond)``."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..nn import ActNorm, Bijection, LULinear, NotInvertibleError, ReversibleBlock, ReversibleStack
from ..nn.layers import KVCache, attention_branch, mlp_branch

MIXINGS = ("none", "lu")


def not_invertible(pattern: str) -> NotInvertibleError:
    """The error for an inverse asked of a trunk whose pattern holds standard (S) blocks."""
    standard = ", ".join(str(i) for i, kind in enumerate(pattern) if kind == "S")
    return NotInvertibleError(
        f"the trunk {pattern} is not invertible: layer(s) {standard} are standard (S) blocks; "
        "use model=bijective for an invertible trunk"
    )


class TransformerBlock(nn.Module):
    """A standard pre-LN transformer block with adaLN time conditioning."""

    def __init__(
        self, dim: int, cond_dim: int, n_heads: int, mlp_ratio: float, dropout: float, causal: bool = False, mlp: str = "gelu"
    ) -> None:
        super().__init__()
        self.attn = attention_branch(dim, cond_dim, n_heads, dropout, causal=causal)
        self.mlp = mlp_branch(dim, cond_dim, mlp_ratio, dropout, kind=mlp)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(h, cond)
        return h + self.mlp(h, cond)


class StandardTrunk(nn.Module):
    """``n_layers`` standard transformer blocks (not invertible); ``causal`` for the AR baseline."""

    def __init__(
        self, dim: int, cond_dim: int, n_layers: int, n_heads: int, mlp_ratio: float, dropout: float, causal: bool = False,
        mlp: str = "gelu",
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"model.n_layers must be ≥ 1, got {n_layers}")
        self.dim = dim
        self.cond_dim = cond_dim
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, cond_dim, n_heads, mlp_ratio, dropout, causal, mlp) for _ in range(n_layers)
        )

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, cond)
        return h

    @contextmanager
    def kv_cache(self) -> Iterator[None]:
        """Within the block, a causal trunk takes one new position per call and caches keys/values."""
        layers = [block.attn.inner for block in self.blocks]
        if not all(layer.causal for layer in layers):
            raise ValueError("a KV cache needs a causal trunk (the autoregressive model)")
        for layer in layers:
            layer.cache = KVCache()
        try:
            yield
        finally:
            for layer in layers:
                layer.cache = None

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise not_invertible("S" * len(self.blocks))


def bijective_stack(m: Mapping[str, Any], n_blocks: int) -> ReversibleStack:
    """``n_blocks`` reversible blocks on the two-stream state of width ``2 · d_model``.

    Before each block, optionally ActNorm (``model.actnorm``) and LU channel mixing
    (``model.mixing: lu``); all of it exactly invertible with exact log-dets.
    """
    if n_blocks < 1:
        raise ConfigError(f"a reversible trunk needs at least one block, got {n_blocks}")
    if m["mixing"] not in MIXINGS:
        raise ConfigError(f"unknown model.mixing={m['mixing']!r}; choose one of {list(MIXINGS)}")
    width = m["d_model"]
    layers: list[Bijection] = []
    for _ in range(n_blocks):
        if m["actnorm"]:
            layers.append(ActNorm(2 * width))
        if m["mixing"] == "lu":
            layers.append(LULinear(2 * width))
        layers.append(
            ReversibleBlock(width, m["cond_dim"], m["n_heads"], m["mlp_ratio"], m["dropout"], m["coupling"], m["affine_clamp"],
                            m.get("mlp", "gelu"))
        )
    stack = ReversibleStack(layers, memory_efficient=m["memory_efficient"])
    stack.cond_dim = m["cond_dim"]
    return stack


MERGES = ("mean", "residual")


def merge_streams(y: torch.Tensor, h: torch.Tensor, mode: str = "residual") -> torch.Tensor:
    """The two-stream state back to one stream for the head.

    ``mean``: ``(y1 + y2) / 2``. ``residual``: ``y1 + y2 − h`` with ``h`` the stream that was
    duplicated in; for additive blocks this is ``h + Σ F + Σ G``, the same sum of input and
    branch outputs a standard transformer's residual stream carries.
    """
    y1, y2 = y.chunk(2, dim=-1)
    if mode == "mean":
        return (y1 + y2) / 2
    if mode == "residual":
        return y1 + y2 - h
    raise ConfigError(f"unknown model.merge={mode!r}; choose one of {list(MERGES)}")


def split_streams(h: torch.Tensor) -> torch.Tensor:
    """Duplicate one stream into the two-stream state ``(h, h)`` (RevViT/Reformer style)."""
    return torch.cat([h, h], dim=-1)


class HybridTrunk(nn.Module):
    """A layer pattern such as ``RRSS``: runs of reversible blocks (R) and standard blocks (S).

    Each run of R blocks is a reversible stack on the duplicated two-stream state, merged back
    to one stream after the run; S blocks are standard transformer blocks. Not invertible.
    """

    def __init__(self, m: Mapping[str, Any]) -> None:
        super().__init__()
        pattern = str(m["layers"]).upper()
        if not pattern or set(pattern) - {"R", "S"}:
            raise ConfigError(f"model.layers={m['layers']!r} must be a non-empty pattern of R and S, e.g. RRSS")
        self.pattern = pattern
        self.merge = m["merge"]
        self.dim, self.cond_dim = m["d_model"], m["cond_dim"]
        self.segments = nn.ModuleList()
        i = 0
        while i < len(pattern):
            j = i
            while j < len(pattern) and pattern[j] == pattern[i]:
                j += 1
            if pattern[i] == "R":
                self.segments.append(bijective_stack(m, j - i))
            else:
                self.segments.extend(
                    TransformerBlock(m["d_model"], m["cond_dim"], m["n_heads"], m["mlp_ratio"], m["dropout"], mlp=m.get("mlp", "gelu"))
                    for _ in range(j - i)
                )
            i = j

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for segment in self.segments:
            if isinstance(segment, ReversibleStack):
                h = merge_streams(segment(split_streams(h), cond)[0], h, self.merge)
            else:
                h = segment(h, cond)
        return h

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if "S" in self.pattern:
            raise not_invertible(self.pattern)
        raise NotInvertibleError("an all-R hybrid is invertible in principle but not wired for it: use model=bijective")
