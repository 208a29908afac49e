"""Reading WikiText-2 lines from local files or the Hugging Face hub, and counting words."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from ..errors import DataError

HUB_NAME = "Salesforce/wikitext"
HUB_CONFIG = "wikitext-2-v1"
SPLITS = ("train", "validation", "test")


def read_lines(path: str | Path) -> list[str]:
    """Read one WikiText line per text line, whitespace-stripped (blank lines kept as '')."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path} (set data.files.<split> to an existing file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read data file {path}: {err} (it must be UTF-8 text)") from err
    if not text.strip():
        raise DataError(f"data file is empty: {path}")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.strip() for line in lines]


def load_hub_lines(name: str = HUB_NAME, config: str = HUB_CONFIG) -> dict[str, list[str]]:
    """Load all three splits from the hub with ``datasets``; explain the offline route on failure."""
    try:
        import datasets

        ds = datasets.load_dataset(name, config)
    except Exception as err:  # any hub/network failure gets the same actionable message
        raise DataError(
            f"could not load {name!r} ({config}) from the Hugging Face hub: {type(err).__name__}: {err}\n"
            "On a machine without hub access pass local WikiText files instead, e.g.\n"
            "  data.files.train=path/to/wiki.train.tokens data.files.validation=path/to/wiki.valid.tokens "
            "data.files.test=path/to/wiki.test.tokens"
        ) from err
    return {split: [row.rstrip("\n").strip() for row in ds[split]["text"]] for split in SPLITS}


def count_words(lines: Sequence[str]) -> int:
    """The classic WikiText word count: whitespace-separated words plus one ``<eos>`` per line."""
    return sum(len(line.split()) + 1 for line in lines)


def lines_digest(lines: Sequence[str]) -> str:
    """A sha256 of the lines' content, the data half of every cache key."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
