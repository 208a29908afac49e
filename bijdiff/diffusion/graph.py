"""SEDD transition graphs: forward corruption, output parameterisation and score entropy."""
from __future__ import annotations

import math

import torch
from ..errors import ConfigError

# Log-score given to transitions into [MASK]: finite so that no -inf * 0 = nan appears anywhere.
NEVER = -1e4


class Absorbing:
    """The absorbing-state graph: every real token jumps to ``[MASK]`` (id ``num_tokens``) at rate σ.

    States are ``0 .. num_tokens`` (``dim = num_tokens + 1``). At total noise σ̄ a token is
    still itself with probability ``exp(-σ̄)`` and ``[MASK]`` otherwise.
    """

    def __init__(self, num_tokens: int) -> None:
        if num_tokens < 2:
            raise ConfigError(f"the absorbing graph needs at least 2 real tokens, got {num_tokens}")
        self.num_tokens = num_tokens
        self.mask_id = num_tokens
        self.dim = num_tokens + 1

    def sample_transition(
        self,
        x0: torch.Tensor,
        sigma: torch.Tensor,
        loss_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw ``x_t ~ p_t(· | x0)``; positions where ``loss_mask`` is False are kept clean."""
        move_prob = -torch.expm1(-sigma.float())[:, None]
        u = torch.rand(x0.shape, device=x0.device, generator=generator)
        move = u < move_prob
        if loss_mask is not None:
            move = move & loss_mask
        return torch.where(move, torch.full_like(x0, self.mask_id), x0)

    def sample_limit(self, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        """The all-``[MASK]`` sequence the reverse process starts from."""
        return torch.full(shape, self.mask_id, dtype=torch.long, device=device)

    def scored_positions(self, x_t: torch.Tensor) -> torch.Tensor:
        """Positions whose score entropy can be non-zero: the masked ones."""
        return x_t == self.mask_id

    def log_score_from_logits(
        self, logits: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """Turn logits ``[..., num_tokens]`` into log-scores ``[..., dim]`` (fp32).

        ``x_t`` has the leading shape of ``logits``; ``sigma`` broadcasts against it. SEDD's
        scale-by-sigma shift with normalised logits: ``log s_y = log softmax(logits)_y −
        log(exp(σ̄) − 1)``, so zero logits (the zero-initialised head) give exactly the uniform
        score and the scores at a masked position sum to the true total rate. ``[MASK]`` gets
        ``NEVER``; the current token gets log-score 0, as in SEDD.
        """
        log_esigm1 = _log_expm1(sigma.float()).expand(x_t.shape)[..., None]
        log_score = torch.log_softmax(logits.float(), dim=-1) - log_esigm1
        never = torch.full_like(log_score[..., :1], NEVER)
        log_score = torch.cat([log_score, never], dim=-1)
        return log_score.scatter(-1, x_t[..., None], torch.zeros_like(log_score[..., :1]))

    def score_entropy(
        self, log_score: torch.Tensor, sigma: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor
    ) -> torch.Tensor:
        """Score entropy per position ``[B, L]``, constant term ``K(r) = r(log r − 1)`` included.

        Only masked positions contribute. With ratio ``r = 1/(exp(σ̄) − 1)`` for the clean
        token, ``Σ_{y≠x_t} s_y − r log s_{x0} + K(r)`` is rewritten as
        ``Σ_{y∉{x0, mask}} s_y + r (e^z − 1 − z)`` with ``z = log s_{x0} − log r``: the same
        number, but each term is ≥ 0 in floating point, and both vanish at the true ratio.
        """
        log_score = log_score.float()
        masked = self.scored_positions(x_t)
        log_r = -_log_expm1(sigma.float())[:, None].expand_as(x_t)
        log_s_x0 = log_score.gather(-1, x0[..., None]).squeeze(-1)
        z = log_s_x0 - log_r
        clean_term = log_r.exp() * (torch.expm1(z) - z)
        others = log_score[..., : self.num_tokens].exp().scatter(-1, x0[..., None], 0.0).sum(-1)
        return torch.where(masked, others + clean_term, torch.zeros_like(clean_term))

    def score_entropy_from_logits(self, logits: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """``score_entropy(log_score_from_logits(logits))`` at masked positions, in closed form.

        With normalised scores the terms collapse: ``Σ_{y≠x0} s_y = r(1 − p_{x0})`` and the clean
        term is ``r(p_{x0} − 1 − log p_{x0})``, so the score entropy is ``r · (−log p_{x0})``, a
        fused cross-entropy. ``logits: [M, num_tokens]`` are rows at masked positions with their
        ``sigma: [M]`` and clean tokens ``x0: [M]``; tests check it against ``score_entropy``.
        """
        ce = torch.nn.functional.cross_entropy(logits.float(), x0, reduction="none")
        return torch.exp(-_log_expm1(sigma.float())) * ce

    def prior_kl(self, x0: torch.Tensor, sigma_max: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        """``KL(p_1(·|x0) ‖ prior)`` per sequence ``[B]``.

        The schedule leaves each token unmasked with probability ``α = exp(−σ̄(1))`` (ε for
        log-linear), so the prior is per position ``[MASK]`` with probability 1 − α and a uniform
        real token with probability α; the KL is then ``α log(num_tokens)`` per counted position.
        """
        alpha = torch.exp(-sigma_max.float())
        return alpha * math.log(self.num_tokens) * loss_mask.float().sum(-1)


def _log_expm1(x: torch.Tensor) -> torch.Tensor:
    """``log(exp(x) − 1)`` for x > 0, accurate for both tiny and large x."""
    return torch.where(x < 20.0, torch.log(torch.expm1(x.clamp_max(20.0))), x)


GRAPHS = {"absorb": Absorbing}


def build_graph(name: str, num_tokens: int) -> Absorbing:
    """Build a graph by name (``diffusion.graph``), with a clear error for unknown names."""
    if name not in GRAPHS:
        raise ConfigError(f"unknown diffusion.graph={name!r}; choose one of {sorted(GRAPHS)}")
    return GRAPHS[name](num_tokens)
