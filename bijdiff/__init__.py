"""bijdiff: score-entropy discrete diffusion language models with invertible transformer denoisers."""
from .models import build_model

__version__ = "0.1.0"
__all__ = ["build_model", "__version__"]
