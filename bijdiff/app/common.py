"""Small pieces the train and eval applications share."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from ..errors import USER_ERRORS

log = logging.getLogger("bijdiff")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write to a temporary file and rename it, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """``payload`` as indented JSON, written atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def run_cli(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run an application; a user-fixable error prints one clear line and exits with status 2."""
    try:
        return fn(cfg)
    except USER_ERRORS as err:
        print(f"bijdiff: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def count_parameters(module: Any) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
