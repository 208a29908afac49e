"""Every config group option composes, and the composed configs build what they describe."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bijdiff import build_model
from bijdiff.app.train import _instantiate_logger
from bijdiff.objectives import build_objective

from .conftest import CONF, compose_config

GROUPS = ["model", "diffusion", "diffusion/noise", "data", "trainer", "logger", "callbacks", "experiment", "paths", "hydra"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group: str, option: str, tmp_path) -> None:
    cfg = compose_config("train", [f"{group}={option}", f"paths.output_dir={tmp_path}"])
    assert cfg.model.name and cfg.trainer._target_
    # a denoiser brings the diffusion group; the AR baseline has none (nor time conditioning)
    assert ("diffusion" in cfg) == ("time_conditioning" in cfg.model) == (cfg.model.name != "ar")
    if group in ("model", "diffusion", "diffusion/noise", "experiment"):
        model = build_model(cfg)
        # real tokens plus [MASK] (absorbing) or BOS (ar); the uniform graph has no extra state
        rows = cfg.data.vocab_size - (cfg.model.name != "ar" and cfg.diffusion.graph == "uniform")
        assert model.embed.num_embeddings == rows
        if "diffusion" in cfg:
            build_objective(OmegaConf.to_container(cfg, resolve=True), model)


def test_each_noise_schedule_carries_only_its_own_parameters(tmp_path) -> None:
    absorb = compose_config("train", [f"paths.output_dir={tmp_path}"]).diffusion.noise
    uniform = compose_config("train", ["diffusion=uniform", f"paths.output_dir={tmp_path}"]).diffusion.noise
    assert dict(absorb) == {"name": "loglinear", "eps": 1e-3}
    assert dict(uniform) == {"name": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0}
    mixed = compose_config("train", ["diffusion=uniform", "diffusion/noise=loglinear", f"paths.output_dir={tmp_path}"])
    assert (mixed.diffusion.graph, mixed.diffusion.noise.name) == ("uniform", "loglinear")


@pytest.mark.parametrize("override", ["diffusion=uniform", "diffusion.t_min=0.1", "model.time_conditioning=false"])
def test_model_ar_refuses_keys_it_would_ignore(override: str, tmp_path) -> None:
    with pytest.raises(ConfigCompositionException, match="Could not override"):
        compose_config("train", ["model=ar", override, f"paths.output_dir={tmp_path}"])


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options_instantiate_on_cpu(option: str, tmp_path) -> None:
    cfg = compose_config("train", [f"trainer={option}", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true", f"paths.output_dir={tmp_path}"])
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("option", options("logger"))
def test_logger_options_instantiate_offline(option: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_config("train", [f"logger={option}", f"paths.output_dir={tmp_path}"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    for lg_cfg in cfg.logger.values():
        lg = _instantiate_logger(lg_cfg, plain)
        assert Path(lg.save_dir) == tmp_path  # everything a logger writes stays in the run's directory
        if option == "wandb":
            assert lg._offline and lg._wandb_init["name"] == "train-standard-absorb"


def test_eval_config_composes(tmp_path) -> None:
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", f"paths.output_dir={tmp_path}"])
    assert cfg.split == "test" and cfg.mode == "ppl" and cfg.eval.t_samples >= 2 and cfg.eval.exact is False
    assert cfg.sample.sampler == "analytic" and cfg.judge_ckpt is None
