"""Per-channel invertible maps: ActNorm and LU-parameterised channel mixing."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .base import Bijection, logdet_dtype


class ActNorm(Bijection):
    """``y = (x + loc) · exp(log_scale)`` per channel, initialised from the first training batch.

    The first forward in training mode sets ``loc`` and ``log_scale`` so that the output has zero
    mean and unit variance per channel (averaged over all ranks under DDP); channels with (near)
    zero variance keep scale 1. The ``initialized`` flag is a buffer, so it is saved and restored.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, self.dim).float()
        moments = torch.stack([flat.mean(0), (flat * flat).mean(0)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(moments)
            moments /= dist.get_world_size()
        mean, sq = moments
        std = (sq - mean * mean).clamp_min(0).sqrt()
        std = torch.where(std > self.eps, std, torch.ones_like(std))
        self.loc.copy_(-mean)
        self.log_scale.copy_(-std.log())
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.initialized):
            self._initialize(x)
        y = (x + self.loc) * torch.exp(self.log_scale)
        logdet = (x.shape[1] * self.log_scale.to(logdet_dtype(x)).sum()).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = y * torch.exp(-self.log_scale) - self.loc
        logdet = (-y.shape[1] * self.log_scale.to(logdet_dtype(y)).sum()).expand(y.shape[0])
        return x, logdet


class LULinear(Bijection):
    """Invertible channel mixing ``y = x Wᵀ`` with ``W = P L (U + diag(sign · exp(log_abs)))``.

    ``P`` is a fixed permutation, ``L`` unit lower-triangular, ``U`` strictly upper-triangular:
    ``log|det| = L_seq · Σ log_abs`` exactly, and the inverse is two triangular solves.
    Initialised at a random rotation.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        q = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))[0]
        perm, lower, upper = torch.linalg.lu(q)
        diag = upper.diagonal()
        self.register_buffer("perm", perm.float())
        self.register_buffer("sign", diag.sign().float())
        self.lower = nn.Parameter(lower.tril(-1).float())
        self.upper = nn.Parameter(upper.triu(1).float())
        self.log_abs = nn.Parameter(diag.abs().log().float())

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.dim, device=self.lower.device, dtype=self.lower.dtype)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign * torch.exp(self.log_abs))
        return lower, upper

    # The state stays in ≥ fp32 under autocast: a bf16 state would not invert to fp32 precision.
    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = logdet_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            lower, upper = (f.to(dtype) for f in self._factors())
            weight = self.perm.to(dtype) @ lower @ upper
            y = x.to(dtype) @ weight.T
        logdet = (x.shape[1] * self.log_abs.to(dtype).sum()).expand(x.shape[0])
        return y, logdet

    def inverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = logdet_dtype(y)
        with torch.autocast(y.device.type, enabled=False):
            lower, upper = (f.to(dtype) for f in self._factors())
            flat = y.to(dtype).reshape(-1, self.dim) @ self.perm.to(dtype)  # y P = x Uᵀ Lᵀ
            a = torch.linalg.solve_triangular(lower.T, flat, upper=True, left=False, unitriangular=True)
            x = torch.linalg.solve_triangular(upper.T, a, upper=False, left=False)
        logdet = (-y.shape[1] * self.log_abs.to(dtype).sum()).expand(y.shape[0])
        return x.reshape(y.shape), logdet
