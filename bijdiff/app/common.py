"""Small pieces the train and eval applications share."""
from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, Callable

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from ..errors import USER_ERRORS

log = logging.getLogger("bijdiff")


def run_cli(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an application; a user-fixable error prints one clear line and exits with status 2."""
    try:
        return fn(cfg)
    except USER_ERRORS as err:
        message = str(err)
    except MissingMandatoryValue as err:
        example = "<run>/checkpoints/best.ckpt" if err.full_key == "ckpt_path" else "VALUE"
        message = f"{err.full_key} is required: add {err.full_key}={example} to the command"
    print(f"bijdiff: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


# third-party messages printed on every run that tell a bijdiff user nothing they can act on,
# by the logger that emits them (a logger's filters apply to the records it creates)
_NOTICES = {
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:", "was configured so 100% of the batches"),
    "lightning.pytorch.trainer.connectors.checkpoint_connector": ("`weights_only` was not set",),
}


class _DropNotice(logging.Filter):
    def __init__(self, texts: tuple[str, ...]) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.texts)


def quiet_third_party_notices() -> None:
    """Silence the tips and deprecations Lightning and PyTorch print on every run (idempotent)."""
    for name, texts in _NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) for f in logger.filters):
            logger.addFilter(_DropNotice(texts))
    # Lightning's pytree helper uses what torch deprecated; nothing a user can change
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def count_parameters(module: Any) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
