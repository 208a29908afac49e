"""A run's output directory: never another run's, never two runs at once, nothing left by a failed start.

Hydra only creates the directory (``conf/hydra/default.yaml`` turns off its own config copy and
log file); :func:`claim_run_directory` decides whether this run may write there before anything
is written, then records the composed config and the log file itself.
"""
from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..io import write_text_atomic

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger("bijdiff")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def launch_rank() -> int:
    """This process's global rank as the launcher set it (0 when not launched as a distributed job)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


class RunDirectory:
    """The directory a training run writes to, claimed for this process until :meth:`release`."""

    def __init__(self, path: str | os.PathLike, resume_from: str | None = None, task: str = "train") -> None:
        self.path = Path(path).expanduser().resolve()
        self.resume_from, self.task = resume_from, task
        self.started = False  # set when training begins; a failure before it leaves no directory behind
        self._lock_fd: int | None = None
        self._log_handler: logging.Handler | None = None
        self.fresh = False

    def claim(self) -> None:
        """Lock the directory and refuse it if it holds another run; raise ``ConfigError`` saying what to do."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        self.fresh = not any(self.path.iterdir())
        if self.fresh:
            return
        if self.task != "train":
            self.release()
            raise ConfigError(f"{self.path} already holds files ({_describe(self.path)}); an {self.task} run writes "
                              "into a directory of its own: leave hydra.run.dir at its default or name a new one")
        if self.resume_from is None:
            self.release()
            raise ConfigError(
                f"{self.path} already holds a run ({_describe(self.path)}); a new run never writes into it. "
                f"To continue that run pass ckpt_path={self.path / 'checkpoints' / 'last.ckpt'} (it resumes in place), "
                "or start a new one in another directory (hydra.run.dir=..., or the default timestamped one)")
        if self.resume_from == "last":  # Lightning's newest checkpoint in this directory
            return
        ckpt = Path(self.resume_from).expanduser().resolve()
        if self.path not in ckpt.parents:
            self.release()
            raise ConfigError(
                f"{self.path} already holds another run ({_describe(self.path)}), not the one {ckpt} belongs to. "
                f"Resume into that run's own directory (hydra.run.dir={ckpt.parent.parent}) or into a new one")

    def _lock(self) -> None:
        if fcntl is None:
            log.warning("this platform has no fcntl: a second run started on %s at the same time is not detected",
                        self.path)
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"{self.path} is in use by another training run right now; wait for it to finish, "
                              "or give this run its own directory (hydra.run.dir=...)") from None
        self._lock_fd = fd

    def record(self, cfg: DictConfig) -> None:
        """Write the composed config (``.hydra/``, as Hydra would) and send the log to ``<task>.log``."""
        try:
            from hydra.core.hydra_config import HydraConfig

            hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
        except ImportError:
            hydra_cfg = None
        log_name = hydra_cfg.job.name if hydra_cfg is not None else self.task
        if launch_rank() == 0:
            record = self.path / ".hydra"
            write_text_atomic(record / "config.yaml", OmegaConf.to_yaml(cfg))
            if hydra_cfg is not None:
                write_text_atomic(record / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))
                write_text_atomic(record / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
        handler = logging.FileHandler(self.path / f"{log_name}.log")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)
        self._log_handler = handler

    def release(self, failed: bool = False) -> None:
        """Close the log, drop the lock; after a failure before training, remove what this run created."""
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        if failed and self.fresh and not self.started:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None


def _describe(path: Path) -> str:
    ckpts = sorted(p.name for p in (path / "checkpoints").glob("*.ckpt"))
    if ckpts:
        return "checkpoints " + ", ".join(ckpts)
    return "files " + ", ".join(sorted(p.name for p in path.iterdir())[:5])


@contextmanager
def claim_run_directory(cfg: DictConfig, resume_from: str | None, task: str = "train") -> Iterator[RunDirectory]:
    """Claim ``cfg.paths.output_dir`` for this ``train`` or ``eval`` run (rank 0 only; other ranks write beside it)."""
    run = RunDirectory(cfg.paths.output_dir, resume_from, task)
    if launch_rank() == 0:
        run.claim()
    try:
        run.record(cfg)
        yield run
    except BaseException:
        run.release(failed=True)
        raise
    run.release()
