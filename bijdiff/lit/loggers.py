"""Loggers that need a decision at run time: W&B online or offline, CSV rows kept on resume.

Private Lightning names (pinned range in pyproject.toml): ``CSVLogger._experiment``, ``ExperimentWriter.metrics_keys``,
``WandbLogger._wandb_init``.
"""
from __future__ import annotations

import csv
import netrc
import os
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from ..errors import ConfigError


def _wandb_key_available() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(mode: str = "auto", **kwargs: Any) -> WandbLogger:
    """A W&B logger that runs online with an API key and offline without one (``mode: auto``).

    ``WANDB_MODE`` in the environment (``offline``, ``disabled``) always wins.
    """
    if mode not in ("auto", "online", "offline"):
        raise ConfigError(f"logger.wandb.mode must be auto, online or offline, got {mode!r}")
    offline = mode == "offline" or (mode == "auto" and not _wandb_key_available())
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        offline = True
    logger = WandbLogger(offline=offline, **kwargs)
    # Lightning always passes wandb's deprecated ``anonymous`` setting, which makes wandb warn on every run
    logger._wandb_init.pop("anonymous", None)
    return logger


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``, except that a run resumed into its own directory keeps its rows.

    Lightning's deletes ``metrics.csv`` when its directory is not empty, so resuming with
    ``ckpt_path=`` into the same output directory would lose the curve up to the checkpoint.
    Set ``resume_step`` to the checkpoint's global step (``train`` does): rows logged before it
    stay, later ones (logged after the checkpoint by the run that stopped) are logged again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        header, kept = [], []
        if self.resume_step is not None and path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                kept = [row for row in reader if row.get("step") and int(row["step"]) < self.resume_step]
        with warnings.catch_warnings():
            if kept:  # its "previous log files will be deleted" is not true of this logger
                warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = super().experiment
        if kept:
            writer.metrics_keys = header
            with open(path, "w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=header)
                out.writeheader()
                out.writerows(kept)
        return writer
