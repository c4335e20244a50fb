"""One adapter per decoder family: HF config → :class:`Family`.

Each adapter states the family's facts as read from its ``transformers`` modeling file (v5):
which config fields carry the geometry, the norm kind and placement, biases, rotary layout,
fused projections and multipliers. ``ADAPTERS`` maps ``model_type`` to its adapter; adding a
family is one function here plus a tiny config in ``tests/families.py`` (see CONTRIBUTING.md,
"Adding a model family").
"""

from __future__ import annotations

import math
from typing import Any, Callable

from interp.families._facts import ADDING_A_FAMILY, Family, ModulePaths, UnsupportedFamilyError
from interp.families._rope import rotary_facts

# ------------------------------------------------------------------------------------ helpers


def _get(cfg: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def _layer_types(cfg: Any, n_layers: int) -> tuple[str, ...]:
    lt = getattr(cfg, "layer_types", None)
    if isinstance(lt, (list, tuple)) and len(lt) == n_layers:
        return tuple(str(t) for t in lt)
    return ("full_attention",) * n_layers


def _windows_by_type(cfg: Any, layer_types: tuple[str, ...]) -> tuple[int | None, ...]:
    """Window on the ``sliding_attention`` layers only (Qwen2/3, Gemma 2/3, SmolLM3, OLMo-3)."""
    w = getattr(cfg, "sliding_window", None)
    return tuple(int(w) if (w is not None and t == "sliding_attention") else None for t in layer_types)


def _windows_all(cfg: Any, n_layers: int) -> tuple[int | None, ...]:
    """Window on every layer when the config sets one (Mistral, Phi-3, Starcoder2)."""
    w = getattr(cfg, "sliding_window", None)
    return (int(w) if w is not None else None,) * n_layers


LLAMA_PATHS = ModulePaths(
    embed="model.embed_tokens", layers="model.layers", final_norm="model.norm", lm_head="lm_head",
    attn="self_attn", mlp="mlp", o_proj="o_proj", down="down_proj", attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm", q="q_proj", k="k_proj", v="v_proj", gate="gate_proj", up="up_proj")


def _llama_like(cfg: Any, *, family: str, paths: ModulePaths = LLAMA_PATHS, **over: Any) -> Family:
    """Shared reading of Llama-style configs (``hidden_size``, ``num_attention_heads``, …)."""
    n_layers = int(cfg.num_hidden_layers)
    n_heads = int(cfg.num_attention_heads)
    d_model = int(cfg.hidden_size)
    head_dim = int(_get(cfg, "head_dim", default=0) or d_model // n_heads)
    layer_types = _layer_types(cfg, n_layers)
    attn_bias = bool(getattr(cfg, "attention_bias", False))
    scale = head_dim ** -0.5
    facts: dict[str, Any] = dict(
        model_type=str(cfg.model_type), family=family,
        architecture=str((getattr(cfg, "architectures", None) or [""])[0] or ""),
        n_layers=n_layers, d_model=d_model, n_heads=n_heads,
        n_kv_heads=int(_get(cfg, "num_key_value_heads", default=n_heads)), head_dim=head_dim,
        d_mlp=int(cfg.intermediate_size), vocab_size=int(cfg.vocab_size),
        n_ctx=_get(cfg, "max_position_embeddings"),
        norm="rms", norm_eps=float(_get(cfg, "rms_norm_eps", default=1e-6)), norm_offset=0.0, norm_bias=False,
        placement="pre", parallel=None, qk_norm=None, qk_norm_kind=None, qk_norm_per_head_weights=False,
        rotary=rotary_facts(cfg, head_dim=head_dim, layer_types=layer_types),
        fused_qkv=None, fused_gate_up=False, gated_mlp=True,
        activation=str(_get(cfg, "hidden_act", default="silu")),
        attn_bias=attn_bias, o_bias=attn_bias, mlp_bias=bool(getattr(cfg, "mlp_bias", False)), lm_head_bias=False,
        attn_softcap=None, final_softcap=None, layer_types=layer_types,
        sliding_window=(None,) * n_layers, attention_scale=scale, attention_scales=(scale,) * n_layers,
        embed_scale=1.0, residual_multiplier=1.0, logits_scaling=1.0,
        tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)), learned_positions=False,
        paths=paths,
    )
    facts.update(over)
    if "attention_scale" in over and "attention_scales" not in over:
        facts["attention_scales"] = (float(over["attention_scale"]),) * n_layers
    return Family(**facts)


# ------------------------------------------------------------------------------------ adapters


def llama(cfg: Any) -> Family:
    return _llama_like(cfg, family="llama")


def mistral(cfg: Any) -> Family:
    # MistralAttention: every projection bias-free; sliding_window (if set) on every layer
    return _llama_like(cfg, family="mistral", attn_bias=False, o_bias=False, mlp_bias=False,
                       sliding_window=_windows_all(cfg, int(cfg.num_hidden_layers)))


def qwen2(cfg: Any) -> Family:
    # Qwen2Attention: q/k/v with bias, o_proj without; windows on "sliding_attention" layers
    lt = _layer_types(cfg, int(cfg.num_hidden_layers))
    return _llama_like(cfg, family="qwen2", attn_bias=True, o_bias=False, mlp_bias=False,
                       sliding_window=_windows_by_type(cfg, lt))


def qwen3(cfg: Any) -> Family:
    # Qwen3Attention: RMSNorm q_norm/k_norm over each head's head_dim, before RoPE
    lt = _layer_types(cfg, int(cfg.num_hidden_layers))
    return _llama_like(cfg, family="qwen3", qk_norm="head", qk_norm_kind="rms", mlp_bias=False,
                       sliding_window=_windows_by_type(cfg, lt),
                       paths=_with(LLAMA_PATHS, q_norm="q_norm", k_norm="k_norm"))


def gemma(cfg: Any) -> Family:
    # GemmaRMSNorm scales by (1 + w); embeddings × √d_model (cast to the weight dtype); GeGLU
    return _llama_like(cfg, family="gemma", norm_offset=1.0, mlp_bias=False,
                       activation=str(_get(cfg, "hidden_act", "hidden_activation", default="gelu_pytorch_tanh")),
                       embed_scale=float(cfg.hidden_size) ** 0.5)


GEMMA2_PATHS = ModulePaths(
    embed="model.embed_tokens", layers="model.layers", final_norm="model.norm", lm_head="lm_head",
    attn="self_attn", mlp="mlp", o_proj="o_proj", down="down_proj", attn_norm="input_layernorm",
    post_attn_norm="post_attention_layernorm", mlp_norm="pre_feedforward_layernorm",
    post_mlp_norm="post_feedforward_layernorm", q="q_proj", k="k_proj", v="v_proj", gate="gate_proj",
    up="up_proj")


def gemma2(cfg: Any) -> Family:
    # Gemma2DecoderLayer: sandwich norms; attention scale query_pre_attn_scalar^-1/2; attention
    # logits soft-capped (attn_logit_softcapping), final logits soft-capped
    lt = _layer_types(cfg, int(cfg.num_hidden_layers))
    scale = float(cfg.query_pre_attn_scalar) ** -0.5
    cap = getattr(cfg, "attn_logit_softcapping", None)
    fcap = getattr(cfg, "final_logit_softcapping", None)
    return _llama_like(cfg, family="gemma2", norm_offset=1.0, placement="sandwich", mlp_bias=False,
                       activation=str(_get(cfg, "hidden_activation", "hidden_act", default="gelu_pytorch_tanh")),
                       embed_scale=float(cfg.hidden_size) ** 0.5, attention_scale=scale,
                       attn_softcap=float(cap) if cap is not None else None,
                       final_softcap=float(fcap) if fcap is not None else None,
                       sliding_window=_windows_by_type(cfg, lt), paths=GEMMA2_PATHS)


def gemma3_text(cfg: Any) -> Family:
    # Gemma3: as Gemma 2 plus per-head (1 + w) RMS q/k norms and per-layer-type rope bases. The
    # attention function is never given attn_logit_softcapping (HF ignores it): no attention cap.
    fam = gemma2(cfg)
    return _replace(fam, family="gemma3_text", qk_norm="head", qk_norm_kind="rms", attn_softcap=None,
                    paths=_with(GEMMA2_PATHS, q_norm="q_norm", k_norm="k_norm"),
                    notes=("HF Gemma 3 ignores attn_logit_softcapping",) if getattr(
                        cfg, "attn_logit_softcapping", None) is not None else ())


OLMO2_PATHS = ModulePaths(
    embed="model.embed_tokens", layers="model.layers", final_norm="model.norm", lm_head="lm_head",
    attn="self_attn", mlp="mlp", o_proj="o_proj", down="down_proj", post_attn_norm="post_attention_layernorm",
    post_mlp_norm="post_feedforward_layernorm", q="q_proj", k="k_proj", v="v_proj", q_norm="q_norm",
    k_norm="k_norm", gate="gate_proj", up="up_proj")


def olmo2(cfg: Any) -> Family:
    # Olmo2DecoderLayer: x + norm(attn(x)), x + norm(mlp(x)) (no input norms); q_norm/k_norm are
    # RMSNorms over the whole q / k projection (n_heads·d_head), before the head split
    return _llama_like(cfg, family="olmo2", placement="post", qk_norm="proj", qk_norm_kind="rms",
                       mlp_bias=False, paths=OLMO2_PATHS)


def phi3(cfg: Any) -> Family:
    # Phi3Attention: qkv_proj = [q (n_heads·d) ; k (n_kv·d) ; v (n_kv·d)], no biases; gate_up_proj =
    # [gate ; up]; sliding_window (if set) on every layer; partial_rotary_factor in rope_parameters
    paths = _with(LLAMA_PATHS, q=None, k=None, v=None, qkv="qkv_proj", gate=None, up=None, gate_up="gate_up_proj")
    return _llama_like(cfg, family="phi3", fused_qkv="phi3", fused_gate_up=True, attn_bias=False, o_bias=False,
                       mlp_bias=False, sliding_window=_windows_all(cfg, int(cfg.num_hidden_layers)), paths=paths)


PHI_PATHS = ModulePaths(
    embed="model.embed_tokens", layers="model.layers", final_norm="model.final_layernorm", lm_head="lm_head",
    attn="self_attn", mlp="mlp", o_proj="dense", down="fc2", attn_norm="input_layernorm",
    mlp_norm="input_layernorm", q="q_proj", k="k_proj", v="v_proj", up="fc1")


def phi(cfg: Any) -> Family:
    # PhiDecoderLayer: one LayerNorm feeds attention and MLP in parallel (x + attn(n) + mlp(n));
    # all projections and lm_head with bias; optional LayerNorm q/k norm over head_dim (shared)
    qk = bool(getattr(cfg, "qk_layernorm", False))
    return _llama_like(cfg, family="phi", norm="layer", norm_eps=float(cfg.layer_norm_eps), norm_bias=True,
                       parallel="shared_norm", gated_mlp=False, attn_bias=True, o_bias=True, mlp_bias=True,
                       lm_head_bias=True, qk_norm="head" if qk else None, qk_norm_kind="layer" if qk else None,
                       activation=str(cfg.hidden_act),
                       paths=_with(PHI_PATHS, q_norm="q_layernorm", k_norm="k_layernorm") if qk else PHI_PATHS)


NEOX_PATHS = ModulePaths(
    embed="gpt_neox.embed_in", layers="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
    lm_head="lm_head", attn="attention", mlp="mlp", o_proj="dense", down="dense_4h_to_h",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm", qkv="query_key_value",
    up="dense_h_to_4h")


def gpt_neox(cfg: Any) -> Family:
    # GPTNeoXAttention: query_key_value viewed as [.., n_heads, 3·d_head] then chunked per head;
    # use_parallel_residual: x + attn(ln1 x) + mlp(ln2 x); partial rotary (rotary_pct)
    par = bool(getattr(cfg, "use_parallel_residual", True))
    bias = bool(getattr(cfg, "attention_bias", True))
    return _llama_like(cfg, family="gpt_neox", norm="layer", norm_eps=float(cfg.layer_norm_eps), norm_bias=True,
                       parallel="two_norms" if par else None, fused_qkv="neox_per_head", gated_mlp=False,
                       attn_bias=bias, o_bias=bias, mlp_bias=True, n_kv_heads=int(cfg.num_attention_heads),
                       activation=str(cfg.hidden_act), paths=NEOX_PATHS)


GPTJ_PATHS = ModulePaths(
    embed="transformer.wte", layers="transformer.h", final_norm="transformer.ln_f", lm_head="lm_head",
    attn="attn", mlp="mlp", o_proj="out_proj", down="fc_out", attn_norm="ln_1", mlp_norm="ln_1",
    q="q_proj", k="k_proj", v="v_proj", up="fc_in")


def gptj(cfg: Any) -> Family:
    # GPTJBlock: x + attn(ln_1 x) + mlp(ln_1 x); rotary on the first rotary_dim dims with
    # rotate_every_two (interleaved pairs), base 10000 hard-coded; no attention biases; lm_head bias
    n_layers, n_heads, d = int(cfg.n_layer), int(cfg.n_head), int(cfg.n_embd)
    head_dim = d // n_heads
    lt = ("full_attention",) * n_layers
    rd = getattr(cfg, "rotary_dim", None)
    scale = head_dim ** -0.5
    return Family(
        model_type=str(cfg.model_type), family="gptj", architecture=_arch(cfg), n_layers=n_layers, d_model=d,
        n_heads=n_heads, n_kv_heads=n_heads, head_dim=head_dim, d_mlp=int(_get(cfg, "n_inner", default=4 * d)),
        vocab_size=int(cfg.vocab_size), n_ctx=_get(cfg, "n_positions"), norm="layer",
        norm_eps=float(cfg.layer_norm_epsilon), norm_offset=0.0, norm_bias=True, placement="pre",
        parallel="shared_norm", qk_norm=None, qk_norm_kind=None, qk_norm_per_head_weights=False,
        rotary=rotary_facts(cfg, head_dim=head_dim, layer_types=lt, rotary_dim=int(rd) if rd else head_dim,
                            pairing="interleaved", fixed_base=10000.0),
        fused_qkv=None, fused_gate_up=False, gated_mlp=False, activation=str(cfg.activation_function),
        attn_bias=False, o_bias=False, mlp_bias=True, lm_head_bias=True, attn_softcap=None, final_softcap=None,
        layer_types=lt, sliding_window=(None,) * n_layers, attention_scale=scale,
        attention_scales=(scale,) * n_layers, embed_scale=1.0, residual_multiplier=1.0, logits_scaling=1.0,
        tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)), learned_positions=False,
        paths=GPTJ_PATHS, notes=("attention logits computed in float32",))


GPT2_PATHS = ModulePaths(
    embed="transformer.wte", pos_embed="transformer.wpe", layers="transformer.h", final_norm="transformer.ln_f",
    lm_head="lm_head", attn="attn", mlp="mlp", o_proj="c_proj", down="c_proj", attn_norm="ln_1",
    mlp_norm="ln_2", qkv="c_attn", up="c_fc")


def gpt2(cfg: Any) -> Family:
    # GPT2Attention: Conv1D c_attn = [q ; k ; v] (weights [in, out]); scale 1/√d_head if
    # scale_attn_weights, further / (layer + 1) if scale_attn_by_inverse_layer_idx; learned wpe
    n_layers, n_heads, d = int(cfg.n_layer), int(cfg.n_head), int(cfg.n_embd)
    head_dim = d // n_heads
    base = head_dim ** -0.5 if getattr(cfg, "scale_attn_weights", True) else 1.0
    inv = bool(getattr(cfg, "scale_attn_by_inverse_layer_idx", False))
    scales = tuple(base / (i + 1) if inv else base for i in range(n_layers))
    return Family(
        model_type=str(cfg.model_type), family="gpt2", architecture=_arch(cfg), n_layers=n_layers, d_model=d,
        n_heads=n_heads, n_kv_heads=n_heads, head_dim=head_dim, d_mlp=int(_get(cfg, "n_inner", default=4 * d)),
        vocab_size=int(cfg.vocab_size), n_ctx=_get(cfg, "n_positions"), norm="layer",
        norm_eps=float(cfg.layer_norm_epsilon), norm_offset=0.0, norm_bias=True, placement="pre", parallel=None,
        qk_norm=None, qk_norm_kind=None, qk_norm_per_head_weights=False, rotary=None, fused_qkv="gpt2_conv1d",
        fused_gate_up=False, gated_mlp=False, activation=str(cfg.activation_function), attn_bias=True,
        o_bias=True, mlp_bias=True, lm_head_bias=False, attn_softcap=None, final_softcap=None,
        layer_types=("full_attention",) * n_layers, sliding_window=(None,) * n_layers,
        attention_scale=scales[0], attention_scales=scales, embed_scale=1.0, residual_multiplier=1.0,
        logits_scaling=1.0, tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", True)),
        learned_positions=True, paths=GPT2_PATHS)


def stablelm(cfg: Any) -> Family:
    # StableLmDecoderLayer: LayerNorm; use_parallel_residual → one input_layernorm feeds attention
    # and MLP (no post_attention_layernorm); q/k/v bias = use_qkv_bias, o_proj bias-free;
    # qk_layernorm → one bias-free LayerNorm per head (StableLmLayerNormPerHead); partial rotary
    par = bool(getattr(cfg, "use_parallel_residual", False))
    qk = bool(getattr(cfg, "qk_layernorm", False))
    paths = _with(LLAMA_PATHS, mlp_norm="input_layernorm" if par else "post_attention_layernorm",
                  q_norm="q_layernorm" if qk else None, k_norm="k_layernorm" if qk else None)
    return _llama_like(cfg, family="stablelm", norm="layer", norm_eps=float(cfg.layer_norm_eps), norm_bias=True,
                       parallel="shared_norm" if par else None, attn_bias=bool(getattr(cfg, "use_qkv_bias", False)),
                       o_bias=False, mlp_bias=False, qk_norm="head" if qk else None,
                       qk_norm_kind="layer" if qk else None, qk_norm_per_head_weights=qk,
                       head_dim=int(cfg.hidden_size) // int(cfg.num_attention_heads), paths=paths)


def granite(cfg: Any) -> Family:
    # Granite: embeddings × embedding_multiplier, x + residual_multiplier·f(x), attention scale =
    # attention_multiplier, logits / logits_scaling
    return _llama_like(cfg, family="granite", attention_scale=float(cfg.attention_multiplier),
                       embed_scale=float(cfg.embedding_multiplier),
                       residual_multiplier=float(cfg.residual_multiplier),
                       logits_scaling=float(cfg.logits_scaling))


def smollm3(cfg: Any) -> Family:
    # SmolLM3: Llama with no_rope_layers[l] == 0 marking layers without RoPE (interleaved NoPE);
    # windows only if use_sliding_window on "sliding_attention" layers
    n = int(cfg.num_hidden_layers)
    lt = _layer_types(cfg, n)
    flags = list(getattr(cfg, "no_rope_layers", None) or [1] * n)
    nope = [i for i, f in enumerate(flags) if not f]
    head_dim = int(_get(cfg, "head_dim", default=0) or int(cfg.hidden_size) // int(cfg.num_attention_heads))
    win = _windows_by_type(cfg, lt) if getattr(cfg, "use_sliding_window", False) else (None,) * n
    return _llama_like(cfg, family="smollm3", sliding_window=win,
                       rotary=rotary_facts(cfg, head_dim=head_dim, layer_types=lt, nope_layers=nope))


def starcoder2(cfg: Any) -> Family:
    # Starcoder2: LayerNorm (norm_epsilon), all projections with bias = use_bias, non-gated
    # c_fc/c_proj MLP, sliding_window (if set) on every layer
    b = bool(getattr(cfg, "use_bias", True))
    paths = _with(LLAMA_PATHS, down="c_proj", up="c_fc", gate=None)
    return _llama_like(cfg, family="starcoder2", norm="layer", norm_eps=float(cfg.norm_epsilon), norm_bias=True,
                       gated_mlp=False, attn_bias=b, o_bias=b, mlp_bias=b, activation=str(cfg.hidden_act),
                       sliding_window=_windows_all(cfg, int(cfg.num_hidden_layers)), paths=paths)


# ------------------------------------------------------------------------------------ registry


def _arch(cfg: Any) -> str:
    return str((getattr(cfg, "architectures", None) or [""])[0] or "")


def _with(p: ModulePaths, **kw: Any) -> ModulePaths:
    import dataclasses

    return dataclasses.replace(p, **kw)


def _replace(f: Family, **kw: Any) -> Family:
    import dataclasses

    return dataclasses.replace(f, **kw)


ADAPTERS: dict[str, Callable[[Any], Family]] = {
    "llama": llama, "mistral": mistral, "qwen2": qwen2, "qwen3": qwen3, "gemma": gemma, "gemma2": gemma2,
    "gemma3_text": gemma3_text, "olmo2": olmo2, "phi3": phi3, "phi": phi, "gpt_neox": gpt_neox, "gptj": gptj,
    "gpt2": gpt2, "stablelm": stablelm, "granite": granite, "smollm3": smollm3, "starcoder2": starcoder2,
}


def adapt(cfg: Any) -> Family:
    """Run the adapter of ``cfg.model_type``; unknown types raise :class:`UnsupportedFamilyError`."""
    mt = str(getattr(cfg, "model_type", "") or "")
    if mt not in ADAPTERS:
        raise UnsupportedFamilyError(
            f"model_type {mt!r} has no family adapter in interp.families (supported: "
            f"{', '.join(sorted(ADAPTERS))}). The missing piece is an adapter describing its norms, "
            f"attention, rotary layout and MLP; {ADDING_A_FAMILY}")
    try:
        fam = ADAPTERS[mt](cfg)
    except (AttributeError, KeyError, TypeError) as e:
        raise UnsupportedFamilyError(
            f"model_type {mt!r}: its config lacks a field the {mt} adapter reads ({e}); {ADDING_A_FAMILY}") from e
    declared = getattr(cfg, "positional_encoding", None) or getattr(cfg, "interp_positional", None)
    if declared:
        import dataclasses

        fam = dataclasses.replace(fam, declared_positional=str(declared))
    fam.check_geometry()
    if not math.isfinite(fam.embed_scale):
        raise UnsupportedFamilyError(f"{mt}: embed_scale {fam.embed_scale} is not finite")
    return fam
