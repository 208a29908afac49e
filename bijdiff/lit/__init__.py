"""Lightning glue: the training module, EMA, progress and loggers."""
from .ema import EMA
from .module import DiffusionLM

__all__ = ["EMA", "DiffusionLM"]
