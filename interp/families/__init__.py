"""One home for architecture facts: :func:`family_of` → :class:`Family`.

``family_of(model_or_config)`` accepts a TransformerBridge (``interp.load_model``), a HF
``PreTrainedModel`` or a HF config, and returns the frozen :class:`Family` of its architecture:
geometry (layers, heads, GQA/MQA, head dim), norm kind/offset/placement (pre-norm, Gemma's
sandwich, OLMo-2's post-norm), parallel blocks (Phi, GPT-J, GPT-NeoX), q/k norms (per head or over
the projection), rotary facts (:class:`RotaryFacts`: per-layer bases, NoPE layers, partial rotary,
half vs interleaved pairing, scaled rope types), fused projections, biases, soft-caps, sliding
windows, attention/embedding scales and Granite's multipliers, and where the HF modules live
(:class:`ModulePaths`).

``interp.spec.model_spec``, the RoPE analyses, the zoo, the report's model section and
``circuits.PatchableModel`` read architecture facts from here only. An unknown ``model_type``
raises :class:`UnsupportedFamilyError` naming the missing adapter (see "Adding a model family" in
CONTRIBUTING.md).

Example::

    >>> from interp.families import family_of
    >>> fam = family_of(model)
    >>> fam.n_kv_heads, fam.rotary.rotary_dim, fam.rotary.pairing, fam.placement
"""

from __future__ import annotations

from typing import Any

from interp.families._adapters import ADAPTERS, adapt
from interp.families._facts import ADDING_A_FAMILY, Family, ModulePaths, RotaryFacts, UnsupportedFamilyError
from interp.families._rope import NO_ROPE, default_inv_freq, rope_parameters

__all__ = [
    "Family", "RotaryFacts", "ModulePaths", "UnsupportedFamilyError", "family_of", "hf_config",
    "supported_model_types", "NO_ROPE", "ADDING_A_FAMILY", "default_inv_freq", "rope_parameters",
]


def supported_model_types() -> list[str]:
    """The HF ``model_type`` values with a family adapter."""
    return sorted(ADAPTERS)


def hf_config(model_or_config: Any) -> Any:
    """The HF text config behind a TransformerBridge, a ``PreTrainedModel`` or a config.

    Multimodal configs (e.g. ``gemma3``) give their text config (``get_text_config()``).
    """
    obj = model_or_config
    hf = getattr(obj, "original_model", None)
    if hf is not None:
        obj = hf
    cfg = getattr(obj, "config", None)
    if cfg is None:
        if hasattr(obj, "model_type") or hasattr(obj, "to_dict"):
            cfg = obj
        else:
            raise TypeError(
                f"family_of expects a TransformerBridge, a transformers PreTrainedModel or a "
                f"PretrainedConfig, got {type(model_or_config).__name__}")
    get = getattr(cfg, "get_text_config", None)
    if callable(get):
        try:
            cfg = get()
        except (TypeError, ValueError):  # pragma: no cover - configs with several text configs
            pass
    return cfg


def family_of(model_or_config: Any) -> Family:
    """The :class:`Family` (architecture facts) of a model or HF config (not cached: configs are mutable).

    Raises:
        UnsupportedFamilyError: ``model_type`` has no adapter, or the config lacks a field the
            adapter needs (the message names it and points to "Adding a model family").
        TypeError: the argument is neither a model nor a config.
    """
    return adapt(hf_config(model_or_config))
