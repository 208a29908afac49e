"""Build a denoiser from a composed config (``model``, ``diffusion`` and ``data`` groups)."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..diffusion.graph import build_graph
from .denoiser import Denoiser
from .trunks import StandardTrunk
from ..errors import ConfigError


def _standard_trunk(m: Mapping[str, Any]) -> nn.Module:
    return StandardTrunk(m["d_model"], m["cond_dim"], m["n_layers"], m["n_heads"], m["mlp_ratio"], m["dropout"])


TRUNKS = {"standard": _standard_trunk}


def build_model(cfg: Mapping[str, Any], num_tokens: int | None = None) -> Denoiser:
    """Build the denoiser named by ``cfg.model.name`` for ``cfg.diffusion.graph``.

    ``num_tokens`` (real tokens, ``[MASK]`` excluded) defaults to ``cfg.data.vocab_size − 1``:
    the tokenizer's last id is ``[MASK]``, which the absorbing graph owns.
    """
    m = cfg["model"]
    if m["name"] not in TRUNKS:
        raise ConfigError(f"unknown model.name={m['name']!r}; choose one of {sorted(TRUNKS)}")
    if num_tokens is None:
        num_tokens = int(cfg["data"]["vocab_size"]) - 1
    graph = build_graph(cfg["diffusion"]["graph"], num_tokens)
    return Denoiser(graph, TRUNKS[m["name"]](m), m["d_model"], m["cond_dim"])
