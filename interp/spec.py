"""Exact description of a loaded model: :func:`model_spec` → :class:`ModelSpec` (+ :class:`RopeSpec`).

Architecture facts come from :func:`interp.families.family_of` (the one place that reads the
Hugging Face config), BOS facts from the tokenizer — never from ``bridge.cfg.rotary_base``
(TransformerLens reports 10000 for SmolLM2, whose ``rope_theta`` is 100000).

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
from interp.families import Family, family_of, hf_config
from interp.provenance import model_name
from interp.types import Model

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
        windows: per layer, the sliding window (key s visible from query t iff t − s < window)
            or ``None``; empty when unknown (synthetic specs).
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
    windows: tuple[int | None, ...] = ()

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

    def window(self, layer: int) -> int | None:
        """Sliding window of ``layer`` (``None``: full causal attention)."""
        layer = self._check_layer(layer)
        if self.windows:
            return self.windows[layer]
        return self.sliding_window if "sliding" in self.layer_types[layer] else None

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
        d["windows"] = list(self.windows)
        d["inv_freq"] = {k: list(v) for k, v in self.inv_freq.items()}
        d["n_chunks"] = self.n_chunks
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RopeSpec":
        """Rebuild from :meth:`to_json` (JSON floats round-trip exactly, so ``inv_freq`` is
        unchanged)."""
        return cls(
            d_head=int(d["d_head"]), rotary_dim=int(d["rotary_dim"]), pairing=d["pairing"],
            layer_types=tuple(d["layer_types"]), bases=tuple(float(b) for b in d["bases"]),
            inv_freq={k: tuple(float(x) for x in v) for k, v in d["inv_freq"].items()},
            attention_scaling={k: float(v) for k, v in d["attention_scaling"].items()},
            rope_types=dict(d["rope_types"]), scaling=dict(d["scaling"]), sliding_window=d.get("sliding_window"),
            max_position_embeddings=d.get("max_position_embeddings"), windows=tuple(d.get("windows") or ()))


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
    ``attn_softcap``: tanh soft-capping of attention logits (Gemma 2) or ``None``;
    ``attn_scales``: the q·k factor per layer (differs from ``attn_scale`` only for GPT-2's
    ``scale_attn_by_inverse_layer_idx``); ``family``: every architecture fact
    (:class:`interp.families.Family`).
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
    attn_scales: tuple[float, ...] = ()
    family: Family | None = field(default=None, compare=False, repr=False)

    def scale(self, layer: int) -> float:
        """The factor multiplying q·k in ``layer``."""
        return self.attn_scales[layer] if self.attn_scales else self.attn_scale

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
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("rope", "family")}
        d["rope"] = None if self.rope is None else self.rope.to_json()
        d["family"] = None if self.family is None else self.family.to_json()
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelSpec":
        """Rebuild from :meth:`to_json` (e.g. the spec an :class:`~interp.capture.ActivationStore`
        records); ``family`` is not rebuilt (``None``)."""
        skip = ("rope", "family", "attn_scales")
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k not in skip and k in d}
        return cls(**kw, rope=None if d.get("rope") is None else RopeSpec.from_json(d["rope"]),
                   attn_scales=tuple(float(x) for x in d.get("attn_scales") or ()))


# --------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------

_CACHE: "weakref.WeakKeyDictionary[Any, ModelSpec]" = weakref.WeakKeyDictionary()


def _rope_spec(fam: Family) -> RopeSpec | None:
    """The :class:`RopeSpec` of a family's :class:`~interp.families.RotaryFacts` (``None`` if not rotary)."""
    r = fam.rotary
    if r is None:
        return None
    windows = tuple(fam.sliding_window)
    first = next((w for w in windows if w is not None), None)
    return RopeSpec(
        d_head=fam.head_dim,
        rotary_dim=r.rotary_dim,
        pairing="adjacent" if r.pairing == "interleaved" else "half",
        layer_types=r.layer_types,
        bases=tuple(float("nan") if b is None else float(b) for b in r.bases),
        inv_freq=dict(r.inv_freq),
        attention_scaling=dict(r.attention_scaling),
        rope_types=dict(r.rope_types),
        scaling=dict(r.scaling),
        sliding_window=first,
        max_position_embeddings=r.max_position_embeddings,
        windows=windows,
    )


def _positional_kind(bridge: Any, fam: Family) -> str:
    if fam.declared_positional:
        return fam.declared_positional
    if fam.rotary is not None:
        return "rope"
    if fam.learned_positions:
        # learned absolute embeddings; an all-zero (frozen) table means no positional encoding
        hf = getattr(bridge, "original_model", None)
        wpe = _module(hf, fam.paths.pos_embed) if hf is not None and fam.paths.pos_embed else None
        if wpe is not None and hasattr(wpe, "weight") and not bool(wpe.weight.detach().abs().gt(0).any()):
            return "none"
        return "learned"
    return "none"


def _module(root: Any, path: str) -> Any:
    m = root
    for part in path.split("."):
        m = getattr(m, part, None)
        if m is None:
            return None
    return m


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


def model_spec(model: Model) -> ModelSpec:
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
    fam = family_of(model)
    hf_cfg = hf_config(model)
    positional = _positional_kind(model, fam)
    bos_id, bos, adds = _bos(model)
    rope = _rope_spec(fam) if positional == "rope" else None
    spec = ModelSpec(
        name=model_name(model),
        architecture=fam.model_type,
        n_layers=fam.n_layers,
        n_heads=fam.n_heads,
        n_kv_heads=fam.n_kv_heads,
        d_head=fam.head_dim,
        d_model=fam.d_model,
        d_mlp=fam.d_mlp,
        vocab=fam.vocab_size,
        n_ctx=int(fam.n_ctx if fam.n_ctx is not None else cfg.n_ctx),
        positional=positional,
        normalization="RMS" if fam.norm == "rms" else "LN",
        activation=fam.activation,
        qk_norm=fam.qk_norm is not None,
        attn_scale=float(fam.attention_scale),
        attn_softcap=fam.attn_softcap,
        bos_token_id=bos_id,
        bos_token=bos,
        tokenizer_adds_bos=adds,
        default_prepend_bos=bool(getattr(cfg, "default_prepend_bos", True)),
        rope=rope,
        attn_scales=tuple(float(x) for x in fam.attention_scales),
        family=fam,
    )
    try:
        _CACHE[model] = spec
    except TypeError:  # pragma: no cover
        pass
    return spec
