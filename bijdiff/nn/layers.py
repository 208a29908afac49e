"""Transformer pieces shared by every denoiser: rotary attention, MLP, adaLN, time embedding."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def rotary_tables(
    length: int, head_dim: int, device: torch.device, dtype: torch.dtype = torch.float32, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables ``[L, head_dim/2]`` for rotary position embeddings (≥ fp32)."""
    dtype = torch.promote_types(dtype, torch.float32)
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=dtype) / head_dim)
    angles = torch.arange(length, device=device, dtype=dtype)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x[..., :h/2], x[..., h/2:])`` of ``x: [B, H, L, h]`` by position."""
    x1, x2 = x.to(cos.dtype).chunk(2, dim=-1)
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return rotated.to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x · (1 + scale) + shift`` with per-sequence ``shift, scale: [B, dim]``."""
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


class AdaLN(nn.Module):
    """Pre-LayerNorm whose shift, scale and output gate come from the conditioning vector.

    The projection is zero-initialised, so at initialisation the gate is 0 and the sub-layer it
    wraps contributes nothing: a fresh residual block is the identity.
    """

    def __init__(self, dim: int, cond_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.proj = nn.Linear(cond_dim, 2 * dim + (out_dim or dim))
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the modulated normalised input and the gate ``[B, 1, out_dim]`` for the output."""
        mod = self.proj(F.silu(cond))
        shift, scale, gate = mod[:, : self.dim], mod[:, self.dim : 2 * self.dim], mod[:, 2 * self.dim :]
        return modulate(self.norm(x), shift, scale), gate[:, None, :]


class KVCache:
    """Rotated keys and values of the positions decoded so far, for one causal attention layer."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    @property
    def offset(self) -> int:
        """The position of the call's first input: the next one to decode."""
        return self.length

    def attend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``[B, H, L_new, h]`` keys and values; return all of them."""
        if self.length and k.shape[2] > 1:
            raise ValueError("a KV-cached attention layer decodes one position per call after the first")
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class Window:
    """The positions ``start, start + 1, …`` a windowed call (``WindowCache``) takes; shared by a model's layers."""

    def __init__(self) -> None:
        self.start = 0


class WindowCache:
    """Keys and values of every position, for one bidirectional attention layer (Fast-dLLM's dual cache).

    A call over the whole sequence stores them; a call over a window of positions (``window.start``
    onward) computes the window's own keys and values afresh, writes them in, and attends to the
    stored ones elsewhere. Approximate, not exact: the stored keys of the other positions are those of
    the last whole-sequence call, before the tokens the window has changed since.
    """

    def __init__(self, window: Window) -> None:
        self.window = window
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def offset(self) -> int:
        return self.window.start

    def attend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store whole-sequence keys and values, or write a window's in; return every position's."""
        start, n = self.window.start, k.shape[2]
        if self.k is None or (start == 0 and n == self.k.shape[2]):
            self.k, self.v = k, v
            return k, v
        if k.shape[0] != self.k.shape[0] or start + n > self.k.shape[2]:
            raise ValueError(f"a windowed call of {k.shape[0]} rows over positions {start}..{start + n - 1} does not fit "
                             f"the cached {self.k.shape[0]} rows of {self.k.shape[2]} positions")
        self.k[:, :, start : start + n] = k
        self.v[:, :, start : start + n] = v
        return self.k, self.v


@contextmanager
def window_cache(model: nn.Module) -> Iterator[Window | None]:
    """Within the block, every attention layer of ``model`` keeps a ``WindowCache``; yields the ``Window`` to
    set before each call, or None for a model without attention layers (nothing to cache: call it whole)."""
    layers = [m for m in model.modules() if isinstance(m, SelfAttention)]
    if any(layer.causal for layer in layers):
        raise ValueError("a window cache is for bidirectional attention; the autoregressive model has a KV cache")
    if not layers:
        yield None
        return
    window = Window()
    for layer in layers:
        layer.cache = WindowCache(window)
    try:
        yield window
    finally:
        for layer in layers:
            layer.cache = None


class SelfAttention(nn.Module):
    """Multi-head attention with rotary positions (``scaled_dot_product_attention``), bidirectional
    unless ``causal`` (the autoregressive baseline).

    With ``cache`` set, a call takes some positions only: a ``KVCache`` (a causal layer during decoding,
    see ``StandardTrunk.kv_cache``) the next one, attending to every cached one and appending its own
    keys; a ``WindowCache`` (``window_cache``) a window, attending to every position.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0, out_dim: int | None = None, causal: bool = False) -> None:
        super().__init__()
        if dim % n_heads != 0:
            raise ConfigError(f"model.d_model={dim} must be divisible by model.n_heads={n_heads}")
        if (dim // n_heads) % 2 != 0:
            raise ConfigError(f"head width d_model/n_heads={dim // n_heads} must be even for rotary positions")
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, out_dim or dim, bias=False)
        self.dropout = dropout
        self.causal = causal
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        offset = self.cache.offset if self.cache is not None else 0
        cos, sin = rotary_tables(offset + length, dim // self.n_heads, x.device, q.dtype)
        cos, sin = cos[offset:], sin[offset:]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.cache is not None:
            k, v = self.cache.attend(k, v)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal and length > 1)
        return self.out(y.transpose(1, 2).reshape(b, length, dim))


MLPS = ("gelu", "swiglu")


class MLP(nn.Module):
    """Position-wise feed-forward network: a tanh-GELU, or a SwiGLU (``kind='swiglu'``, the gated form of
    current transformers) whose hidden width is 2/3 as large, so both have the same parameter count."""

    def __init__(self, dim: int, mlp_ratio: float, dropout: float = 0.0, out_dim: int | None = None, kind: str = "gelu") -> None:
        super().__init__()
        if kind not in MLPS:
            raise ConfigError(f"unknown model.mlp={kind!r}; choose one of {list(MLPS)}")
        self.gated = kind == "swiglu"
        hidden = int(round(dim * mlp_ratio * (2 / 3 if self.gated else 1)))
        up = nn.Linear(dim, 2 * hidden if self.gated else hidden)
        act = SwiGLU() if self.gated else nn.GELU(approximate="tanh")
        self.net = nn.Sequential(up, act, nn.Dropout(dropout), nn.Linear(hidden, out_dim or dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SwiGLU(nn.Module):
    """``silu(a) · b`` of the two halves of the last dimension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)
        return F.silu(a) * b


class ConditionedSublayer(nn.Module):
    """``gate(c) · f(adaLN(x, c))``: the residual branch of a block, conditioned on time.

    The same branch serves a standard residual block (``x + branch(x, c)``) and, later, the
    coupling functions of a reversible block.
    """

    def __init__(self, dim: int, cond_dim: int, inner: nn.Module, dropout: float = 0.0, out_dim: int | None = None) -> None:
        super().__init__()
        self.adaln = AdaLN(dim, cond_dim, out_dim)
        self.inner = inner
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h, gate = self.adaln(x, cond)
        return gate * self.dropout(self.inner(h))


def attention_branch(
    dim: int, cond_dim: int, n_heads: int, dropout: float, out_dim: int | None = None, causal: bool = False
) -> ConditionedSublayer:
    """The attention residual branch (``F`` in a reversible block); ``out_dim`` defaults to ``dim``."""
    return ConditionedSublayer(dim, cond_dim, SelfAttention(dim, n_heads, dropout, out_dim, causal), dropout, out_dim)


def mlp_branch(
    dim: int, cond_dim: int, mlp_ratio: float, dropout: float, out_dim: int | None = None, kind: str = "gelu"
) -> ConditionedSublayer:
    """The MLP residual branch (``G`` in a reversible block); ``out_dim`` defaults to ``dim``."""
    return ConditionedSublayer(dim, cond_dim, MLP(dim, mlp_ratio, dropout, out_dim, kind), dropout, out_dim)


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of the noise level σ̄, then an MLP, giving the conditioning vector."""

    def __init__(self, cond_dim: int, freq_dim: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=sigma.device, dtype=torch.float32) / half)
        args = sigma.float()[:, None] * freqs[None, :]
        features = torch.cat([args.cos(), args.sin()], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class OutputHead(nn.Module):
    """Final adaLN and a zero-initialised projection to token logits (uniform scores at step 0)."""

    def __init__(self, dim: int, cond_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.modulation = nn.Linear(cond_dim, 2 * dim)
        self.proj = nn.Linear(dim, out_dim)
        for layer in (self.modulation, self.proj):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(F.silu(cond)).chunk(2, dim=-1)
        return self.proj(modulate(self.norm(h), shift, scale))
