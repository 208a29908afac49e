"""Reading WikiText-2 lines from local files or the Hugging Face hub, and counting words."""
from __future__ import annotations

import hashlib
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import DataError

HUB_NAME = "Salesforce/wikitext"
HUB_CONFIG = "wikitext-2-v1"
SPLITS = ("train", "validation", "test")
PROBE_TIMEOUT_S = 3.0  # a working hub answers a HEAD in well under a second


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


def hub_unreachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub at ``endpoint`` does not answer one HEAD request within ``timeout`` s, or None if it does."""
    from huggingface_hub import get_session  # the hub's own client: same proxies, headers and offline check

    try:
        status = get_session().head(endpoint, timeout=timeout).status_code
    except Exception as err:  # DNS, refused, timeout, TLS, proxy: no hub either way
        return f"{type(err).__name__}: {err}"
    return f"HTTP {status}" if status >= 500 else None


@contextmanager
def hub_offline() -> Iterator[None]:
    """Put ``datasets`` and ``huggingface_hub`` in offline mode (local cache only) for the block."""
    import datasets
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def load_hub_lines(name: str = HUB_NAME, config: str = HUB_CONFIG) -> dict[str, list[str]]:
    """Load all three splits from the hub (its local cache if unreachable); explain the file route on failure."""
    problem: str | None = None
    try:
        import datasets

        # Probe first: on an unreachable hub load_dataset retries with backoff for ~25 s, warning each time.
        endpoint = datasets.config.HF_ENDPOINT
        if not datasets.config.HF_HUB_OFFLINE and (why := hub_unreachable(endpoint)):
            problem = f"{endpoint} is unreachable ({why}) and it is not in the local cache"
        with hub_offline() if problem else nullcontext():
            ds = datasets.load_dataset(name, config)
    except Exception as err:  # any hub/network failure gets the same actionable message
        problem = problem or f"{type(err).__name__}: {err}"
        raise DataError(
            f"could not load {name!r} ({config}) from the Hugging Face hub: {problem}\n"
            "Without hub access, pass the classic WikiText-2 files (wiki.train.tokens, wiki.valid.tokens, "
            "wiki.test.tokens from wikitext-2-v1.zip,\nMerity et al. 2016; line for line what the hub gives) with D "
            "the folder that holds them (../shared/data/wikitext-2 on the project's machines):\n"
            "  data.files.train=$D/wiki.train.tokens data.files.validation=$D/wiki.valid.tokens "
            "data.files.test=$D/wiki.test.tokens"
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
