"""TEMPORARY stand-in for interp.families.family_of until it lands (deleted then)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def family_of(hf: Any) -> Any:
    cfg = hf.config
    mt = cfg.model_type
    if mt not in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gemma3", "olmo2",
                  "phi3", "phi", "gpt_neox", "gptj", "gpt2", "stablelm", "granite", "smollm3"):
        raise NotImplementedError(f"no family for model_type={mt!r}")
    if mt == "gemma3":
        cfg = cfg.text_config
    L = cfg.num_hidden_layers if hasattr(cfg, "num_hidden_layers") else cfg.n_layer
    d = getattr(cfg, "hidden_size", None) or cfg.n_embd
    H = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    G = getattr(cfg, "num_key_value_heads", None) or H
    e = getattr(cfg, "head_dim", None) or d // H
    layer_norm = mt in ("gpt2", "gptj", "gpt_neox", "phi", "stablelm")
    eps = getattr(cfg, "rms_norm_eps", None) or getattr(cfg, "layer_norm_eps", None) or getattr(cfg, "layer_norm_epsilon", None) or 1e-6
    placement = {"gemma2": "sandwich", "gemma3_text": "sandwich", "gemma3": "sandwich", "olmo2": "post"}.get(mt, "pre")
    parallel = None
    if mt in ("gptj", "phi"):
        parallel = "shared_norm"
    elif mt == "gpt_neox" and cfg.use_parallel_residual:
        parallel = "two_norms"
    elif mt == "stablelm" and cfg.use_parallel_residual:
        parallel = "shared_norm"
    qk = None
    if mt in ("qwen3", "gemma3_text", "gemma3") or (mt in ("phi", "stablelm") and cfg.qk_layernorm):
        qk = "head"
    elif mt == "olmo2":
        qk = "proj"
    rp = getattr(cfg, "rope_parameters", None) or {}
    if mt == "gpt2" or getattr(cfg, "nope", False):
        rotary = None
    else:
        frac = rp.get("partial_rotary_factor", None) if isinstance(rp, dict) else None
        rd = e
        if mt == "gptj":
            rd = cfg.rotary_dim or e
        elif frac is not None:
            rd = int(e * frac)
        bases = [1.0] * L
        nrl = getattr(cfg, "no_rope_layers", None)
        if nrl is not None:
            bases = [1.0 if u else None for u in nrl]
        rotary = SimpleNamespace(bases=bases, rotary_dim=rd, pairing="interleaved" if mt == "gptj" else "half")
    types = getattr(cfg, "layer_types", None)
    win = getattr(cfg, "sliding_window", None)
    if types is not None:
        sw = [win if t == "sliding_attention" else None for t in types]
    elif mt in ("mistral", "phi3"):
        sw = [win] * L
    else:
        sw = [None] * L
    return SimpleNamespace(
        model_type=mt, n_layers=L, d_model=d, n_heads=H, n_kv_heads=G, head_dim=e,
        norm="layer" if layer_norm else "rms", norm_eps=float(eps),
        norm_offset=1.0 if mt.startswith("gemma") else 0.0, placement=placement, parallel=parallel,
        qk_norm=qk, qk_norm_kind="layer" if mt in ("phi", "stablelm") else "rms", rotary=rotary,
        attn_softcap=getattr(cfg, "attn_logit_softcapping", None) if mt == "gemma2" else None,
        final_softcap=getattr(cfg, "final_logit_softcapping", None),
        sliding_window=sw, embed_scale=getattr(cfg, "embedding_multiplier", None),
        residual_multiplier=getattr(cfg, "residual_multiplier", None),
        logits_scaling=getattr(cfg, "logits_scaling", None),
        attention_scale=getattr(cfg, "attention_multiplier", None))
