"""Two-stream reversible transformer blocks and the memory-efficient reversible stack."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ..errors import ConfigError
from .base import Bijection, BijectiveSequential, NotInvertibleError, logdet_dtype, zero_logdet
from .layers import attention_branch, mlp_branch
from .replay import autocast_from, capture_autocast, capture_rng, replay_rng

COUPLINGS = ("additive", "affine")


class ReversibleBlock(Bijection):
    """``y1 = x1 ⊕ F(x2, c)``, ``y2 = x2 ⊕ G(y1, c)`` on the state ``(x1, x2)`` (last axis halves).

    ``F`` is rotary attention and ``G`` an MLP, both pre-LN with adaLN on ``c`` and a
    zero-initialised output gate (a fresh block is the identity). ``⊕`` is addition
    (``coupling='additive'``, log-det 0) or the affine map ``x · exp(s) + t`` with
    ``s = α tanh(s_raw / α)`` (``coupling='affine'``, log-det ``Σ s``). The inverse subtracts
    (divides) in reverse order, from ``y`` alone.
    """

    def __init__(
        self,
        width: int,
        cond_dim: int,
        n_heads: int,
        mlp_ratio: float,
        dropout: float = 0.0,
        coupling: str = "additive",
        clamp: float = 2.0,
        mlp: str = "gelu",
    ) -> None:
        super().__init__()
        if coupling not in COUPLINGS:
            raise ConfigError(f"unknown model.coupling={coupling!r}; choose one of {list(COUPLINGS)}")
        self.width, self.dim = width, 2 * width
        self.coupling, self.clamp = coupling, clamp
        out = width if coupling == "additive" else 2 * width
        self.f = attention_branch(width, cond_dim, n_heads, dropout, out)
        self.g = mlp_branch(width, cond_dim, mlp_ratio, dropout, out, mlp)
        self.stochastic = dropout > 0

    # -- the coupling law and its inverse ----------------------------------------------------
    # The coupling law runs in the state's precision (≥ fp32) even when F and G ran under
    # autocast: exp(s) · exp(−s) must be 1 to fp32 precision for the inverse to be exact.
    def _couple(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = h.to(logdet_dtype(x))
        if self.coupling == "additive":
            return x + h, None
        shift, raw = h.chunk(2, dim=-1)
        s = self.clamp * torch.tanh(raw / self.clamp)
        return x * torch.exp(s) + shift, s.to(logdet_dtype(x)).sum((1, 2))

    def _uncouple(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = h.to(logdet_dtype(y))
        if self.coupling == "additive":
            return y - h, None
        shift, raw = h.chunk(2, dim=-1)
        s = self.clamp * torch.tanh(raw / self.clamp)
        return (y - shift) * torch.exp(-s), -s.to(logdet_dtype(y)).sum((1, 2))

    @staticmethod
    def _total(x: torch.Tensor, *logdets: torch.Tensor | None) -> torch.Tensor:
        total = zero_logdet(x)
        for ld in logdets:
            if ld is not None:
                total = total + ld
        return total

    def _check_width(self, state: torch.Tensor) -> None:
        if state.shape[-1] != self.dim:
            raise ValueError(
                f"ReversibleBlock(width={self.width}) couples two streams of {self.width}: its state must be "
                f"{self.dim} wide (even), got {state.shape[-1]}"
            )

    # -- the Bijection contract --------------------------------------------------------------
    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, logdet, _ = self.forward_for_replay(x, cond, record=False)
        return y, logdet

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and self.stochastic:
            raise NotInvertibleError("a block with active dropout is a random map: call .eval() before inverse()")
        self._check_width(y)
        y1, y2 = y.chunk(2, dim=-1)
        x2, ld2 = self._uncouple(y2, self.g(y1, cond))
        x1, ld1 = self._uncouple(y1, self.f(x2, cond))
        return torch.cat([x1, x2], dim=-1), self._total(y, ld1, ld2)

    def forward_for_replay(
        self, x: torch.Tensor, cond: torch.Tensor | None, record: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Forward, recording the RNG state before ``F`` and before ``G`` when dropout is live."""
        self._check_width(x)
        live = record and self.training and self.stochastic
        x1, x2 = x.chunk(2, dim=-1)
        rng_f = capture_rng(x.device) if live else None
        y1, ld1 = self._couple(x1, self.f(x2, cond))
        rng_g = capture_rng(x.device) if live else None
        y2, ld2 = self._couple(x2, self.g(y1, cond))
        return torch.cat([y1, y2], dim=-1), self._total(x, ld1, ld2), (rng_f, rng_g)

    def backward_from_output(self, y, cond, grad_y, grad_logdet, params, replay=None, autocast=None):
        """One pass per coupling function that is both the inverse and the gradient graph.

        ``G(y1)`` is recomputed with grad: it yields ``x2`` and the gradients through ``y2``;
        then ``F(x2)`` likewise yields ``x1`` and the gradients through ``y1``.
        """
        rng_f, rng_g = replay if replay is not None else (None, None)
        y1, y2 = (t.detach() for t in y.chunk(2, dim=-1))
        gy1, gy2 = grad_y.chunk(2, dim=-1)
        f_params = [p for p in self.f.parameters() if p.requires_grad]
        g_params = [p for p in self.g.parameters() if p.requires_grad]
        with torch.enable_grad():
            c = cond.detach().requires_grad_(True) if cond is not None else None
            y1 = y1.requires_grad_(True)
            with replay_rng(rng_g), autocast_from(autocast):
                hg = self.g(y1, c)
            x2 = self._uncouple(y2, hg.detach())[0].requires_grad_(True)
            y2_re, ld2 = self._couple(x2, hg)
            g_grads = _grads(y2_re, ld2, gy2, grad_logdet, [y1, x2, c] + g_params)
            gy1 = gy1 + g_grads[0]
            with replay_rng(rng_f), autocast_from(autocast):
                hf = self.f(x2, c)
            x1 = self._uncouple(y1.detach(), hf.detach())[0].requires_grad_(True)
            y1_re, ld1 = self._couple(x1, hf)
            f_grads = _grads(y1_re, ld1, gy1, grad_logdet, [x1, x2, c] + f_params)
        grad_x = torch.cat([f_grads[0], _add(g_grads[1], f_grads[1])], dim=-1)
        grad_cond = _add(g_grads[2], f_grads[2])
        by_id = {id(p): g for p, g in zip(f_params + g_params, list(f_grads[3:]) + list(g_grads[3:]))}
        return torch.cat([x1.detach(), x2.detach()], dim=-1), grad_x, grad_cond, [by_id.get(id(p)) for p in params]


def _grads(out, logdet, grad_out, grad_logdet, inputs):
    """``autograd.grad`` of ``(out, logdet)`` w.r.t. ``inputs`` (``None`` inputs give ``None``)."""
    outs, gouts = [out], [grad_out]
    if logdet is not None:
        outs.append(logdet)
        gouts.append(grad_logdet.to(logdet.dtype))
    present = [i for i in inputs if i is not None]
    got = iter(torch.autograd.grad(outs, present, gouts, allow_unused=True))
    return [next(got) if i is not None else None for i in inputs]


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _trainable(layers: Iterable[nn.Module]) -> list[nn.Parameter]:
    return [p for layer in layers for p in layer.parameters() if p.requires_grad]


class _ReversibleStackFunction(torch.autograd.Function):
    """Runs a stack without storing activations; backward rebuilds them from the output.

    The parameters are inputs of the function, so their gradients flow back through autograd
    (as DDP's reducer expects) rather than being written into ``.grad``.
    """

    @staticmethod
    def forward(ctx, x, cond, layers, *params):
        ctx.layers = layers
        ctx.autocast = capture_autocast(x.device)
        ctx.replay = []
        total = zero_logdet(x)
        for layer in layers:
            x, logdet, replay = layer.forward_for_replay(x, cond)
            ctx.replay.append(replay)
            total = total + logdet
        ctx.save_for_backward(x, cond)
        return x, total

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        y, cond = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(y)
        if grad_logdet is None:
            grad_logdet = zero_logdet(y)
        grads: list[torch.Tensor | None] = []
        grad_cond = None
        for layer, replay in zip(reversed(ctx.layers), reversed(ctx.replay)):
            params = _trainable([layer])
            y, grad_y, g_cond, g_params = layer.backward_from_output(
                y, cond, grad_y, grad_logdet, params, replay, ctx.autocast
            )
            grad_cond = _add(grad_cond, g_cond)
            grads = list(g_params) + grads
        if cond is not None and not ctx.needs_input_grad[1]:
            grad_cond = None
        return (grad_y, grad_cond, None, *grads)


class ReversibleStack(BijectiveSequential):
    """A sequence of bijections; with ``memory_efficient`` backprop stores activations of one layer only.

    The layers below the last are run without storing activations and rebuilt block by block
    through the exact inverse during backward; the last layer keeps its autograd graph (its
    recomputation would be pure waste), so activation memory is that of one layer at any depth.
    Without it, plain autograd runs through all layers: the reference the efficient path is
    tested against.
    """

    def __init__(self, layers: Iterable[Bijection], memory_efficient: bool = True) -> None:
        super().__init__(layers)
        self.memory_efficient = memory_efficient

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not (self.memory_efficient and torch.is_grad_enabled() and len(self.layers) > 1):
            return super().forward(x, cond)
        *rebuilt, last = self.layers
        params = _trainable(rebuilt)
        if not (x.requires_grad or (cond is not None and cond.requires_grad) or params):
            return super().forward(x, cond)
        h, logdet = _ReversibleStackFunction.apply(x, cond, tuple(rebuilt), *params)
        y, last_logdet = last(h, cond)
        return y, logdet + last_logdet
