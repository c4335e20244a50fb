"""Exact description of a loaded model: :func:`model_spec` → :class:`ModelSpec` (+ :class:`RopeSpec`).

Everything here is read from the Hugging Face config (``bridge.original_model.config``), the HF
modules and the tokenizer — never from ``bridge.cfg.rotary_base`` (TransformerLens reports 10000
for SmolLM2, whose ``rope_theta`` is 100000).

RoPE (Su et al. 2021, *RoFormer*). The rotated part of a query/key vector (its first ``d_rot``
dims; ``d_rot < d_head`` is "partial rotary") is split into ``d_rot/2`` two-dimensional *chunks*.
Chunk ``k`` is rotated by the angle ``m·θ_k`` at position ``m``, with

    θ_k = base^(−2k/d_rot),   k = 0 … d_rot/2 − 1     (default RoPE; scaled variants such as
                                                      "linear", "llama3", "yarn" change θ_k)

so chunk 0 has the highest frequency (wavelength 2π) and the last chunk the lowest
(wavelength 2π·base^((d_rot−2)/d_rot)). Two pairing conventions exist:

* ``"half"`` (GPT-NeoX, Llama, Gemma, HF ``rotate_half``): chunk k = dims (k, k + d_rot/2);
* ``"adjacent"`` (GPT-J, GLM): chunk k = dims (2k, 2k+1).

For a chunk (x₁, x₂) the rotation is x₁' = x₁ cos(mθ) − x₂ sin(mθ), x₂' = x₂ cos(mθ) + x₁ sin(mθ)
(times the rope type's ``attention_scaling``, 1 for default RoPE).
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError

__all__ = ["ModelSpec", "RopeSpec", "model_spec", "NoRotaryError"]

Pairing = Literal["half", "adjacent"]


class NoRotaryError(InterpError, ValueError):
    """Raised when a RoPE analysis is asked of a model without rotary position embeddings."""


# --------------------------------------------------------------------------------------------
# RopeSpec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RopeSpec:
    """Rotary position embedding of a model, per layer.

    Attributes:
        d_head: head dimension.
        rotary_dim: number of rotated dims ``d_rot`` (the first ``d_rot`` dims of each head;
            ``d_head − d_rot`` trailing dims are not rotated).
        pairing: ``"half"`` (dim i ↔ i + d_rot/2) or ``"adjacent"`` (2k ↔ 2k+1).
        layer_types: per layer, the HF layer type (``"full_attention"``, ``"sliding_attention"``).
        bases: per layer, the rope base (``rope_theta``) used by that layer's type.
        inv_freq: per layer type, θ_k for k = 0 … d_rot/2 − 1 (radians per token), exactly as HF
            computes them (float32), including any rope scaling.
        attention_scaling: per layer type, the factor HF multiplies cos/sin by (1 unless yarn /
            longrope).
        rope_types: per layer type, the HF ``rope_type`` (``"default"``, ``"linear"``, …).
        scaling: per layer type, the raw HF rope parameters dict (JSON-able).
        sliding_window: window of sliding-attention layers (``None`` if none).
        max_position_embeddings: trained context length from the config.
    """

    d_head: int
    rotary_dim: int
    pairing: Pairing
    layer_types: tuple[str, ...]
    bases: tuple[float, ...]
    inv_freq: dict[str, tuple[float, ...]] = field(hash=False)
    attention_scaling: dict[str, float] = field(hash=False)
    rope_types: dict[str, str] = field(hash=False)
    scaling: dict[str, dict[str, Any]] = field(hash=False)
    sliding_window: int | None = None
    max_position_embeddings: int | None = None

    # ---- basic geometry ----------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.layer_types)

    @property
    def n_chunks(self) -> int:
        """Number of rotary chunks ``d_rot / 2``."""
        return self.rotary_dim // 2

    @property
    def n_pass(self) -> int:
        """Number of non-rotated dims ``d_head − d_rot``."""
        return self.d_head - self.rotary_dim

    @property
    def distinct_layer_types(self) -> tuple[str, ...]:
        seen: list[str] = []
        for t in self.layer_types:
            if t not in seen:
                seen.append(t)
        return tuple(seen)

    def layers_of_type(self, layer_type: str) -> list[int]:
        """Indices of the layers with this type."""
        return [i for i, t in enumerate(self.layer_types) if t == layer_type]

    def chunk_dims(self) -> Int[Tensor, "chunk 2"]:
        """Head dims of each chunk: row k = (first, second) dim of chunk k."""
        k = torch.arange(self.n_chunks)
        if self.pairing == "half":
            return torch.stack([k, k + self.n_chunks], dim=-1)
        return torch.stack([2 * k, 2 * k + 1], dim=-1)

    def _check_layer(self, layer: int) -> int:
        if not -self.n_layers <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range for a {self.n_layers}-layer model")
        return layer % self.n_layers

    def base(self, layer: int) -> float:
        """Rope base of ``layer``."""
        return self.bases[self._check_layer(layer)]

    def frequencies(self, layer: int = 0) -> Float[Tensor, "chunk"]:
        """θ_k of each chunk at ``layer`` (radians per token; chunk 0 is the fastest)."""
        t = self.layer_types[self._check_layer(layer)]
        return torch.tensor(self.inv_freq[t], dtype=torch.float32)

    def wavelengths(self, layer: int = 0) -> Float[Tensor, "chunk"]:
        """Wavelength 2π/θ_k in tokens of each chunk at ``layer``."""
        return (2 * math.pi) / self.frequencies(layer)

    def rotations_within(self, length: int, layer: int = 0) -> Float[Tensor, "chunk"]:
        """Number of full turns chunk k makes over ``length`` tokens: (length − 1)·θ_k / 2π."""
        return (length - 1) * self.frequencies(layer) / (2 * math.pi)

    # ---- chunk views -------------------------------------------------------------------------
    def chunks(self, x: Float[Tensor, "*batch d_head"]) -> Float[Tensor, "*batch chunk 2"]:
        """View the rotated dims of ``x`` as chunks: ``[..., k, :]`` = the 2 dims of chunk k."""
        if x.shape[-1] != self.d_head:
            raise ValueError(f"last dim {x.shape[-1]} != d_head {self.d_head}")
        r = x[..., : self.rotary_dim]
        if self.pairing == "half":
            return torch.stack([r[..., : self.n_chunks], r[..., self.n_chunks :]], dim=-1)
        return r.reshape(*r.shape[:-1], self.n_chunks, 2)

    def unchunk(
        self, c: Float[Tensor, "*batch chunk 2"], rest: Float[Tensor, "*batch n_pass"] | None = None
    ) -> Float[Tensor, "*batch d_head"]:
        """Inverse of :meth:`chunks` (``rest`` = the non-rotated dims, zeros if ``None``)."""
        if self.pairing == "half":
            r = torch.cat([c[..., 0], c[..., 1]], dim=-1)
        else:
            r = c.reshape(*c.shape[:-2], self.rotary_dim)
        if self.n_pass:
            if rest is None:
                rest = r.new_zeros(*r.shape[:-1], self.n_pass)
            r = torch.cat([r, rest], dim=-1)
        return r

    # ---- rotation ----------------------------------------------------------------------------
    def cos_sin(
        self,
        positions: Int[Tensor, "*pshape"],
        layer: int,
        dtype: torch.dtype = torch.float32,
        chunk_mask: Tensor | None = None,
    ) -> tuple[Float[Tensor, "*pshape chunk"], Float[Tensor, "*pshape chunk"]]:
        """cos(m·θ_k)·s and sin(m·θ_k)·s per position and chunk, computed like HF (float32).

        ``chunk_mask`` (bool ``[chunk]``): where False the chunk is not rotated (angle 0).
        """
        inv = self.frequencies(layer).to(positions.device)
        freqs = positions[..., None].float() * inv
        if chunk_mask is not None:
            freqs = torch.where(chunk_mask.to(freqs.device), freqs, torch.zeros_like(freqs))
        s = self.attention_scaling[self.layer_types[self._check_layer(layer)]]
        return (freqs.cos() * s).to(dtype), (freqs.sin() * s).to(dtype)

    def apply(
        self,
        x: Float[Tensor, "batch pos head d_head"],
        positions: Int[Tensor, "pos"] | Int[Tensor, "batch pos"] | None = None,
        layer: int = 0,
        *,
        chunk_mask: Tensor | None = None,
    ) -> Float[Tensor, "batch pos head d_head"]:
        """Rotate queries or keys ``x`` ([batch pos head d_head]) by RoPE at ``positions``.

        Reproduces HF's ``q·cos + rotate_half(q)·sin`` (same float32 angles, cos/sin cast to
        ``x.dtype``), so applied to ``hook_q``/``hook_k`` (after q/k-norm where the model has
        one) it gives ``hook_rot_q``/``hook_rot_k``. ``positions`` defaults to ``arange(pos)``.
        ``chunk_mask`` (bool ``[chunk]``) leaves the chunks where it is False un-rotated
        (p-RoPE style).
        """
        if x.shape[-1] != self.d_head:
            raise ValueError(f"last dim {x.shape[-1]} != d_head {self.d_head}")
        if positions is None:
            positions = torch.arange(x.shape[1], device=x.device)
        if positions.shape[-1] != x.shape[1]:
            raise ValueError(f"positions has {positions.shape[-1]} entries, x has {x.shape[1]} positions")
        cos, sin = self.cos_sin(positions, layer, x.dtype, chunk_mask)  # [(b) pos chunk]
        if cos.ndim == 2:
            cos, sin = cos[None], sin[None]
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [b pos 1 chunk]
        if self.pairing == "half":
            cos2, sin2 = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
            r = x[..., : self.rotary_dim]
            x1, x2 = r[..., : self.n_chunks], r[..., self.n_chunks :]
            rot = torch.cat([-x2, x1], dim=-1)
            out = r * cos2 + rot * sin2
        else:
            cos2 = cos.repeat_interleave(2, dim=-1)
            sin2 = sin.repeat_interleave(2, dim=-1)
            r = x[..., : self.rotary_dim]
            rot = torch.stack([-r[..., 1::2], r[..., 0::2]], dim=-1).flatten(-2)
            out = r * cos2 + rot * sin2
        if self.n_pass:
            out = torch.cat([out, x[..., self.rotary_dim :]], dim=-1)
        return out

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["layer_types"] = list(self.layer_types)
        d["bases"] = list(self.bases)
        d["inv_freq"] = {k: list(v) for k, v in self.inv_freq.items()}
        d["n_chunks"] = self.n_chunks
        return json.loads(json.dumps(d, default=str))


# --------------------------------------------------------------------------------------------
# ModelSpec
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts of a loaded model (see :func:`model_spec`).

    ``positional`` is one of ``"rope"``, ``"learned"`` (absolute learned embeddings, GPT-2),
    ``"none"`` (NoPE), ``"alibi"``, ``"shortformer"`` or ``"unknown"``.
    ``tokenizer_adds_bos``: whether the HF tokenizer as shipped inserts BOS itself (recorded
    by ``load_model``; TransformerLens' live tokenizer always does);
    ``default_prepend_bos``: TransformerLens' ``to_tokens`` default.
    ``attn_scale``: the factor multiplying q·k (1/√d_head, or ``query_pre_attn_scalar^-½``);
    ``attn_softcap``: tanh soft-capping of attention logits (Gemma 2) or ``None``.
    """

    name: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_mlp: int | None
    vocab: int
    n_ctx: int
    positional: str
    normalization: str
    activation: str
    qk_norm: bool
    attn_scale: float
    attn_softcap: float | None
    bos_token_id: int | None
    bos_token: str | None
    tokenizer_adds_bos: bool
    default_prepend_bos: bool
    rope: RopeSpec | None = None

    @property
    def group_size(self) -> int:
        """Query heads per KV head (query head h uses KV head h // group_size)."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        return head // self.group_size

    def require_rope(self) -> RopeSpec:
        """The :class:`RopeSpec`, or a :class:`NoRotaryError` naming the positional kind."""
        if self.rope is None:
            raise NoRotaryError(
                f"model {self.name!r} has no rotary position embeddings (positional encoding: "
                f"{self.positional!r}); RoPE analyses need a rotary model such as smollm2-135m, "
                "gemma3-270m or toy-offset-rope"
            )
        return self.rope

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "rope"}
        d["rope"] = None if self.rope is None else self.rope.to_json()
        return json.loads(json.dumps(d, default=str))


# --------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------

_CACHE: "weakref.WeakKeyDictionary[Any, ModelSpec]" = weakref.WeakKeyDictionary()

_ADJACENT_MODEL_TYPES = {"gptj", "glm", "chatglm", "glm4", "ernie4_5", "cohere", "cohere2"}


def _cfg_get(cfg: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def _text_config(cfg: Any) -> Any:
    get = getattr(cfg, "get_text_config", None)
    return get() if callable(get) else cfg


def _rope_parameters(hf_cfg: Any, layer_type: str | None) -> dict[str, Any] | None:
    rp = getattr(hf_cfg, "rope_parameters", None)
    if isinstance(rp, dict) and rp:
        if layer_type is not None and layer_type in rp and isinstance(rp[layer_type], dict):
            return dict(rp[layer_type])
        if "rope_theta" in rp or "rope_type" in rp:
            return dict(rp)
        return None
    theta = getattr(hf_cfg, "rope_theta", None)
    if theta is None:
        return None
    out: dict[str, Any] = {"rope_type": "default", "rope_theta": float(theta)}
    rs = getattr(hf_cfg, "rope_scaling", None)
    if isinstance(rs, dict):
        out.update(rs)
        out["rope_type"] = rs.get("rope_type", rs.get("type", "default"))
    if layer_type == "sliding_attention" and getattr(hf_cfg, "rope_local_base_freq", None):
        out = {"rope_type": "default", "rope_theta": float(hf_cfg.rope_local_base_freq)}
    return out


def _inv_freq(hf_cfg: Any, params: dict[str, Any], d_head: int, rotary_dim: int,
              layer_type: str | None, has_layer_types: bool) -> tuple[torch.Tensor, float]:
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        base = float(params["rope_theta"])
        inv = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(torch.float) / rotary_dim))
        return inv, 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    fn = ROPE_INIT_FUNCTIONS[rope_type]
    if has_layer_types and isinstance(getattr(hf_cfg, "rope_parameters", None), dict) and \
            layer_type in hf_cfg.rope_parameters:
        inv, scale = fn(hf_cfg, None, layer_type=layer_type)
    else:
        inv, scale = fn(hf_cfg, None)
    return inv.float(), float(scale)


def _rope_spec(bridge: Any, hf_cfg: Any, d_head: int, n_layers: int) -> RopeSpec | None:
    raw_types = getattr(hf_cfg, "layer_types", None)
    has_layer_types = isinstance(raw_types, (list, tuple)) and len(raw_types) == n_layers
    layer_types = tuple(str(t) for t in raw_types) if has_layer_types else ("full_attention",) * n_layers
    partial = float(_cfg_get(hf_cfg, "partial_rotary_factor", default=1.0))
    rotary_dim = int(_cfg_get(hf_cfg, "rotary_dim", default=0)) or int(d_head * partial)
    rp = getattr(hf_cfg, "rope_parameters", None)
    if isinstance(rp, dict) and "partial_rotary_factor" in rp:
        rotary_dim = int(d_head * float(rp["partial_rotary_factor"]))
    model_type = str(getattr(hf_cfg, "model_type", ""))
    adjacent = model_type in _ADJACENT_MODEL_TYPES or bool(getattr(bridge.cfg, "rotary_adjacent_pairs", False))
    inv_freq: dict[str, tuple[float, ...]] = {}
    scaling_f: dict[str, float] = {}
    rope_types: dict[str, str] = {}
    scaling: dict[str, dict[str, Any]] = {}
    base_of: dict[str, float] = {}
    for t in dict.fromkeys(layer_types):
        params = _rope_parameters(hf_cfg, t if has_layer_types else None)
        if params is None:
            return None
        lt_rot = rotary_dim
        if "partial_rotary_factor" in params:
            lt_rot = int(d_head * float(params["partial_rotary_factor"]))
        if lt_rot != rotary_dim:  # pragma: no cover - no such model in the repo
            raise NotImplementedError("per-layer-type rotary dims are not supported")
        inv, s = _inv_freq(hf_cfg, params, d_head, rotary_dim, t, has_layer_types)
        inv_freq[t] = tuple(float(v) for v in inv.tolist())
        scaling_f[t] = s
        rope_types[t] = str(params.get("rope_type", "default"))
        scaling[t] = json.loads(json.dumps(params, default=str))
        base_of[t] = float(params.get("rope_theta", float("nan")))
    sw = getattr(hf_cfg, "sliding_window", None)
    if not any("sliding" in t for t in layer_types) and not getattr(hf_cfg, "use_sliding_window", False):
        sw = None if model_type not in {"mistral"} else sw
    return RopeSpec(
        d_head=d_head,
        rotary_dim=rotary_dim,
        pairing="adjacent" if adjacent else "half",
        layer_types=layer_types,
        bases=tuple(base_of[t] for t in layer_types),
        inv_freq=inv_freq,
        attention_scaling=scaling_f,
        rope_types=rope_types,
        scaling=scaling,
        sliding_window=int(sw) if sw is not None else None,
        max_position_embeddings=_cfg_get(hf_cfg, "max_position_embeddings", "n_positions"),
    )


def _positional_kind(bridge: Any, hf_cfg: Any) -> str:
    kind = getattr(getattr(bridge, "cfg", None), "positional_embedding_type", None)
    explicit = getattr(hf_cfg, "positional_encoding", None) or getattr(hf_cfg, "interp_positional", None)
    if explicit:
        return str(explicit)
    if kind == "rotary":
        return "rope"
    if kind == "standard":
        # learned absolute embeddings; an all-zero (frozen) table means no positional encoding
        hf = getattr(bridge, "original_model", None)
        wpe = None
        if hf is not None:
            get_pe = getattr(hf, "get_position_embeddings", None)
            try:
                wpe = get_pe() if callable(get_pe) else None
            except (NotImplementedError, AttributeError):
                wpe = None
            if wpe is None:
                tr = getattr(hf, "transformer", None)
                wpe = getattr(tr, "wpe", None)
        if wpe is not None and hasattr(wpe, "weight") and not bool(wpe.weight.detach().abs().gt(0).any()):
            return "none"
        return "learned"
    if kind in ("alibi", "shortformer"):
        return str(kind)
    if kind in (None, "none", "nope"):
        return "none"
    return str(kind)


def _attn_module(bridge: Any, layer: int) -> Any:
    try:
        attn = bridge.blocks[layer].attn
    except (AttributeError, IndexError):
        return None
    return getattr(attn, "original_component", None)


def _bos(bridge: Any) -> tuple[int | None, str | None, bool]:
    tok = getattr(bridge, "tokenizer", None)
    if tok is None:
        return None, None, False
    bos_id = getattr(tok, "bos_token_id", None)
    bos = getattr(tok, "bos_token", None)
    adds = False
    info = getattr(bridge, "interp_info", None)
    if info is not None and "hf_tokenizer_adds_bos" in info.extra:
        # the shipped HF tokenizer's own policy, recorded by load_model before TransformerLens
        # swapped in a BOS-adding copy
        adds = bool(info.extra["hf_tokenizer_adds_bos"])
    elif bos_id is not None:
        try:
            ids = tok("a")["input_ids"]
            adds = len(ids) > 0 and int(ids[0]) == int(bos_id)
        except Exception:  # pragma: no cover - exotic tokenizers
            adds = bool(getattr(tok, "add_bos_token", False))
    return (int(bos_id) if bos_id is not None else None), (str(bos) if bos is not None else None), adds


def model_spec(model: Any) -> ModelSpec:
    """Describe ``model`` (a ``TransformerBridge``) exactly, from its HF config and modules.

    Cached per model object. Raises ``TypeError`` for objects without ``cfg``.
    """
    try:
        return _CACHE[model]
    except (KeyError, TypeError):
        pass
    if not hasattr(model, "cfg"):
        raise TypeError(f"model_spec expects a TransformerBridge, got {type(model).__name__}")
    cfg = model.cfg
    hf = getattr(model, "original_model", None)
    hf_cfg = _text_config(hf.config) if hf is not None and hasattr(hf, "config") else cfg
    n_layers = int(_cfg_get(hf_cfg, "num_hidden_layers", "n_layer", default=cfg.n_layers))
    n_heads = int(_cfg_get(hf_cfg, "num_attention_heads", "n_head", default=cfg.n_heads))
    n_kv = int(_cfg_get(hf_cfg, "num_key_value_heads", default=0) or
               getattr(cfg, "n_key_value_heads", None) or n_heads)
    d_model = int(_cfg_get(hf_cfg, "hidden_size", "n_embd", default=cfg.d_model))
    d_head = int(_cfg_get(hf_cfg, "head_dim", default=0) or d_model // n_heads)
    d_mlp = _cfg_get(hf_cfg, "intermediate_size", "n_inner", default=getattr(cfg, "d_mlp", None))
    if d_mlp is None and str(getattr(hf_cfg, "model_type", "")) == "gpt2":
        d_mlp = 4 * d_model
    vocab = int(_cfg_get(hf_cfg, "vocab_size", default=cfg.d_vocab))
    n_ctx = int(_cfg_get(hf_cfg, "max_position_embeddings", "n_positions", default=cfg.n_ctx))
    positional = _positional_kind(model, hf_cfg)
    attn0 = _attn_module(model, 0)
    scale = getattr(attn0, "scaling", None)
    if scale is None:
        qpas = getattr(hf_cfg, "query_pre_attn_scalar", None)
        scale = float(qpas) ** -0.5 if qpas else d_head**-0.5
        if getattr(hf_cfg, "scale_attn_weights", True) is False:
            scale = 1.0
    softcap = getattr(attn0, "attn_logit_softcapping", None)
    if softcap is None:
        softcap = getattr(hf_cfg, "attn_logit_softcapping", None)
    qk_norm = attn0 is not None and (getattr(attn0, "q_norm", None) is not None or
                                     getattr(attn0, "q_layernorm", None) is not None)
    bos_id, bos, adds = _bos(model)
    rope = _rope_spec(model, hf_cfg, d_head, n_layers) if positional == "rope" else None
    if positional == "rope" and rope is None:
        raise ValueError(f"model {cfg.model_name!r} is rotary but its HF config has no rope parameters")
    spec = ModelSpec(
        name=str(getattr(cfg, "model_name", "") or getattr(hf_cfg, "_name_or_path", "")),
        architecture=str(getattr(hf_cfg, "model_type", "unknown")),
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=d_head,
        d_model=d_model,
        d_mlp=int(d_mlp) if d_mlp is not None else None,
        vocab=vocab,
        n_ctx=n_ctx,
        positional=positional,
        normalization=str(getattr(cfg, "normalization_type", None) or "unknown"),
        activation=str(getattr(cfg, "act_fn", None) or _cfg_get(hf_cfg, "hidden_act", "hidden_activation",
                                                              "activation_function", default="unknown")),
        qk_norm=bool(qk_norm),
        attn_scale=float(scale),
        attn_softcap=float(softcap) if softcap is not None else None,
        bos_token_id=bos_id,
        bos_token=bos,
        tokenizer_adds_bos=adds,
        default_prepend_bos=bool(getattr(cfg, "default_prepend_bos", True)),
        rope=rope,
    )
    try:
        _CACHE[model] = spec
    except TypeError:  # pragma: no cover
        pass
    return spec
