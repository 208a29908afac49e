"""Logger factories that need a decision at run time."""
from __future__ import annotations

import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger
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
    return WandbLogger(offline=offline, **kwargs)
