"""``distill.teacher=CKPT``: train a student that samples in half its teacher's steps (self-distillation through time)."""
from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import ConfigError
from ..lit import LitLanguageModel
from ..lit.ema import EMA
from ..diffusion.distill import DISTILLATION_METHODS
from ..objectives import DistillationObjective, check_distillation
from .checkpoint import load_module
from .common import log

TEACHER_GROUPS = ("model", "diffusion")  # the student is the teacher's network, graph and noise


def load_teacher(cfg: DictConfig) -> LitLanguageModel | None:
    """The teacher checkpoint ``distill.teacher`` with its EMA weights (None when not distilling), checked usable."""
    distill = cfg.get("distill") or {}
    if not distill.get("teacher"):
        return None
    check_distillation(int(distill.get("steps")), str(distill.get("method")))
    teacher = load_module(distill["teacher"], use_ema=True)
    trained = teacher.hparams["cfg"]
    kind = "an autoregressive model" if trained["model"]["name"] == "ar" else (
        None if trained["diffusion"]["graph"] == "absorb" else f"a denoiser on the {trained['diffusion']['graph']} graph")
    if kind:
        raise ConfigError(f"distill.teacher={distill['teacher']} is {kind}: distillation halves the steps of the "
                          "absorbing graph's sampler, so the teacher must be a denoiser trained with diffusion=absorb")
    return teacher


def student_config(cfg: DictConfig, teacher: LitLanguageModel) -> DictConfig:
    """``cfg`` with the teacher's model and diffusion groups and sequence length (the student is the teacher's
    network, on the same blocks), and its data files unless ``data.files`` names a training file."""
    trained = teacher.hparams["cfg"]
    cfg = copy.deepcopy(cfg)
    taken = [g for g in TEACHER_GROUPS if OmegaConf.to_container(cfg.get(g) or {}, resolve=True) != trained[g]]
    with open_dict(cfg):
        for group in TEACHER_GROUPS:
            cfg[group] = trained[group]
        if int(cfg.data.seq_len) != int(trained["data"]["seq_len"]):
            taken.append(f"sequence length ({trained['data']['seq_len']})")
            cfg.data.seq_len = trained["data"]["seq_len"]
        if not (cfg.data.get("files") or {}).get("train") and trained["data"].get("files"):
            taken.append("data files")
            cfg.data.files = trained["data"]["files"]
    if taken:
        log.info("distill: the student takes the teacher's %s", ", ".join(taken))
    return cfg


def start_from_teacher(module: LitLanguageModel, teacher: LitLanguageModel, steps: int, method: str) -> None:
    """Give ``module`` the teacher's weights (and EMA from them) and the distillation objective (``method``) for ``steps`` steps."""
    module.model.load_state_dict(teacher.model.state_dict())
    if module.ema is not None:
        module.ema = EMA(module.model, module.ema.decay)
    base = module.objective
    module.objective = DistillationObjective(base.graph, base.noise, base.t_min, teacher.model, steps, method)
    log.info("distill (%s): student starts from the teacher's weights; one of its %d steps learns two steps: %s",
             method, steps, DISTILLATION_METHODS[method])
