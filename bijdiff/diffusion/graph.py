"""SEDD transition graphs: forward corruption, output parameterisation and score entropy."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from ..errors import ConfigError

# Log-score given to transitions into [MASK]: finite so that no -inf * 0 = nan appears anywhere.
NEVER = -1e4
REVERSE_STEPS = ("euler", "analytic")


class Graph(ABC):
    """A SEDD transition graph over ``dim`` states, ``num_tokens`` of them real tokens.

    The math is written once here and used by the loss, the likelihood and the samplers:
    forward corruption, the output parameterisation, score entropy with its constant term, the
    terms that close the ELBO, and the reverse-step transition probabilities.
    """

    num_tokens: int
    dim: int
    absorbing: bool

    def __init__(self, num_tokens: int) -> None:
        if num_tokens < 2:
            raise ConfigError(f"the {type(self).__name__.lower()} graph needs at least 2 real tokens, got {num_tokens}")
        self.num_tokens = num_tokens

    @abstractmethod
    def sample_transition(
        self, x0: torch.Tensor, sigma: torch.Tensor, loss_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw ``x_t ~ p_σ̄(· | x0)`` (``sigma: [B]``); positions where ``loss_mask`` is False stay clean."""

    @abstractmethod
    def sample_limit(self, shape: tuple[int, ...], device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw from the prior the reverse process starts from."""

    @abstractmethod
    def scored_positions(self, x_t: torch.Tensor) -> torch.Tensor:
        """Positions whose score entropy can be non-zero."""

    @abstractmethod
    def log_score_from_logits(self, logits: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Head logits ``[..., num_tokens]`` to log-scores ``[..., dim]`` (fp32); ``sigma`` broadcasts to ``x_t``."""

    @abstractmethod
    def score_entropy(self, log_score: torch.Tensor, sigma: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Score entropy per position ``[B, L]`` (``sigma: [B]``), constant term included."""

    @abstractmethod
    def score_entropy_from_logits(
        self, logits: torch.Tensor, sigma: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor
    ) -> torch.Tensor:
        """``score_entropy`` of rows ``logits: [M, num_tokens]`` with their ``sigma, x_t, x0: [M]``."""

    @abstractmethod
    def prior_kl(self, x0: torch.Tensor, sigma_max: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        """``KL(p_σ̄max(·|x0) ‖ prior)`` per sequence ``[B]``."""

    @abstractmethod
    def reconstruction_nats(self, sigma_min: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        """``E[−log q(x0 | x_σ̄min)]`` per sequence ``[B]`` for the Bayes decoder under a uniform x0.

        Closes the bound when a schedule starts above zero noise (``σ̄(0) > 0``, geometric); it
        is 0 at ``σ̄(0) = 0``.
        """

    @abstractmethod
    def reverse_probs(
        self, score: torch.Tensor, x_t: torch.Tensor, step_size: torch.Tensor, method: str
    ) -> torch.Tensor:
        """Unnormalised ``p(x_s = y | x_t)`` ``[..., dim]`` for one reverse step from ``t`` to ``s``.

        ``score`` holds the (exponentiated) scores ``[..., dim]``; ``method`` is ``euler`` (first
        order in the reverse rates, ``step_size = σ(t)·(t − s)``) or ``analytic`` (Tweedie
        τ-leaping, ``step_size = σ̄_t − σ̄_s``); ``sampling.reverse_schedule`` gives both.
        """

    def denoise_probs(self, score: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The final step to zero noise, over real tokens only ``[..., num_tokens]``."""
        return self.reverse_probs(score, x_t, sigma, "analytic")[..., : self.num_tokens]


def _check_method(method: str) -> None:
    if method not in REVERSE_STEPS:
        raise ConfigError(f"unknown reverse step {method!r}; choose one of {list(REVERSE_STEPS)}")


def _per_position(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``sigma`` broadcast to ``like``'s leading shape plus a trailing axis."""
    while sigma.dim() < like.dim() - 1:
        sigma = sigma[..., None]
    return sigma[..., None] if sigma.dim() == like.dim() - 1 else sigma


class Absorbing(Graph):
    """The absorbing-state graph: every real token jumps to ``[MASK]`` (id ``num_tokens``) at rate σ.

    States are ``0 .. num_tokens`` (``dim = num_tokens + 1``). At total noise σ̄ a token is
    still itself with probability ``exp(-σ̄)`` and ``[MASK]`` otherwise.
    """

    absorbing = True

    def __init__(self, num_tokens: int) -> None:
        super().__init__(num_tokens)
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

    def sample_limit(self, shape: tuple[int, ...], device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
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

    def score_entropy_from_logits(
        self, logits: torch.Tensor, sigma: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor
    ) -> torch.Tensor:
        """``score_entropy(log_score_from_logits(logits))`` at masked positions, in closed form.

        With normalised scores the terms collapse: ``Σ_{y≠x0} s_y = r(1 − p_{x0})`` and the clean
        term is ``r(p_{x0} − 1 − log p_{x0})``, so the score entropy is ``r · (−log p_{x0})``, a
        fused cross-entropy. It holds at masked positions; ``dwdse``'s fixed-shape path passes
        every position and weights out the others. Tests check it against ``score_entropy``.
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

    def reconstruction_nats(self, sigma_min: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        """A position masked at σ̄min (probability ``1 − e^{−σ̄min}``) costs ``log num_tokens``."""
        masked = -torch.expm1(-sigma_min.float())
        return masked * math.log(self.num_tokens) * loss_mask.float().sum(-1)

    def reverse_probs(self, score: torch.Tensor, x_t: torch.Tensor, step_size: torch.Tensor, method: str) -> torch.Tensor:
        """At ``[MASK]``: ``p(y) = c · s_y`` for real ``y``, with ``c = σ(t)Δt`` (Euler) or ``e^{Δσ̄} − 1``
        (analytic, exact for exact scores); the rest stays masked. Real tokens never move."""
        _check_method(method)
        step = _per_position(step_size.to(score.dtype), score)
        factor = step if method == "euler" else torch.expm1(step)
        real = (factor * score[..., : self.num_tokens]).clamp_min(0.0)
        stay = (1.0 - real.sum(-1, keepdim=True)).clamp_min(0.0)
        probs = torch.cat([real, stay], dim=-1)
        keep = torch.nn.functional.one_hot(x_t, self.dim).to(score.dtype)
        return torch.where((x_t == self.mask_id)[..., None], probs, keep)


def _log_expm1(x: torch.Tensor) -> torch.Tensor:
    """``log(exp(x) − 1)`` for x > 0, accurate for both tiny and large x."""
    return torch.where(x < 20.0, torch.log(torch.expm1(x.clamp_max(20.0))), x)


class Uniform(Graph):
    """The uniform graph: a token jumps to a uniformly drawn token (itself included) at rate σ.

    ``dim = num_tokens``; ``Q = 11ᵀ/N − I``, so ``p_σ̄(y|x) = e^{−σ̄} δ_xy + (1 − e^{−σ̄})/N`` and
    the prior is uniform. Every position is scored, and score entropy weights each ``y ≠ x_t``
    by the forward rate ``Q(x_t, y) = 1/N``.
    """

    absorbing = False

    def __init__(self, num_tokens: int) -> None:
        super().__init__(num_tokens)
        self.dim = num_tokens

    def sample_transition(self, x0, sigma, loss_mask=None, generator=None):
        move_prob = -torch.expm1(-sigma.float())[:, None]
        move = torch.rand(x0.shape, device=x0.device, generator=generator) < move_prob
        if loss_mask is not None:
            move = move & loss_mask
        noise = torch.randint(self.num_tokens, x0.shape, device=x0.device, generator=generator)
        return torch.where(move, noise, x0)

    def sample_limit(self, shape, device, generator=None):
        return torch.randint(self.num_tokens, shape, device=device, generator=generator)

    def scored_positions(self, x_t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x_t, dtype=torch.bool)

    def log_score_from_logits(self, logits, x_t, sigma):
        """``log s_y = ℓ_y − ℓ_{x_t}``: the ratios of a categorical, 0 at the current token, and the
        exact (uniform) ratios for zero logits, the fresh zero-initialised head."""
        logits = logits.float()
        return logits - logits.gather(-1, x_t[..., None])

    def log_ratios(self, sigma: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The true ``log p_σ̄(y|x0) / p_σ̄(x_t|x0)`` ``[..., N]`` for ``sigma`` shaped like ``x_t``.

        SEDD's case split: if ``x_t = x0`` every ``y ≠ x_t`` has ratio ``(e^σ̄ − 1)/(e^σ̄ − 1 + N)``;
        otherwise ``y = x0`` has ``1 + N/(e^σ̄ − 1)`` and every other ``y`` ratio 1.
        """
        log_e = _log_expm1(sigma.float())
        log_e_plus_n = torch.logaddexp(log_e, torch.full_like(log_e, math.log(self.num_tokens)))
        same = (x_t == x0)[..., None]
        base = torch.where(same, (log_e - log_e_plus_n)[..., None], torch.zeros_like(log_e)[..., None])
        log_r = base.expand(*x_t.shape, self.num_tokens).clone()
        at_x0 = torch.where(same, base, (log_e_plus_n - log_e)[..., None])
        return log_r.scatter(-1, x0[..., None], at_x0)

    def _entropy(self, log_score, sigma, x_t, x0):
        """``(1/N) Σ_{y≠x_t} s_y − r_y log s_y + r_y(log r_y − 1)``, written as ``r_y (e^z − 1 − z)``,
        ``z = log s_y − log r_y``: the same number with every term ≥ 0 in floating point."""
        log_r = self.log_ratios(sigma, x_t, x0)
        z = log_score.float() - log_r
        terms = log_r.exp() * (torch.expm1(z) - z)
        terms = terms.scatter(-1, x_t[..., None], 0.0)
        return terms.sum(-1) / self.num_tokens

    def score_entropy(self, log_score, sigma, x_t, x0):
        return self._entropy(log_score, sigma[:, None].expand_as(x_t), x_t, x0)

    def score_entropy_from_logits(self, logits, sigma, x_t, x0):
        return self._entropy(self.log_score_from_logits(logits, x_t, sigma), sigma, x_t, x0)

    def _row_terms(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p(x|x), p(y≠x|x))`` and their logs, stable for tiny and large σ̄."""
        n, alpha = self.num_tokens, torch.exp(-sigma.float())
        log_same = torch.log1p(alpha * (n - 1)) - math.log(n)
        log_other = torch.log1p(-alpha) - math.log(n)
        return log_same, log_other

    def prior_kl(self, x0, sigma_max, loss_mask):
        n = self.num_tokens
        log_same, log_other = self._row_terms(sigma_max)
        per_position = torch.exp(log_same) * (log_same + math.log(n)) + (n - 1) * torch.exp(log_other) * (log_other + math.log(n))
        return per_position * loss_mask.float().sum(-1)

    def reconstruction_nats(self, sigma_min, loss_mask):
        """The Bayes decoder is the (symmetric) kernel itself: its cost is the kernel row's entropy."""
        n = self.num_tokens
        log_same, log_other = self._row_terms(sigma_min)
        entropy = -torch.xlogy(torch.exp(log_same), torch.exp(log_same)) - (n - 1) * torch.xlogy(torch.exp(log_other), torch.exp(log_other))
        return entropy * loss_mask.float().sum(-1)

    def reverse_probs(self, score, x_t, step_size, method):
        """Euler: ``p(y) = σ(t)Δt s_y / N`` for ``y ≠ x_t``. Analytic (Tweedie):
        ``p(y) ∝ [e^{−Δσ̄Q} s]_y · [e^{Δσ̄Q}]_{y→x_t}`` with ``e^{τQ} = e^{−τ} I + (1 − e^{−τ}) 11ᵀ/N``."""
        _check_method(method)
        n = self.num_tokens
        step = _per_position(step_size.to(score.dtype), score)
        current = torch.nn.functional.one_hot(x_t, n).to(score.dtype)
        if method == "euler":
            moves = (step * score / n).clamp_min(0.0) * (1.0 - current)
            return moves + current * (1.0 - moves.sum(-1, keepdim=True)).clamp_min(0.0)
        score = score * (1.0 - current) + current  # s_{x_t} = 1
        staggered = torch.exp(step) * score - torch.expm1(step) * score.mean(-1, keepdim=True)
        transposed = torch.exp(-step) * current - torch.expm1(-step) / n
        return (staggered * transposed).clamp_min(0.0)


GRAPHS: dict[str, type[Graph]] = {"absorb": Absorbing, "uniform": Uniform}


def build_graph(name: str, num_tokens: int) -> Graph:
    """Build a graph by name (``diffusion.graph``), with a clear error for unknown names."""
    if name not in GRAPHS:
        raise ConfigError(f"unknown diffusion.graph={name!r}; choose one of {sorted(GRAPHS)}")
    return GRAPHS[name](num_tokens)
