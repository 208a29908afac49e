"""``distill.teacher=CKPT``: train a student that samples in half its teacher's steps (self-distillation through time)."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ..errors import ConfigError
from ..lit import LitLanguageModel
from ..lit.ema import EMA
from ..objectives import DistillationObjective
from .checkpoint import load_module
from .common import log

TEACHER_GROUPS = ("model", "diffusion")  # the student is the teacher's network, graph and noise


def load_teacher(cfg: DictConfig) -> LitLanguageModel | None:
    """The teacher checkpoint ``distill.teacher`` with its EMA weights (None when not distilling), checked usable."""
    distill = cfg.get("distill") or {}
    if not distill.get("teacher"):
        return None
    teacher = load_module(distill["teacher"], use_ema=True)
    trained = teacher.hparams["cfg"]
    if trained["model"]["name"] == "ar" or trained["diffusion"]["graph"] != "absorb":
        raise ConfigError(f"distill.teacher={distill['teacher']} is a {trained['model']['name']} model"
                          f"{'' if trained['model']['name'] == 'ar' else ' on the ' + trained['diffusion']['graph'] + ' graph'}: "
                          "distillation halves the steps of the absorbing graph's sampler, so the teacher must be a "
                          "denoiser trained with diffusion=absorb")
    if int(cfg.data.seq_len) != int(trained["data"]["seq_len"]):
        raise ConfigError(f"data.seq_len={cfg.data.seq_len}, but the teacher trained on sequences of "
                          f"{trained['data']['seq_len']}: set data.seq_len={trained['data']['seq_len']}")
    return teacher


def student_config(plain: dict[str, Any], teacher: LitLanguageModel) -> dict[str, Any]:
    """``plain`` with the teacher's model and diffusion groups: the student is the teacher's network."""
    trained = teacher.hparams["cfg"]
    changed = [g for g in TEACHER_GROUPS if plain.get(g) != trained[g]]
    if changed:
        log.info("distill: the student takes the teacher's %s configuration", " and ".join(changed))
    return plain | {g: trained[g] for g in TEACHER_GROUPS}


def start_from_teacher(module: LitLanguageModel, teacher: LitLanguageModel, steps: int) -> None:
    """Give ``module`` the teacher's weights (and EMA from them) and the distillation objective for ``steps`` steps."""
    module.model.load_state_dict(teacher.model.state_dict())
    if module.ema is not None:
        module.ema = EMA(module.model, module.ema.decay)
    base = module.objective
    module.objective = DistillationObjective(base.graph, base.noise, base.t_min, teacher.model, steps)
    log.info("distill: student starts from the teacher's weights; one of its %d steps learns two of the teacher's", steps)
