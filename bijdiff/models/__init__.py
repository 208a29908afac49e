"""Denoisers: embedding + trunk + head."""
from .build import build_model, describe_model, model_label
from .denoiser import Denoiser
from .trunks import StandardTrunk, TransformerBlock

__all__ = ["Denoiser", "StandardTrunk", "TransformerBlock", "build_model", "describe_model", "model_label"]
