"""Lightning glue: the training module, EMA, progress and loggers."""
from .ema import EMA
from .module import LitLanguageModel

__all__ = ["EMA", "LitLanguageModel"]
