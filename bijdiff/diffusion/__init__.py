"""Discrete diffusion in pure torch: graphs, noise schedules, the DWDSE loss, likelihoods, samplers."""
from .contract import LogitScoreModel, ScoreModel
from .graph import GRAPHS, NEVER, Absorbing, Graph, Uniform, build_graph
from .likelihood import elbo_nats, exact_log_likelihood, ordered_sigma, position_log_probs
from .loss import dwdse, stratified_times
from .noise import NOISES, GeometricNoise, LogLinearNoise, Noise, build_noise
from .sampling import (
    SAMPLERS, confident_counts, draw_dtype, given_mask, reverse_schedule, sample, sample_categorical, unmask_probabilities,
)

__all__ = [
    "GRAPHS",
    "NEVER",
    "NOISES",
    "SAMPLERS",
    "ScoreModel",
    "Absorbing",
    "GeometricNoise",
    "Graph",
    "LogLinearNoise",
    "LogitScoreModel",
    "Noise",
    "Uniform",
    "build_graph",
    "build_noise",
    "confident_counts",
    "draw_dtype",
    "dwdse",
    "elbo_nats",
    "exact_log_likelihood",
    "given_mask",
    "ordered_sigma",
    "position_log_probs",
    "reverse_schedule",
    "sample",
    "sample_categorical",
    "stratified_times",
    "unmask_probabilities",
]
