"""Invertible layers with exact inverses and log-determinants, and the reversible stack."""
from .base import Bijection, BijectiveSequential, NotInvertibleError
from .linear import ActNorm, LULinear
from .reversible import COUPLINGS, ReversibleBlock, ReversibleStack

__all__ = [
    "COUPLINGS",
    "ActNorm",
    "Bijection",
    "BijectiveSequential",
    "LULinear",
    "NotInvertibleError",
    "ReversibleBlock",
    "ReversibleStack",
]
