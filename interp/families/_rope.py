"""Rotary facts from a Hugging Face config: per-layer bases, rotary dim, θ_k exactly as HF computes them.

Handles both config styles: ``rope_parameters`` (transformers ≥ 5; per layer type for Gemma 3 /
OLMo-3) and the older ``rope_theta`` + ``rope_scaling`` (+ Gemma 3's ``rope_local_base_freq``).
GPT-J keeps neither: its base is the constant 10000 of ``create_sinusoidal_positions`` and its
rotated width is ``rotary_dim``.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.families._facts import ADDING_A_FAMILY, Pairing, RotaryFacts, UnsupportedFamilyError

NO_ROPE = "no_rope"


def rope_parameters(cfg: Any, layer_type: str | None) -> dict[str, Any] | None:
    """The rope parameters dict of ``layer_type`` (or of the whole model), or ``None`` if absent."""
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict) and rp:
        if layer_type is not None and isinstance(rp.get(layer_type), dict):
            return dict(rp[layer_type])
        if "rope_theta" in rp or "rope_type" in rp:
            return dict(rp)
        return None
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:
        return None
    out: dict[str, Any] = {"rope_type": "default", "rope_theta": float(theta)}
    rs = getattr(cfg, "rope_scaling", None)
    if isinstance(rs, dict):
        out.update(rs)
        out["rope_type"] = rs.get("rope_type", rs.get("type", "default"))
    if layer_type == "sliding_attention" and getattr(cfg, "rope_local_base_freq", None):
        out = {"rope_type": "default", "rope_theta": float(cfg.rope_local_base_freq)}
    return out


def default_inv_freq(base: float, rotary_dim: int) -> Float[Tensor, " chunk"]:
    """θ_k = base^(−2k/d_rot), float32, computed as HF's default rope init does."""
    return 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(torch.float) / rotary_dim))


def _inv_freq(cfg: Any, params: dict[str, Any], rotary_dim: int, layer_type: str | None,
              per_type: bool) -> tuple[torch.Tensor, float]:
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        return default_inv_freq(float(params["rope_theta"]), rotary_dim), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise UnsupportedFamilyError(
            f"rope_type {rope_type!r} of model_type {getattr(cfg, 'model_type', '?')!r} is not known to "
            f"transformers' ROPE_INIT_FUNCTIONS; {ADDING_A_FAMILY}")
    fn = ROPE_INIT_FUNCTIONS[rope_type]
    if per_type and layer_type is not None:
        inv, scale = fn(cfg, None, layer_type=layer_type)
    else:
        inv, scale = fn(cfg, None)
    if inv.numel() != rotary_dim // 2:
        raise UnsupportedFamilyError(
            f"rope_type {rope_type!r} gives {inv.numel()} frequencies but rotary_dim is {rotary_dim}")
    return inv.float(), float(scale)


def rotary_facts(
    cfg: Any,
    *,
    head_dim: int,
    layer_types: Sequence[str],
    rotary_dim: int | None = None,
    pairing: Pairing = "half",
    nope_layers: Sequence[int] = (),
    fixed_base: float | None = None,
) -> RotaryFacts:
    """Build :class:`RotaryFacts` from ``cfg``.

    ``rotary_dim`` defaults to ``head_dim × partial_rotary_factor`` (from ``rope_parameters`` or
    the config). ``nope_layers`` get the rope key ``"no_rope"`` (θ = 0: no rotation).
    ``fixed_base``: a base the architecture hard-codes (GPT-J's 10000).
    """
    n_layers = len(layer_types)
    per_type = isinstance(getattr(cfg, "rope_parameters", None), dict) and any(
        isinstance(cfg.rope_parameters.get(t), dict) for t in set(layer_types))
    keys = [NO_ROPE if i in set(nope_layers) else str(t) for i, t in enumerate(layer_types)]
    inv_freq: dict[str, tuple[float, ...]] = {}
    att: dict[str, float] = {}
    rtypes: dict[str, str] = {}
    scaling: dict[str, dict[str, Any]] = {}
    base_of: dict[str, float | None] = {}
    d_rot = rotary_dim
    for key in dict.fromkeys(keys):
        if key == NO_ROPE:
            continue
        if fixed_base is not None:
            params: dict[str, Any] | None = {"rope_type": "default", "rope_theta": float(fixed_base)}
        else:
            params = rope_parameters(cfg, key if per_type else None)
        if params is None:
            raise UnsupportedFamilyError(
                f"model_type {getattr(cfg, 'model_type', '?')!r} is rotary but its config has no rope "
                f"parameters (rope_parameters / rope_theta) for layer type {key!r}; {ADDING_A_FAMILY}")
        prf = params.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", None))
        this = rotary_dim if rotary_dim is not None else int(head_dim * float(prf if prf is not None else 1.0))
        if d_rot is None:
            d_rot = this
        elif this != d_rot:
            raise UnsupportedFamilyError(
                f"per-layer-type rotary dims ({d_rot} vs {this}) are not supported; {ADDING_A_FAMILY}")
        inv, s = _inv_freq(cfg, params, this, key, per_type)
        inv_freq[key] = tuple(float(v) for v in inv.tolist())
        att[key] = s
        rtypes[key] = str(params.get("rope_type", "default"))
        scaling[key] = json.loads(json.dumps(params, default=str))
        base_of[key] = float(params.get("rope_theta", float("nan")))
    if d_rot is None:  # every layer is NoPE
        d_rot = rotary_dim if rotary_dim is not None else head_dim
    if NO_ROPE in keys:
        inv_freq[NO_ROPE] = tuple(0.0 for _ in range(d_rot // 2))
        att[NO_ROPE] = 1.0
        rtypes[NO_ROPE] = NO_ROPE
        scaling[NO_ROPE] = {}
        base_of[NO_ROPE] = None
    mpe = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    assert len(keys) == n_layers
    return RotaryFacts(
        rotary_dim=int(d_rot), pairing=pairing, layer_types=tuple(keys),
        bases=tuple(base_of[k] for k in keys), inv_freq=inv_freq, attention_scaling=att,
        rope_types=rtypes, scaling=scaling, max_position_embeddings=int(mpe) if mpe else None,
    )
