"""The architecture facts of a decoder family: :class:`Family`, :class:`RotaryFacts`, :class:`ModulePaths`.

These are plain frozen dataclasses; :func:`interp.families.family_of` fills them from a Hugging
Face config (adapters in :mod:`interp.families._adapters`). Every consumer of architecture facts
(``interp.spec``, the RoPE analyses, the zoo, the report, ``circuits.PatchableModel``) reads them
from here and nowhere else.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from interp.errors import InterpError

__all__ = ["Family", "RotaryFacts", "ModulePaths", "UnsupportedFamilyError", "ADDING_A_FAMILY"]

ADDING_A_FAMILY = 'see "Adding a model family" in CONTRIBUTING.md'

Norm = Literal["rms", "layer"]
Placement = Literal["pre", "sandwich", "post"]
Parallel = Literal["shared_norm", "two_norms"]
QKNorm = Literal["head", "proj"]
FusedQKV = Literal["neox_per_head", "phi3", "gpt2_conv1d"]
Pairing = Literal["half", "interleaved"]


class UnsupportedFamilyError(InterpError, NotImplementedError):
    """The model's architecture (``model_type``) or one of its options has no family adapter."""


@dataclass(frozen=True)
class RotaryFacts:
    """Rotary position embedding (Su et al. 2021, arXiv:2104.09864) of a model, per layer.

    Chunk ``k`` of the rotated dims is turned by ``m·θ_k`` at position ``m`` with
    ``θ_k = base^(−2k/d_rot)`` for default RoPE (scaled rope types change θ_k; ``inv_freq`` holds
    them exactly as HF computes them, float32).

    Attributes:
        rotary_dim: number of rotated dims ``d_rot`` — the first ``d_rot`` dims of every head
            (partial rotary: NeoX ``rotary_pct``, GPT-J ``rotary_dim``, ``partial_rotary_factor``).
        pairing: ``"half"`` (dims k and k + d_rot/2, HF ``rotate_half``) or ``"interleaved"``
            (dims 2k and 2k+1, GPT-J ``rotate_every_two``).
        layer_types: per layer, the rope key of that layer (HF ``layer_types`` entry, or
            ``"no_rope"`` for a layer that applies no rotary embedding).
        bases: per layer, the base ``rope_theta`` (``None`` for a NoPE layer).
        inv_freq: per rope key, θ_k for k = 0 … d_rot/2 − 1 (all zeros for ``"no_rope"``).
        attention_scaling: per rope key, the factor HF multiplies cos/sin by (1 unless yarn/longrope).
        rope_types: per rope key, HF's ``rope_type`` (``"default"``, ``"linear"``, ``"llama3"``, …).
        scaling: per rope key, the raw rope parameters (JSON-able).
        max_position_embeddings: trained context length from the config.
    """

    rotary_dim: int
    pairing: Pairing
    layer_types: tuple[str, ...]
    bases: tuple[float | None, ...]
    inv_freq: dict[str, tuple[float, ...]] = field(hash=False)
    attention_scaling: dict[str, float] = field(hash=False)
    rope_types: dict[str, str] = field(hash=False)
    scaling: dict[str, dict[str, Any]] = field(hash=False)
    max_position_embeddings: int | None = None

    @property
    def nope_layers(self) -> tuple[int, ...]:
        """Layers that apply no rotary embedding (interleaved NoPE layers)."""
        return tuple(i for i, b in enumerate(self.bases) if b is None)


@dataclass(frozen=True)
class ModulePaths:
    """Where the HF modules of a family live (dotted attribute paths).

    ``layers`` is relative to the ``*ForCausalLM`` model; every other per-layer name is relative to
    one decoder layer (``attn``, norms, ``mlp``) or to its attention / MLP module (projections).
    ``None`` means the family has no such module. Fused projections: ``qkv`` (then ``q``/``k``/``v``
    are ``None``) and ``gate_up`` (then ``gate``/``up`` are ``None``).
    """

    embed: str
    layers: str
    final_norm: str
    lm_head: str
    attn: str
    mlp: str
    o_proj: str
    down: str
    pos_embed: str | None = None
    attn_norm: str | None = None
    mlp_norm: str | None = None
    post_attn_norm: str | None = None
    post_mlp_norm: str | None = None
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None
    q_norm: str | None = None
    k_norm: str | None = None
    gate: str | None = None
    up: str | None = None
    gate_up: str | None = None


@dataclass(frozen=True)
class Family:
    """Everything interp needs to know about a decoder architecture, read from its HF config.

    Geometry: ``n_layers``, ``d_model``, ``n_heads``, ``n_kv_heads`` (GQA/MQA: query head h reads
    KV head ``h // (n_heads // n_kv_heads)``), ``head_dim``, ``d_mlp``, ``vocab_size``, ``n_ctx``.

    Norms: ``norm`` ("rms" or "layer"), ``norm_eps``, ``norm_offset`` (1.0 where the scale is
    ``1 + w``, Gemma; else 0.0), ``norm_bias`` (LayerNorm with a bias). ``placement``: ``"pre"``
    (x + f(norm(x))), ``"sandwich"`` (x + norm₂(f(norm₁(x))), Gemma 2/3) or ``"post"``
    (x + norm(f(x)), OLMo-2). ``parallel``: ``None`` (sequential), ``"shared_norm"`` (attention and
    MLP read the same ``norm(x)``: Phi, GPT-J, StableLM's parallel option) or ``"two_norms"``
    (separate norms of the same x: GPT-NeoX ``use_parallel_residual``).

    Attention: ``qk_norm`` (``None``, ``"head"`` = over each head's d_head, ``"proj"`` = over the
    whole projection, OLMo-2) of kind ``qk_norm_kind``; ``qk_norm_per_head_weights`` (StableLM keeps
    one norm per head); ``rotary`` (:class:`RotaryFacts` or ``None``); ``fused_qkv``;
    ``attn_bias`` (q/k/v biases), ``o_bias``; ``attention_scale`` (the factor on q·k, layer 0) and
    ``attention_scales`` (per layer; GPT-2's ``scale_attn_by_inverse_layer_idx``);
    ``attn_softcap`` (cap·tanh(s/cap) of attention logits, Gemma 2); ``layer_types``;
    ``sliding_window`` (per layer, the window or ``None``: key j visible from query i iff
    ``i − j < window``).

    MLP: ``gated_mlp`` (down(act(gate x) ⊙ up x)), ``fused_gate_up`` (Phi-3 ``gate_up_proj``, gate
    first), ``activation`` (HF name), ``mlp_bias``.

    Stream: ``embed_scale`` (token embeddings × this; Gemma √d_model cast to the model dtype,
    Granite ``embedding_multiplier``), ``learned_positions`` (GPT-2 ``wpe``),
    ``residual_multiplier`` (Granite: x + m·f(x)), ``final_softcap``, ``logits_scaling`` (logits are
    divided by it, Granite), ``tied_embeddings``, ``lm_head_bias`` (Phi, GPT-J),
    ``declared_positional`` (a ``positional_encoding`` / ``interp_positional`` label the config
    itself carries, e.g. written by the zoo; ``None`` if absent).
    """

    model_type: str
    family: str
    architecture: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_mlp: int
    vocab_size: int
    n_ctx: int | None
    norm: Norm
    norm_eps: float
    norm_offset: float
    norm_bias: bool
    placement: Placement
    parallel: Parallel | None
    qk_norm: QKNorm | None
    qk_norm_kind: Norm | None
    qk_norm_per_head_weights: bool
    rotary: RotaryFacts | None
    fused_qkv: FusedQKV | None
    fused_gate_up: bool
    gated_mlp: bool
    activation: str
    attn_bias: bool
    o_bias: bool
    mlp_bias: bool
    lm_head_bias: bool
    attn_softcap: float | None
    final_softcap: float | None
    layer_types: tuple[str, ...]
    sliding_window: tuple[int | None, ...]
    attention_scale: float
    attention_scales: tuple[float, ...]
    embed_scale: float
    residual_multiplier: float
    logits_scaling: float
    tied_embeddings: bool
    learned_positions: bool
    paths: ModulePaths = field(hash=False)
    notes: tuple[str, ...] = ()
    declared_positional: str | None = None

    # ---- derived -------------------------------------------------------------------------------
    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        """KV head read by query head ``head``."""
        return head // self.group_size

    @property
    def positional(self) -> str:
        """``"rope"``, ``"learned"`` or ``"none"`` (as declared by the config)."""
        if self.rotary is not None:
            return "rope"
        return "learned" if self.learned_positions else "none"

    @property
    def has_sliding_window(self) -> bool:
        return any(w is not None for w in self.sliding_window)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d, default=str, allow_nan=True))

    def check_geometry(self) -> None:
        """Raise :class:`UnsupportedFamilyError` when the geometry is inconsistent."""
        if self.n_heads % self.n_kv_heads:
            raise UnsupportedFamilyError(
                f"{self.model_type}: n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.rotary is not None and (self.rotary.rotary_dim % 2 or self.rotary.rotary_dim > self.head_dim):
            raise UnsupportedFamilyError(
                f"{self.model_type}: rotary_dim={self.rotary.rotary_dim} must be even and ≤ head_dim={self.head_dim}")
        if not all(math.isfinite(s) and s > 0 for s in self.attention_scales):
            raise UnsupportedFamilyError(f"{self.model_type}: attention scales {self.attention_scales} are not positive")
