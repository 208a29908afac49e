"""Discrete diffusion in pure torch: graphs, noise schedules, the DWDSE loss and likelihoods."""
from .graph import NEVER, Absorbing, build_graph
from .likelihood import elbo_nats
from .loss import dwdse, stratified_times
from .noise import LogLinearNoise, Noise, build_noise

__all__ = [
    "NEVER",
    "Absorbing",
    "LogLinearNoise",
    "Noise",
    "build_graph",
    "build_noise",
    "dwdse",
    "elbo_nats",
    "stratified_times",
]
