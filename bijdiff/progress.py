"""Plain progress lines, one format for training, evaluation and sampling: ``what done/total elapsed eta``."""
from __future__ import annotations

import sys
import time


def clock(seconds: float) -> str:
    """``H:MM:SS``."""
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(what: str, done: int, total: int | None, elapsed: float, counted: int | None = None, details: str = "") -> str:
    """``{what} {done}/{total}{details} elapsed H:MM:SS eta H:MM:SS``.

    The ETA extrapolates the rate of the ``counted`` units done in ``elapsed`` (default ``done``;
    fewer for a resumed run, whose clock started at its own first step).
    """
    counted = done if counted is None else counted
    of = f"/{total}" if total else ""
    eta = f" eta {clock(elapsed / counted * (total - done))}" if total and counted > 0 else ""
    return f"{what} {done}{of}{details} elapsed {clock(elapsed)}{eta}"


class Progress:
    """Progress of a loop over ``total`` units on stderr (metrics output stays clean), each tenth of the work."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total = what, max(1, total)
        self.start = time.perf_counter()
        self._tenths = 0

    def update(self, done: int) -> None:
        """Report ``done`` units finished, if that completes another tenth of the work."""
        tenths = 10 * done // self.total
        if tenths > self._tenths:
            self._tenths = tenths
            print(progress_line(self.what, done, self.total, time.perf_counter() - self.start), file=sys.stderr, flush=True)
