"""Build a denoiser from a composed config (``model``, ``diffusion`` and ``data`` groups)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import nn

from ..diffusion.graph import build_graph
from ..errors import ConfigError
from .autoregressive import AutoregressiveLM
from .denoiser import Denoiser
from .trunks import MERGES, HybridTrunk, StandardTrunk, bijective_stack


def _standard_trunk(m: Mapping[str, Any]) -> nn.Module:
    return StandardTrunk(m["d_model"], m["cond_dim"], m["n_layers"], m["n_heads"], m["mlp_ratio"], m["dropout"],
                         mlp=m.get("mlp", "gelu"))


def _bijective_trunk(m: Mapping[str, Any]) -> nn.Module:
    return bijective_stack(m, m["n_layers"])


TRUNKS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "standard": _standard_trunk,
    "bijective": _bijective_trunk,
    "hybrid": HybridTrunk,
}
MODELS = (*TRUNKS, "ar")


def build_model(cfg: Mapping[str, Any], num_tokens: int | None = None) -> Denoiser | AutoregressiveLM:
    """Build the denoiser named by ``cfg.model.name`` for ``cfg.diffusion.graph``, or the AR baseline (``ar``).

    ``num_tokens`` (real tokens, ``[MASK]`` excluded) defaults to ``cfg.data.vocab_size − 1``:
    the tokenizer's last id is ``[MASK]``, which the absorbing graph owns.
    """
    m = cfg["model"]
    if m["name"] not in MODELS:
        raise ConfigError(f"unknown model.name={m['name']!r}; choose one of {sorted(MODELS)}")
    if num_tokens is None:
        num_tokens = int(cfg["data"]["vocab_size"]) - 1
    if m["name"] == "ar":
        return AutoregressiveLM(num_tokens, m["d_model"], m["cond_dim"], m["n_layers"], m["n_heads"], m["mlp_ratio"], m["dropout"],
                                m.get("mlp", "gelu"))
    graph = build_graph(cfg["diffusion"]["graph"], num_tokens)
    merge = m.get("merge", "residual")
    if merge not in MERGES:
        raise ConfigError(f"unknown model.merge={merge!r}; choose one of {list(MERGES)}")
    time_conditioning = bool(m.get("time_conditioning", True))
    if not time_conditioning and not graph.absorbing:
        raise ConfigError(
            "model.time_conditioning=false needs diffusion=absorb: under the uniform graph the true ratios "
            "change with the noise level, so the denoiser must see it"
        )
    return Denoiser(graph, TRUNKS[m["name"]](m), m["d_model"], m["cond_dim"], merge, time_conditioning)


def model_label(m: Mapping[str, Any]) -> str:
    """The model's name as runs and logs show it: ``model.name``, with ``_affine`` for affine coupling and ``_swiglu`` for the gated MLP."""
    label = f"{m['name']}_affine" if m.get("coupling") == "affine" and m["name"] in ("bijective", "hybrid") else str(m["name"])
    return label + ("_swiglu" if m.get("mlp") == "swiglu" else "")


def describe_model(cfg: Mapping[str, Any], model: Denoiser | AutoregressiveLM) -> str:
    """"N/M reversible blocks, P parameters (standard at the same size: Q)" for the build log."""
    from ..nn import ReversibleBlock

    m = cfg["model"]
    n_rev = sum(isinstance(mod, ReversibleBlock) for mod in model.modules())
    n_total = len(m["layers"]) if m["name"] == "hybrid" else m["n_layers"]
    params = sum(p.numel() for p in model.parameters())
    standard_cfg = {
        "model": {k: m[k] for k in ("d_model", "n_heads", "mlp_ratio", "dropout", "cond_dim")} | {"name": "standard", "n_layers": n_total},
        # the AR model's BOS row counts like [MASK]: it is compared with an absorbing-graph denoiser
        "diffusion": cfg.get("diffusion", {"graph": "absorb"}),
    }
    num_tokens = model.num_tokens if m["name"] == "ar" else model.graph.num_tokens
    reference = sum(p.numel() for p in build_model(standard_cfg, num_tokens).parameters())
    return f"{model_label(m)}: {n_rev}/{n_total} reversible blocks, {params:,} parameters (standard at the same size: {reference:,})"
