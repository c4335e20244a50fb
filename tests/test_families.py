"""Every supported decoder family, on tiny random-init models built from ``transformers`` config
classes (tests/families.py), loaded through ``interp.load_model(dir)``.

Independent references: the HF modules themselves (``scaling``, ``inv_freq`` buffers, norm eps,
weight shapes) for the family facts; HF eager ``output_attentions`` of a separate HF copy for the
analyses' attention statistics; HF's own ``apply_rotary_pos_emb`` of each modeling file for the
rotated q/k. Cells of the README families × analyses table come from the ``family_table`` marker
(see ``tests/conftest.py`` and ``benchmarks/family_table.py``).
"""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from families import EXTRA_FAMILIES, FAMILIES, ROTARY_FAMILIES, prompts, tiny_config, tiny_hf, tiny_model

ALL = FAMILIES + EXTRA_FAMILIES
ALL_ROTARY = ROTARY_FAMILIES + EXTRA_FAMILIES

PROMPTS = prompts(3, 10)


def _module(root, path):
    for part in path.split("."):
        root = getattr(root, part)
    return root


@pytest.fixture(scope="module")
def hf_copies():
    """Independent HF eager copies of the saved tiny models (memoised)."""
    from transformers import AutoModelForCausalLM

    cache = {}

    def get(family):
        if family not in cache:
            m = tiny_model(family)
            cache[family] = AutoModelForCausalLM.from_pretrained(
                m.interp_info.path, attn_implementation="eager", dtype=torch.float32).eval()
        return cache[family]

    return get


# ------------------------------------------------------------------------------ family facts


@pytest.mark.family_table("facts")
@pytest.mark.parametrize("family", ALL)
def test_family_facts_match_hf_modules(family):
    """The Family read from the config agrees with the instantiated HF modules."""
    from interp.families import family_of

    hf = tiny_hf(family)
    fam = family_of(hf)
    assert fam == family_of(hf.config) and fam.model_type == hf.config.model_type
    p = fam.paths
    layers = _module(hf, p.layers)
    assert len(layers) == fam.n_layers
    layer = layers[0]
    attn = _module(layer, p.attn)
    for name in ("attn_norm", "mlp_norm", "post_attn_norm", "post_mlp_norm"):
        path = getattr(p, name)
        if path is not None:
            norm = _module(layer, path)
            eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
            assert eps == pytest.approx(fam.norm_eps)
            assert (fam.norm == "layer") == isinstance(norm, torch.nn.LayerNorm)
            assert (getattr(norm, "bias", None) is not None) == fam.norm_bias
    for name in ("embed", "final_norm", "lm_head"):
        _module(hf, getattr(p, name))
    o = _module(attn, p.o_proj)
    w_o = o.weight if not fam.fused_qkv == "gpt2_conv1d" else o.weight.T
    assert w_o.shape == (fam.d_model, fam.n_heads * fam.head_dim)
    assert (o.bias is not None) == fam.o_bias
    if p.k is not None:
        k = _module(attn, p.k)
        assert k.weight.shape[0] == fam.n_kv_heads * fam.head_dim
        assert (k.bias is not None) == fam.attn_bias
    else:
        qkv = _module(attn, p.qkv)
        out = qkv.weight.shape[1] if fam.fused_qkv == "gpt2_conv1d" else qkv.weight.shape[0]
        assert out == (fam.n_heads + 2 * fam.n_kv_heads) * fam.head_dim
        assert (qkv.bias is not None) == fam.attn_bias
    if fam.qk_norm is not None:
        qn = _module(attn, p.q_norm)
        w = qn.norms[0].weight if fam.qk_norm_per_head_weights else qn.weight
        assert w.shape[-1] == (fam.head_dim if fam.qk_norm == "head" else fam.n_heads * fam.head_dim)
    else:
        assert not any(hasattr(attn, n) and getattr(attn, n) is not None
                       for n in ("q_norm", "q_layernorm"))
    if fam.gated_mlp:
        mlp = _module(layer, p.mlp)
        up = _module(mlp, p.gate_up if fam.fused_gate_up else p.up)
        assert up.weight.shape[0] == (2 if fam.fused_gate_up else 1) * fam.d_mlp
    scale = getattr(attn, "scaling", None)
    if scale is not None:
        assert scale == pytest.approx(fam.attention_scale)
    if fam.family == "gpt2":
        assert fam.attention_scales == (fam.head_dim ** -0.5,) * fam.n_layers and fam.learned_positions
    if fam.attn_softcap is not None:
        assert attn.attn_logit_softcapping == fam.attn_softcap
    if fam.sliding_window[0] is not None and hasattr(attn, "sliding_window"):
        assert attn.sliding_window == fam.sliding_window[0]
    assert fam.tied_embeddings == (_module(hf, p.lm_head).weight is _module(hf, p.embed).weight)
    assert (getattr(_module(hf, p.lm_head), "bias", None) is not None) == fam.lm_head_bias
    # rotary: θ_k against the HF rotary module's buffers
    r = fam.rotary
    if r is None:
        assert family == "gpt2"
        return
    rot = getattr(hf.model if hasattr(hf, "model") else getattr(hf, "gpt_neox", getattr(hf, "transformer", hf)),
                  "rotary_emb")
    if family == "gptj":  # sin/cos table: sin(m θ_k) at row m
        table = rot.embed_positions
        m = 7
        theta = torch.tensor(r.inv_freq["full_attention"])
        assert torch.allclose(table[m, : r.rotary_dim // 2], torch.sin(m * theta), atol=1e-6)
        assert r.pairing == "interleaved" and r.rotary_dim == hf.config.rotary_dim
        return
    for t in dict.fromkeys(r.layer_types):
        buf = getattr(rot, f"{t}_inv_freq", None) if hasattr(rot, f"{t}_inv_freq") else rot.inv_freq
        assert torch.equal(buf.float(), torch.tensor(r.inv_freq[t], dtype=torch.float32)), t
    assert r.pairing == "half"


def test_family_layer_types_and_windows():
    """Per-layer windows, bases and NoPE layers for the families that vary them."""
    from transformers import SmolLM3Config

    from interp.families import family_of

    g3 = family_of(tiny_config("gemma3_text"))
    assert g3.sliding_window == (3, None, 3) and g3.rotary.bases == (10.0, 1000.0, 10.0)
    assert g3.attn_softcap is None and g3.final_softcap == 3.0 and g3.placement == "sandwich"
    g2 = family_of(tiny_config("gemma2"))
    assert g2.sliding_window == (4, None) and g2.attn_softcap == 5.0 and g2.attention_scale == 12 ** -0.5
    assert family_of(tiny_config("mistral")).sliding_window == (4, 4)
    assert family_of(tiny_config("qwen2")).sliding_window == (None, None)
    assert family_of(tiny_config("olmo2")).placement == "post"
    neox = family_of(tiny_config("gpt_neox"))
    assert neox.parallel == "two_norms" and neox.rotary.rotary_dim == 2 and neox.fused_qkv == "neox_per_head"
    gran = family_of(tiny_config("granite"))
    assert (gran.embed_scale, gran.residual_multiplier, gran.attention_scale, gran.logits_scaling) == (3.0, 0.5, 0.2, 4.0)
    s3 = family_of(SmolLM3Config(num_hidden_layers=4, hidden_size=32, intermediate_size=48, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=64, no_rope_layers=[1, 1, 0, 1]))
    assert s3.rotary.nope_layers == (2,) and s3.rotary.bases[2] is None and s3.rotary.bases[0] is not None
    assert all(v == 0.0 for v in s3.rotary.inv_freq[s3.rotary.layer_types[2]])


def test_gguf_style_gemma_config_without_architectures():
    """A Gemma 3 config as GGUF loading leaves it (no ``architectures``) is still recognised."""
    from interp.families import family_of

    cfg = tiny_config("gemma3_text")
    cfg.architectures = None
    fam = family_of(cfg)
    assert fam.family == "gemma3_text" and fam.norm_offset == 1.0 and fam.qk_norm == "head"


def test_unknown_family_names_the_missing_piece():
    from transformers import MixtralConfig

    from interp.families import UnsupportedFamilyError, family_of

    with pytest.raises(UnsupportedFamilyError, match=r"mixtral.*Adding a model family"):
        family_of(MixtralConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=48, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=64))
    with pytest.raises(TypeError, match="PretrainedConfig"):
        family_of(42)


# ------------------------------------------------------------------------------ analyses run


@pytest.mark.family_table("load, capture, sinks, heads, probes, report")
@pytest.mark.parametrize("family", ALL)
def test_load_capture_sinks_heads_probes(family, tmp_path):
    import probes
    from interp import capture, heads, model_spec, sinks

    model = tiny_model(family)
    spec = model_spec(model)
    assert spec.architecture == family and spec.family.family == family
    assert (spec.n_layers, spec.n_heads, spec.n_kv_heads) == (model.cfg.n_layers, model.cfg.n_heads,
                                                              spec.family.n_kv_heads)
    store = capture(model, PROMPTS, ["blocks.*.hook_resid_post", "blocks.0.attn.hook_pattern"])
    assert len(store) == len(PROMPTS)
    s = sinks.sink_analysis(model, PROMPTS, massive=False)
    assert torch.isfinite(s.alpha_mean[..., 0]).all() and s.value_norm is not None
    h = heads.positional_heads(model, PROMPTS, max_offset=2, random_control=False, induction_control=False)
    assert h.per_prompt.shape == (len(PROMPTS), spec.n_layers, spec.n_heads, 5)
    data = probes.collect(model, PROMPTS, ["blocks.0.hook_resid_post"])
    probe = probes.fit_ridge(data.features["blocks.0.hook_resid_post"], data.positions.float())
    assert probe is not None
    from interp.reports import build_report

    rep = build_report(model, model_name=family, only=["model"], progress=False)
    assert [r.status for r in rep.results] == ["ok"], [(r.name, r.reason) for r in rep.results]
    d = rep.section("model").output.data
    assert d["n_kv_heads"] == spec.family.n_kv_heads and d["family"]["placement"] == spec.family.placement


@pytest.mark.family_table("attention stats = HF eager")
@pytest.mark.parametrize("family", ALL)
def test_attention_stats_match_hf_eager(family, hf_copies):
    """α_k (sinks) and previous-token scores (heads), batched and right-padded, equal those computed
    from a separate HF eager copy's ``output_attentions`` per prompt (within 1e-5)."""
    from interp import heads, sinks, tokenize

    model = tiny_model(family)
    hf = hf_copies(family)
    s = sinks.sink_analysis(model, PROMPTS, drains=False, peaks=False, massive=False)
    h = heads.positional_heads(model, PROMPTS, max_offset=2, random_control=False, induction_control=False)
    worst = 0.0
    for i, p in enumerate(PROMPTS):
        tb = tokenize(model, [p], prepend_bos=True)
        T = tb.tokens.shape[1]
        with torch.no_grad():
            att = torch.stack(hf(tb.tokens, output_attentions=True).attentions)[:, 0]  # [layer head q k]
        counts = torch.arange(T, 0, -1, dtype=att.dtype)  # queries t ≥ k
        alpha = att.sum(-2) / counts  # α_k = mean_{t≥k} A[t, k]
        prev = torch.diagonal(att, offset=-1, dim1=-2, dim2=-1).sum(-1) / T
        worst = max(worst, float((s.alpha[i, :, :, :T] - alpha).abs().max()),
                    float((h.per_prompt[i, :, :, 0] - prev).abs().max()))
        assert torch.isnan(s.alpha[i, :, :, T:]).all()
    assert worst < 1e-5, f"{family}: max |ours − HF eager| = {worst:.2e}"


# ------------------------------------------------------------------------------ rotary


def _hf_rotate(family, hf, q, positions):
    """Rotate ``q`` [b head pos d] with the HF modeling file's own function and rotary module."""
    mod = importlib.import_module(type(hf).__module__)
    if family == "gptj":
        rot = hf.transformer.rotary_emb
        sin, cos = rot(q, positions)
        rd = hf.config.rotary_dim
        qb = q.transpose(1, 2)  # GPT-J rotates [b pos head d]
        out = torch.cat([mod.apply_rotary_pos_emb(qb[..., :rd], sin, cos), qb[..., rd:]], -1)
        return out.transpose(1, 2)
    core = getattr(hf, "model", None) or getattr(hf, "gpt_neox")
    rot = core.rotary_emb
    lt = getattr(hf.config, "layer_types", None)
    try:
        cos, sin = rot(q, positions, layer_type=lt[0]) if lt and hasattr(rot, f"{lt[0]}_inv_freq") else rot(q, positions)
    except TypeError:
        cos, sin = rot(q, positions)
    rd = cos.shape[-1]
    out, _ = mod.apply_rotary_pos_emb(q[..., :rd], q[..., :rd], cos, sin)
    return torch.cat([out, q[..., rd:]], -1)


@pytest.mark.family_table("RopeSpec = rotated q/k")
@pytest.mark.parametrize("family", ALL_ROTARY)
def test_ropespec_reproduces_rotated_qk(family):
    """RopeSpec.apply on the pre-rotation hook gives hook_rot_q / hook_rot_k, and equals the HF
    modeling file's own rotation of the same vectors (GPT-J interleaved, NeoX/Phi/StableLM partial)."""
    from interp import model_spec
    from interp.rope._common import exposes_rotated, pre_rotation_hooks, to_bphd

    model = tiny_model(family)
    spec = model_spec(model)
    rope = spec.require_rope()
    if family == "gptj":
        assert rope.pairing == "adjacent" and rope.rotary_dim == 4 and rope.n_pass == 4
    if family in ("gpt_neox", "stablelm"):
        assert rope.rotary_dim == 2 and rope.n_pass == 6
    qn, kn, transposed = pre_rotation_hooks(spec)
    exposed = exposes_rotated(model)
    # TransformerLens fires hook_rot_q/k except on its fused-qkv (Phi-3, NeoX) and GPT-J bridges
    assert exposed == (family not in ("phi3", "gpt_neox", "gptj"))
    toks = model.to_tokens(PROMPTS[:1], prepend_bos=True)
    layer = spec.n_layers - 1
    names = [f"blocks.{layer}.attn.{n}" for n in (qn, kn, "hook_rot_q", "hook_rot_k")]
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n in names)
    pos = torch.arange(toks.shape[1])
    for pre, post in ((names[0], names[2]), (names[1], names[3])):
        x = to_bphd(spec, cache[pre], transposed)
        got = rope.apply(x, pos, layer)
        if exposed:
            assert (got - cache[post]).abs().max() < 1e-5, (family, post)
        if rope.layer_types[layer] == rope.layer_types[0]:
            ref = _hf_rotate(family, model.original_model, x.transpose(1, 2), pos[None]).transpose(1, 2)
            assert (got - ref).abs().max() < 1e-5, (family, "vs HF apply_rotary_pos_emb")


@pytest.mark.family_table("rope analyses")
@pytest.mark.parametrize("family", ALL_ROTARY)
def test_rope_analyses_run(family):
    """frequency_usage (exact decomposition: chunk logits sum to hook_attn_scores), band ablation,
    shift invariance (all chunks unrotated → D = 0) and base bounds."""
    from interp import rope as R

    model = tiny_model(family)
    u = R.frequency_usage(model, PROMPTS, decompose=True)
    assert u.decomposition is not None and u.decomposition.max_abs_error < 1e-4, u.decomposition.max_abs_error
    b = R.band_ablation(model, PROMPTS, fraction=0.5, max_offset=2)
    assert torch.isfinite(b.loss).all() and len(b.conditions) == 5
    sh = R.shift_invariance(model, PROMPTS, deltas=(0, 5), dtypes=("float32",),
                            unrotated=list(range(_n_chunks(model))))
    assert float(sh.D[0]) < 1e-4
    sh2 = R.shift_invariance(model, PROMPTS, deltas=(0, 5), dtypes=("float32",))
    assert float(sh2.D[0]) < 1e-2  # relative-position attention: shifting all positions barely moves it
    bb = R.base_bounds(model, length=32, compute_min_base=False)
    assert len(bb.bases) >= 1


def _n_chunks(model):
    from interp import model_spec

    return model_spec(model).require_rope().n_chunks


@pytest.mark.family_table("RopeSpec = rotated q/k", "rope analyses", note="no rotary: clear error")
def test_gpt2_rope_is_a_clear_error():
    from interp import model_spec
    from interp import rope as R
    from interp.spec import NoRotaryError

    model = tiny_model("gpt2")
    with pytest.raises(NoRotaryError, match="no rotary position embeddings.*'learned'"):
        R.frequency_usage(model, PROMPTS)
    with pytest.raises(NoRotaryError, match="no rotary"):
        R.band_ablation(model, PROMPTS)
    assert model_spec(model).positional == "learned" and model_spec(model).rope is None


# ------------------------------------------------------------------------------ completeness


@pytest.mark.family_table("forward from Family = HF eager")
@pytest.mark.parametrize("family", ALL)
def test_family_facts_rebuild_the_hf_forward(family):
    """A plain forward written only from the Family facts and the HF weights
    (tests/family_forward.py) equals HF eager logits: the facts are complete and right, including
    those no module attribute shows (norm offset and placement, parallel blocks, multipliers,
    soft-caps, windows, pairing, fused layouts)."""
    from family_forward import reference_logits

    from interp.families import family_of

    hf = tiny_hf(family, seed=1)
    fam = family_of(hf)
    toks = torch.randint(3, hf.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(toks).logits
    got = reference_logits(fam, hf, toks)
    err = float((got - ref).abs().max())
    assert err < 1e-5, f"{family}: max |family forward − HF eager| = {err:.2e}"
    # the check has teeth: a wrong fact moves the logits
    import dataclasses

    wrong = dataclasses.replace(fam, attention_scales=tuple(2 * s for s in fam.attention_scales))
    wrong_err = float((reference_logits(wrong, hf, toks) - ref).abs().max())
    print(f"{family}: family forward vs HF eager {err:.1e}; with doubled attention scale {wrong_err:.1e}")
    assert wrong_err > 20 * err


@pytest.mark.family_table("rope analyses")
@pytest.mark.parametrize("family", ["llama", "olmo2", "gemma3_text", "phi3", "gpt_neox", "gptj", "stablelm"])
def test_band_ablation_loss_equals_reference_edit(family, hf_copies):
    """band_ablation's loss with the highest chunks unrotated / zeroed in every layer equals the
    next-token loss of the Family reference forward with the same edit (tests/family_forward.py),
    both where the bridge exposes the rotated q/k (edited there) and where it does not (Phi-3,
    NeoX, GPT-J: edited before rotation)."""
    from family_forward import reference_logits

    from interp import model_spec, tokenize
    from interp import rope as R

    model = tiny_model(family)
    hf = hf_copies(family)
    fam = model_spec(model).family
    n = fam.rotary.rotary_dim // 2
    chunks = list(range(max(1, n // 2)))
    prompt = PROMPTS[0]
    b = R.band_ablation(model, [prompt], bands={"hi": chunks}, modes=("unrotate", "zero"), max_offset=1)
    toks = tokenize(model, [prompt], prepend_bos=True).tokens
    for c, mode in ((0, None), (1, "unrotate"), (2, "zero")):
        edit = None if mode is None else (torch.tensor(chunks), mode)
        lp = torch.log_softmax(reference_logits(fam, hf, toks, edit)[0, :-1].float(), -1)
        ref = float(-lp.gather(-1, toks[0, 1:, None]).mean())
        assert abs(float(b.loss[c]) - ref) < 1e-4, (family, b.conditions[c], float(b.loss[c]), ref)
    assert abs(float(b.loss[1]) - float(b.loss[0])) > 1e-6  # the edit changes the model


def _variant(family, **over):
    cfg = tiny_config(family)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


VARIANTS = {
    "phi qk_layernorm": lambda: _variant("phi", qk_layernorm=True),
    "stablelm sequential, no qk norm": lambda: _variant("stablelm", use_parallel_residual=False, qk_layernorm=False),
    "gpt_neox sequential": lambda: _variant("gpt_neox", use_parallel_residual=False),
    "gpt2 scale by inverse layer": lambda: _variant("gpt2", scale_attn_by_inverse_layer_idx=True),
    "llama attention+mlp bias, llama3 rope": lambda: _variant(
        "llama", attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 100.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "qwen2 sliding layers": lambda: _variant("qwen2", use_sliding_window=True, sliding_window=3, max_window_layers=1,
                                             layer_types=["full_attention", "sliding_attention"]),
    "gptj full rotary": lambda: _variant("gptj", rotary_dim=8),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_options_rebuild_the_hf_forward(variant):
    """Options beyond the default tiny configs (Phi q/k LayerNorm, sequential NeoX/StableLM,
    GPT-2's per-layer scale, llama3 rope scaling, Qwen2 sliding layers, GPT-J full rotary): the
    Family reference forward equals HF eager."""
    from transformers import AutoModelForCausalLM

    from family_forward import reference_logits

    from interp.families import family_of

    cfg = VARIANTS[variant]()
    with torch.random.fork_rng():
        torch.manual_seed(2)
        hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
        with torch.no_grad():
            for n, w in hf.named_parameters():
                if "norm" in n or ".ln" in n or n.endswith("bias"):
                    w.add_(torch.randn_like(w) * 0.3)
    fam = family_of(hf)
    toks = torch.randint(3, cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(toks).logits
    err = float((reference_logits(fam, hf, toks) - ref).abs().max())
    assert err < 1e-5, f"{variant}: {err:.2e}"
    if variant == "gpt2 scale by inverse layer":
        assert fam.attention_scales[1] == pytest.approx(fam.attention_scales[0] / 2)
    if variant.startswith("llama"):
        assert fam.rotary.rope_types["full_attention"] == "llama3" and fam.o_bias and fam.mlp_bias
    if variant == "qwen2 sliding layers":
        assert fam.sliding_window == (None, 3)
