"""``train(cfg)``: compose data, model, trainer, loggers and callbacks from a config and fit."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from ..data import WikiTextDataModule
from ..errors import CheckpointError
from ..lit import LitLanguageModel
from ..lit.loggers import ResumableCSVLogger
from ..lit.loop_state import save_between_steps
from ..models import describe_model, model_label
from ..nn.compile import compile_sublayers
from .common import log, quiet_third_party_notices
from .preflight import available_accelerators, check_accelerator, check_compile, check_numbers
from .rundir import RunDirectory, claim_run_directory, launch_rank

MODULE_GROUPS = ("model", "diffusion", "optim", "ema", "eval", "data")  # diffusion: absent under model=ar
CPU_PRESET_STEPS = 800  # conf/experiment/cpu.yaml


def build_datamodule(data_cfg: DictConfig | dict, **overrides: Any) -> WikiTextDataModule:
    """The data module the ``data`` config group names by ``_target_``, with ``overrides`` on top."""
    return instantiate(data_cfg, **overrides, _convert_="all")


def resume_step(ckpt_path: str | None) -> int | None:
    """The global step of the checkpoint training resumes from (None: a fresh start, or Lightning's ``last``)."""
    if ckpt_path in (None, "", "last"):
        return None
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such checkpoint to resume from (give a .ckpt file that "
                              "train.py wrote, e.g. <run>/checkpoints/last.ckpt, or ckpt_path=null to start fresh)")
    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"])
    except Exception as err:
        raise CheckpointError(f"ckpt_path={ckpt_path}: cannot read it as a training checkpoint: "
                              f"{type(err).__name__}: {err}") from err


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a denoiser as configured; return the best validation NLL and where outputs went.

    The output directory must be new (or empty), or the one ``ckpt_path`` belongs to: a run never
    writes into another run's directory, and a second run started on a directory in use is refused.
    """
    with claim_run_directory(cfg, cfg.get("ckpt_path")) as run_dir:
        return _train(cfg, run_dir)


def _train(cfg: DictConfig, run_dir: RunDirectory) -> dict[str, Any]:
    check_numbers(cfg)
    check_compile(cfg)
    check_accelerator(cfg.trainer)
    resume_at = resume_step(cfg.get("ckpt_path"))  # a bad ckpt_path fails here, before any work
    from .distill import load_teacher, start_from_teacher, student_config  # it loads checkpoints, which needs this module

    teacher = load_teacher(cfg)
    if teacher:
        cfg = student_config(cfg, teacher)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    quiet_third_party_notices()
    plain = OmegaConf.to_container(cfg, resolve=True)
    accelerator = str(cfg.trainer.accelerator)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and available_accelerators() == ["cpu"])
    if on_cpu and launch_rank() == 0 and cfg.trainer.max_steps > CPU_PRESET_STEPS:
        log.warning("training %d steps on the CPU: experiment=cpu is the preset sized for a CPU (%d steps of "
                    "64×64 tokens, about half an hour on 2 cores)", cfg.trainer.max_steps, CPU_PRESET_STEPS)

    tokenizer = {"tokenizer_json": teacher.extra_state["tokenizer"]} if teacher else {}  # the student reads as its teacher
    datamodule = build_datamodule(cfg.data, seed=cfg.seed, **tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    log.info("data: %s", datamodule.describe())

    module = LitLanguageModel({k: plain[k] for k in MODULE_GROUPS if k in plain}, num_tokens=datamodule.num_tokens, seed=cfg.seed)
    if teacher:
        start_from_teacher(module, teacher, int(cfg.distill.steps), str(cfg.distill.method))
    module.words_per_token = datamodule.words_per_token("validation")
    module.extra_state = {
        "tokenizer": datamodule.tokenizer_json,
        "unigram_counts": torch.from_numpy(datamodule.unigram_counts()),
    }
    log.info("model: %s", describe_model(plain, module.model))
    if cfg.get("compile"):
        log.info("compile: %d attention and MLP branches (mode %s)", compile_sublayers(module.model, cfg.compile), cfg.compile)

    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
    loggers = [_instantiate_logger(lg, plain) for lg in cfg.logger.values()] if cfg.get("logger") else False
    for lg in loggers or []:
        if isinstance(lg, ResumableCSVLogger):
            lg.resume_step = resume_at
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in trainer.loggers:
        lg.log_hyperparams(plain)

    run_dir.started = True
    with warnings.catch_warnings():
        # the data module carries the position within the epoch (see ResumableSampler), which
        # Lightning's check for a stateful DataLoader does not see
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
        if not run_dir.fresh:  # resuming in place (claim_run_directory allows no other case)
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger) and trainer.is_global_zero:
            lg.experiment.finish()  # one W&B run per job, also across the jobs of a multirun

    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if checkpoint is not None and checkpoint.save_last and checkpoint.dirpath:
        # Lightning's last.ckpt is the last *validated* state; make it the final one
        last = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        save_between_steps(trainer, str(last))
        checkpoint.last_model_path = str(last)
    best = float(checkpoint.best_model_score) if checkpoint and checkpoint.best_model_score is not None else math.nan
    result = {
        "best_val_nll": best,
        "best_val_ppl": math.exp(best) if math.isfinite(best) else math.nan,
        "best_ckpt": checkpoint.best_model_path if checkpoint else None,
        "last_ckpt": checkpoint.last_model_path if checkpoint else None,
        "output_dir": str(cfg.paths.output_dir),
        "global_step": trainer.global_step,
    }
    if trainer.is_global_zero:
        print(f"bijdiff: {run_summary(cfg, module, checkpoint, result)}", flush=True)
    return result


def _instantiate_logger(lg_cfg: DictConfig, plain: dict[str, Any]) -> Any:
    """A logger from its config; a W&B run without a name is named ``<task>-<model label>-<graph>``."""
    if "name" in lg_cfg and lg_cfg.name is None and str(lg_cfg._target_).endswith("wandb_logger"):
        graph = "" if plain["model"]["name"] == "ar" else f"-{plain['diffusion']['graph']}"
        return instantiate(lg_cfg, name=f"{plain['task_name']}-{model_label(plain['model'])}{graph}")
    return instantiate(lg_cfg)


def run_summary(cfg: DictConfig, module: LitLanguageModel, checkpoint: ModelCheckpoint | None, result: dict[str, Any]) -> str:
    """The end-of-run line: the best validation NLL (a bound, or exact for AR) and where the files are."""
    what = "NLL bound" if module.objective.is_bound else "NLL (exact)"
    best = result["best_val_nll"]
    if math.isfinite(best):
        score = f"best validation {what} {best:.4f} nats/token (ppl {result['best_val_ppl']:.2f})"
    else:
        score = (f"no validation ran (trainer.val_check_interval={cfg.trainer.val_check_interval}, "
                 f"trainer.max_steps={cfg.trainer.max_steps}), so no best.ckpt")
    where = f"checkpoints in {checkpoint.dirpath}; " if checkpoint is not None and checkpoint.dirpath else ""
    return f"done at step {result['global_step']}: {score}; {where}logs and metrics in {cfg.paths.output_dir}"
