"""The LightningModule: an objective (SEDD or next-token), optimisation, EMA and validation likelihood."""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from typing import Any, Mapping

import lightning as L
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torchmetrics.aggregation import SumMetric

from ..errors import NonFiniteLossError
from ..models import build_model
from ..objectives import build_objective
from .ema import EMA
from .nonfinite import NonfiniteFlags


class LitLanguageModel(L.LightningModule):
    """Trains a language model and validates its likelihood (nats/token): a SEDD denoiser or the AR baseline.

    A denoiser trains with the DWDSE loss and validates with the ELBO; with ``model=ar`` the
    module trains the autoregressive baseline (next-token loss, exact validation NLL): the
    objective is the only difference. ``cfg`` holds the ``model``,
    ``diffusion``, ``optim``, ``ema`` and ``eval`` groups as plain dicts; ``num_tokens`` is the
    tokenizer's real vocabulary (``[MASK]`` excluded). ``seed`` keys the training randomness.

    Each training batch reseeds the global RNG from ``(seed, rank, step, batch)``: every rank
    draws different noise, and a resumed run draws exactly what the uninterrupted run would have,
    with no RNG state to carry between processes. An optimizer step with a NaN/Inf loss in any of
    its batches (on any rank) or NaN/Inf gradients (unless AMP's scaler handles those) is skipped on
    the device: the fused AdamW's ``found_inf`` leaves weights and moments as they were, so the host
    never waits on the check (on MPS, whose fused AdamW ignores it, the host drops the gradients). The host reads the
    flags behind the steps, warns, and after ``optim.max_nonfinite_steps`` skipped steps stops
    training (the interrupt checkpoint keeps the last good weights).
    """

    def __init__(self, cfg: Mapping[str, Any], num_tokens: int, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.cfg = cfg
        self.model = build_model(cfg, num_tokens)
        self.objective = build_objective(cfg, self.model)
        self.ema = EMA(self.model, cfg["ema"]["decay"]) if cfg["ema"]["decay"] > 0 else None
        self.val_nats = SumMetric()
        self.val_tokens = SumMetric()
        self.words_per_token: float | None = None  # set by the application from the data
        self.extra_state: dict[str, Any] = {}  # tokenizer, unigram counts: saved in checkpoints
        self._last_step_time: float | None = None
        self.nonfinite_steps = 0
        self._step_nonfinite: torch.Tensor | None = None  # device flag of the step being accumulated
        self._nonfinite_flags = NonfiniteFlags()

    # -- training ----------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self.objective.to(self.device)  # a distillation teacher is not a submodule (not in checkpoints): move it here

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._count_nonfinite()
        torch.manual_seed(training_seed(self.hparams.seed, self.global_rank, self.global_step, batch_idx))

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0, mask = batch["input_ids"], batch["loss_mask"]
        nats = self.objective.train_nats(self.model, x0, mask, self.global_rank, self.trainer.world_size)
        loss = nats.sum() / mask.sum()
        bad = (~torch.isfinite(loss.detach())).float()
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            # every rank skips alike; a bare all-reduce, as Lightning's reduce adds a barrier that waits on the host
            torch.distributed.all_reduce(bad)
        self._step_nonfinite = bad if self._step_nonfinite is None else self._step_nonfinite + bad
        self.log("train/loss", loss, prog_bar=True)
        now = time.perf_counter()
        if self._last_step_time is not None:
            self.log("train/tokens_per_s", x0.numel() * self.trainer.world_size / (now - self._last_step_time), prog_bar=True)
        self._last_step_time = now
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norm = gradient_norm(self.model)
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        flag = skip_flag(self._step_nonfinite, norm, scaled)
        if flag.device.type == "mps":  # MPS's fused AdamW does not honour found_inf: skip from the host (one sync)
            if bool(flag):
                optimizer.zero_grad(set_to_none=True)  # no gradients: AdamW leaves every parameter as it is
        else:
            optimizer.found_inf = flag  # the fused AdamW skips the whole update where it is 1 (as under AMP's GradScaler)
        self._nonfinite_flags.push(self.global_step, flag)
        self._step_nonfinite = None
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train/grad_norm", norm)

    def _count_nonfinite(self, wait: bool = False, stop: bool = True) -> None:
        """Warn for each skipped step whose flag has reached the host; with ``stop``, raise past
        ``optim.max_nonfinite_steps`` (not while a checkpoint is being written)."""
        limit = int(self.cfg["optim"]["max_nonfinite_steps"])
        for step, flag in self._nonfinite_flags.arrived(wait):
            if flag:
                self.nonfinite_steps += 1
                if self.nonfinite_steps <= limit:
                    warnings.warn(f"step {step}: non-finite training loss or gradients, step skipped "
                                  f"({self.nonfinite_steps} of at most optim.max_nonfinite_steps={limit})",
                                  RuntimeWarning, stacklevel=2)
        if stop and self.nonfinite_steps > limit:
            raise NonFiniteLossError(
                f"the training loss or gradients were NaN/Inf in {self.nonfinite_steps} steps (optim.max_nonfinite_steps={limit}); "
                "stopped. Lower optim.lr, keep trainer.gradient_clip_val set, or check the data"
            )

    def on_train_end(self) -> None:
        self._count_nonfinite(wait=True)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # here, not on_train_batch_end, so a checkpoint taken after the step holds it
            self.ema.update(self.model)

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg["optim"]
        optimizer = build_optimizer(self.model, o)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = warmup_cosine(optimizer, int(o["warmup_steps"]), total, float(o["min_lr_ratio"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- validation: the ELBO with EMA weights -----------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_generator = torch.Generator(device=self.device).manual_seed(int(self.cfg["eval"]["seed"]))
        if self.ema is not None:
            self._ema_context = self.ema.averaged(self.model)
            self._ema_context.__enter__()

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        x0, mask = batch["input_ids"], batch["loss_mask"]
        nats = self.objective.eval_nats(self.model, x0, mask, int(self.cfg["eval"]["t_samples"]), self._val_generator)
        self.val_nats.update(nats.mean(1).sum())
        self.val_tokens.update(mask.sum())

    def on_validation_epoch_end(self) -> None:
        if self.ema is not None:
            self._ema_context.__exit__(None, None, None)
        nll = self.val_nats.compute() / self.val_tokens.compute()
        self.val_nats.reset()
        self.val_tokens.reset()
        self.log("val/nll", nll, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(nll))
        if self.words_per_token:
            self.log("val/ppl_word", torch.exp(nll / self.words_per_token))
        batches = self.trainer.num_training_batches  # per epoch; inf outside fit
        if 0 < batches < math.inf:  # passes over the training split so far: the x axis of a many-epoch comparison
            self.log("val/epochs", self.global_step * self.trainer.accumulate_grad_batches / batches)

    # -- checkpoint extras -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._count_nonfinite(wait=True, stop=False)  # the count a resume starts from includes every step taken
        checkpoint["bijdiff"] = dict(self.extra_state, words_per_token=self.words_per_token, nonfinite_steps=self.nonfinite_steps)
        live = self.ema.live_parameters if self.ema is not None else None
        if live is not None:  # saved while validating with the averages swapped in: keep the live weights
            for (name, _), value in zip(self.model.named_parameters(), live):
                checkpoint["state_dict"][f"model.{name}"] = value.clone()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for state in checkpoint.get("optimizer_states", []):  # a checkpoint of the unfused AdamW resumes fused
            for group in state.get("param_groups", []):
                group["fused"], group["foreach"] = True, None
        extra = dict(checkpoint.get("bijdiff", {}))
        self.words_per_token = extra.pop("words_per_token", None)
        self.nonfinite_steps = int(extra.pop("nonfinite_steps", 0))  # the limit counts across resumes
        self.extra_state = extra


def skip_flag(nonfinite_losses: torch.Tensor, grad_norm: torch.Tensor, scaled: bool = False) -> torch.Tensor:
    """``1.0`` (a 0-d device tensor) when the step must be skipped: a non-finite loss in it, or a non-finite
    gradient norm unless AMP's scaler is on (then that is its overflow signal, which the scaler handles)."""
    bad = nonfinite_losses > 0
    return (bad if scaled else bad | ~torch.isfinite(grad_norm)).float()


def gradient_norm(model: torch.nn.Module) -> torch.Tensor:
    """The 2-norm of all of ``model``'s gradients, on the device (no host read)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(model.parameters()).device)
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)


def build_optimizer(model: torch.nn.Module, o: Mapping[str, Any]) -> torch.optim.AdamW:
    """The fused AdamW of ``optim``: its step reads ``found_inf`` (1: skip the whole update, on the device)."""
    groups = parameter_groups(model, float(o["weight_decay"]))
    optimizer = torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], fused=True)
    # Not scaled inside the step: under 16-mixed AMP's scaler then unscales before clipping (Lightning
    # refuses to clip for an optimizer that unscales itself); the fused step still honours found_inf.
    optimizer._step_supports_amp_scaling = False
    return optimizer


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decoupled decay on the weight matrices; embeddings, norms and biases are not decayed."""
    decayed, rest = [], []
    for name, p in model.named_parameters():
        (decayed if p.ndim >= 2 and "embed" not in name else rest).append(p)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float) -> LRScheduler:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` × lr at step ``total``."""
    lr = optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=lr * floor)
    if warmup == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup - 1)  # (step + 1) / warmup
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


def training_seed(seed: int, rank: int, step: int, batch_idx: int) -> int:
    """A 63-bit seed from the run seed, the rank and the position in training (stable across runs)."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}/{batch_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
