"""model_spec / RopeSpec: exact facts from the HF config, checked against the models' own hooks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from interp.spec import ModelSpec, NoRotaryError, RopeSpec, model_spec


def _synthetic(pairing: str = "half", d_head: int = 16, rotary_dim: int = 16, base: float = 100.0,
               n_layers: int = 2) -> RopeSpec:
    inv = 1.0 / (base ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
    return RopeSpec(d_head=d_head, rotary_dim=rotary_dim, pairing=pairing,  # type: ignore[arg-type]
                    layer_types=("full_attention",) * n_layers, bases=(base,) * n_layers,
                    inv_freq={"full_attention": tuple(inv.tolist())},
                    attention_scaling={"full_attention": 1.0}, rope_types={"full_attention": "default"},
                    scaling={"full_attention": {"rope_type": "default", "rope_theta": base}})


def _rot_err(model, spec: ModelSpec, prompts: list[str]) -> tuple[float, float]:
    rope = spec.require_rope()
    toks = model.to_tokens(prompts)
    names = ("hook_q_normed", "hook_k_normed") if spec.qk_norm else ("hook_q", "hook_k")
    _, cache = model.run_with_cache(toks, names_filter=lambda n: any(
        n.endswith(x) for x in (*names, "hook_rot_q", "hook_rot_k")))
    eq = ek = 0.0
    for layer in range(spec.n_layers):
        q = cache[f"blocks.{layer}.attn.{names[0]}"]
        k = cache[f"blocks.{layer}.attn.{names[1]}"]
        if spec.qk_norm:  # Gemma's normed hooks are [batch head pos d_head]
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        eq = max(eq, (rope.apply(q, None, layer) - cache[f"blocks.{layer}.attn.hook_rot_q"]).abs().max().item())
        ek = max(ek, (rope.apply(k, None, layer) - cache[f"blocks.{layer}.attn.hook_rot_k"]).abs().max().item())
    return eq, ek


# ---------------------------------------------------------------- closed forms, no model needed


def test_chunks_roundtrip_and_pairing():
    x = torch.randn(2, 3, 4, 16)
    for pairing, first in (("half", [0, 8]), ("adjacent", [0, 1])):
        r = _synthetic(pairing)
        c = r.chunks(x)
        assert c.shape == (2, 3, 4, 8, 2)
        assert torch.equal(r.unchunk(c), x)
        assert r.chunk_dims()[0].tolist() == first
        assert torch.equal(c[..., 0, :], x[..., first])


def test_partial_rotary_keeps_pass_dims():
    r = _synthetic(d_head=16, rotary_dim=8)
    x = torch.randn(1, 5, 2, 16)
    y = r.apply(x)
    assert torch.equal(y[..., 8:], x[..., 8:])
    assert r.n_chunks == 4 and r.n_pass == 8
    assert torch.equal(r.unchunk(r.chunks(x), x[..., 8:]), x)


@pytest.mark.parametrize("pairing", ["half", "adjacent"])
def test_apply_is_chunkwise_rotation(pairing):
    """x'_k = R(m θ_k) x_k for every chunk: check against an explicit 2×2 rotation."""
    r = _synthetic(pairing)
    x = torch.randn(2, 6, 3, 16, dtype=torch.float64)
    y = r.apply(x)
    c, cy = r.chunks(x), r.chunks(y)
    theta = torch.tensor(r.inv_freq["full_attention"], dtype=torch.float64)
    ang = torch.arange(6, dtype=torch.float64)[:, None] * theta  # [pos chunk]
    cos, sin = ang.cos()[None, :, None], ang.sin()[None, :, None]
    exp0 = c[..., 0] * cos - c[..., 1] * sin
    exp1 = c[..., 1] * cos + c[..., 0] * sin
    assert torch.allclose(cy[..., 0], exp0, atol=1e-6) and torch.allclose(cy[..., 1], exp1, atol=1e-6)
    # chunk norms are preserved by the model's pairing
    assert torch.allclose(c.norm(dim=-1), cy.norm(dim=-1), atol=1e-9)


def test_adjacent_matches_transformer_lens_reference():
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        _apply_rotary_pos_emb_adjacent_pairs,
    )

    r = _synthetic("adjacent")
    x = torch.randn(1, 7, 2, 16)
    inv = torch.tensor(r.inv_freq["full_attention"])
    emb = torch.arange(7).float()[:, None] * inv
    emb = torch.cat([emb, emb], -1)[None]
    ref, _ = _apply_rotary_pos_emb_adjacent_pairs(x.transpose(1, 2), x.transpose(1, 2), emb.cos(), emb.sin())
    assert (r.apply(x) - ref.transpose(1, 2)).abs().max() < 1e-6


def test_chunk_mask_and_positions():
    r = _synthetic()
    x = torch.randn(2, 5, 1, 16)
    mask = torch.zeros(8, dtype=torch.bool)
    assert torch.allclose(r.apply(x, chunk_mask=mask), x)
    shifted = r.apply(x, torch.arange(5) + 3)
    per_batch = r.apply(x, (torch.arange(5) + 3).expand(2, 5))
    assert torch.allclose(shifted, per_batch)
    from jaxtyping import TypeCheckError

    with pytest.raises((ValueError, TypeCheckError)):  # runtime shape checking or our own check
        r.apply(x, torch.arange(4))


def test_frequency_helpers():
    r = _synthetic(base=10000.0, d_head=64, rotary_dim=64)
    theta = r.frequencies(0)
    k = torch.arange(32, dtype=torch.float64)
    assert torch.allclose(theta.double(), 10000.0 ** (-2 * k / 64), rtol=1e-6)
    assert math.isclose(r.wavelengths(0)[0].item(), 2 * math.pi, rel_tol=1e-6)
    assert r.rotations_within(11, 0)[0].item() == pytest.approx(10 / (2 * math.pi))
    json.dumps(r.to_json())
    with pytest.raises(IndexError):
        r.base(5)


# ---------------------------------------------------------------- real models


@pytest.mark.real_model
def test_smollm2_spec(smollm2):
    s = model_spec(smollm2)
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_head, s.d_model) == (30, 9, 3, 64, 576)
    assert s.group_size == 3 and s.kv_head(8) == 2
    assert s.positional == "rope" and s.normalization == "RMS" and s.activation == "silu"
    assert s.d_mlp == 1536 and s.vocab == 49152 and s.n_ctx == 8192
    assert s.bos_token_id == 1 and s.bos_token == "<|im_start|>" and s.default_prepend_bos is True
    # the shipped HF tokenizer adds no BOS (independent check on a fresh tokenizer)
    from transformers import AutoTokenizer

    fresh = AutoTokenizer.from_pretrained(smollm2.interp_info.path)
    assert fresh("a")["input_ids"][0] != 1
    assert s.tokenizer_adds_bos is False
    assert s.attn_scale == pytest.approx(1 / 8) and s.attn_softcap is None and not s.qk_norm
    r = s.require_rope()
    assert r.bases == (100000.0,) * 30  # not bridge.cfg.rotary_base (10000)
    assert r.rotary_dim == 64 and r.pairing == "half" and r.sliding_window is None
    assert r.frequencies(3)[1].item() == pytest.approx(1e5 ** (-2 / 64), rel=1e-6)
    j = s.to_json()
    assert json.loads(json.dumps(j))["rope"]["bases"][0] == 100000.0
    assert model_spec(smollm2) is s  # cached


@pytest.mark.real_model
def test_smollm2_rope_reproduces_hook_rot(smollm2):
    s = model_spec(smollm2)
    eq, ek = _rot_err(smollm2, s, ["The cat sat on the mat.", "When Mary and John went to the store, John"])
    assert eq < 1e-4 and ek < 1e-4


@pytest.mark.real_model
def test_smollm2_wrong_base_does_not_reproduce(smollm2):
    """Control: the TransformerLens base (10000) would not reproduce the hooks."""
    s = model_spec(smollm2)
    wrong = _synthetic(base=10000.0, d_head=64, rotary_dim=64, n_layers=30)
    toks = smollm2.to_tokens(["The cat sat on the mat and then it went to sleep."])
    _, cache = smollm2.run_with_cache(toks, names_filter=["blocks.2.attn.hook_q", "blocks.2.attn.hook_rot_q"])
    q = cache["blocks.2.attn.hook_q"]
    assert (wrong.apply(q, None, 2) - cache["blocks.2.attn.hook_rot_q"]).abs().max() > 1e-2
    assert (s.rope.apply(q, None, 2) - cache["blocks.2.attn.hook_rot_q"]).abs().max() < 1e-4


@pytest.mark.real_model
@pytest.mark.gemma
def test_gemma_spec_and_rotation(gemma):
    s = model_spec(gemma)
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_head) == (18, 4, 1, 256)
    assert s.qk_norm and s.attn_scale == pytest.approx(256 ** -0.5)
    assert s.tokenizer_adds_bos is True and s.bos_token_id == 2
    r = s.require_rope()
    assert r.sliding_window == 512
    for layer, t in enumerate(r.layer_types):
        is_global = (layer + 1) % 6 == 0
        assert t == ("full_attention" if is_global else "sliding_attention")
        assert r.base(layer) == (1e6 if is_global else 1e4)
    eq, ek = _rot_err(gemma, s, ["The cat sat on the mat.", "One two three four five six"])
    assert eq < 1e-4 and ek < 1e-4


def test_toy_positional_kinds(random_toy):
    rope = model_spec(random_toy("toy-offset-rope"))
    assert rope.positional == "rope" and rope.rope is not None and rope.rope.bases[0] == 10000.0
    q = torch.randn(1, 4, rope.n_heads, rope.d_head)
    assert rope.rope.apply(q).shape == q.shape
    for name, kind in (("toy-offset-abs", "learned"), ("toy-nope", "none")):
        s = model_spec(random_toy(name))
        assert s.positional == kind and s.rope is None
        with pytest.raises(NoRotaryError, match=repr(kind)):
            s.require_rope()
