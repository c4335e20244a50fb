"""interp.rope against closed forms, the models' own hooks and the planted toy mechanism."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

import interp.rope as R
from interp.spec import NoRotaryError, RopeSpec, model_spec

PROMPTS = ["The cat sat on the mat and looked at the dog.", "When Mary and John went to the store, John gave"]


def _synthetic(d_head: int = 16, rotary_dim: int = 8, base: float = 100.0) -> RopeSpec:
    inv = 1.0 / (base ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
    return RopeSpec(d_head=d_head, rotary_dim=rotary_dim, pairing="half", layer_types=("full_attention",),
                    bases=(base,), inv_freq={"full_attention": tuple(inv.tolist())},
                    attention_scaling={"full_attention": 1.0}, rope_types={"full_attention": "default"},
                    scaling={"full_attention": {}})


@pytest.fixture(scope="module")
def offset_rope(toy_model):
    return toy_model("toy-offset-rope")


@pytest.fixture(scope="module")
def offset_prompts():
    from interp.zoo import make_batch

    return make_batch("toy-offset-rope", 12, seed=1).texts()


# ---------------------------------------------------------------- closed forms


def test_chunk_logits_sum_to_scaled_dot_product_with_pass_dims():
    rope = _synthetic(d_head=16, rotary_dim=8)
    q = torch.randn(2, 5, 4, 16, dtype=torch.float64)
    k = torch.randn(2, 5, 2, 16, dtype=torch.float64)  # GQA: 2 query heads per KV head
    c = R.chunk_logits(q, k, rope, 0.25)
    assert c.shape == (2, 4, 5, 5, 5)  # 4 chunks + pass
    ref = 0.25 * torch.einsum("bthd,bshd->bhts", q, k.repeat_interleave(2, dim=2))
    assert torch.allclose(c.sum(2), ref, atol=1e-12)
    # the pass component is exactly the non-rotated dims
    assert torch.allclose(c[:, :, -1], 0.25 * torch.einsum("bthd,bshd->bhts", q[..., 8:],
                                                            k.repeat_interleave(2, dim=2)[..., 8:]))


def test_select_chunks():
    rope = _synthetic(d_head=64, rotary_dim=64)
    assert R.select_chunks(rope, highest=0.25).nonzero().flatten().tolist() == list(range(8))
    assert R.select_chunks(rope, lowest=0.25).nonzero().flatten().tolist() == list(range(24, 32))
    assert R.select_chunks(rope, chunks=[3, 5]).sum() == 2
    with pytest.raises(ValueError):
        R.select_chunks(rope, highest=0.5, lowest=0.5)
    with pytest.raises(ValueError, match="outside"):
        R.select_chunks(rope, chunks=[40])


@pytest.mark.slow
def test_men_b_closed_form_and_published_minimum_bases():
    b = R.men_b(1e4, 128, 10)
    assert b[0].item() == pytest.approx(64.0)
    assert b[3].item() == pytest.approx(sum(math.cos(3 * 1e4 ** (-2 * i / 128)) for i in range(64)))
    # Men et al. 2024, d = 128 (lo= only skips bases that fail early, to keep the test short)
    assert R.min_base(4096, 128, lo=2.0e4) == pytest.approx(2.7e4, rel=0.1)
    assert R.min_base(8192, 128, lo=6.0e4) == pytest.approx(8.4e4, rel=0.1)
    assert R.min_base(1024, 128, lo=3.0e3) == pytest.approx(4.3e3, rel=0.1)
    # the bound holds at the minimum and fails just below the 4k threshold
    assert R.first_negative(R.min_base(4096, 128, lo=2.0e4), 128, 4096) is None
    assert R.first_negative(2.5e4, 128, 4096) is not None


def test_critical_dimension_matches_liu_closed_form():
    assert R.critical_dimension(1e4, 128, 4096) == 92  # LLaMA-2, Liu et al. 2023
    for base in (500.0, 1e4, 1e5, 5e5, 1e6):
        for d, T in ((64, 2048), (128, 4096), (256, 32768)):
            closed = 2 * math.ceil((d / 2) * math.log(T / (2 * math.pi)) / math.log(base))
            assert R.critical_dimension(base, d, T) == max(0, min(d, closed))


@pytest.mark.slow
def test_base_bounds_from_numbers():
    r = R.base_bounds(base=1e4, d=128, length=4096, compute_min_base=False)
    assert r.satisfied == [False] and r.first_negative[0] is not None and r.critical_dim == [92]
    json.dumps(r.to_json())
    r.plot()


# ---------------------------------------------------------------- toy models (fast)


def test_pairing_chunk_norms_toy(offset_rope):
    """Chunk norms of pre-rotation q equal those of hook_rot_q for the model's pairing only."""
    rope = model_spec(offset_rope).require_rope()
    wrong = dataclasses.replace(rope, pairing="adjacent")
    toks = offset_rope.to_tokens(["1 2 3 4 5 6 7 8 9 10 11 12"])
    _, cache = offset_rope.run_with_cache(toks)
    for name in ("q", "k"):
        pre, rot = cache[f"blocks.0.attn.hook_{name}"], cache[f"blocks.0.attn.hook_rot_{name}"]
        assert torch.allclose(rope.chunks(pre).norm(dim=-1), rope.chunks(rot).norm(dim=-1), atol=1e-5)
        assert (wrong.chunks(pre).norm(dim=-1) - wrong.chunks(rot).norm(dim=-1)).abs().max() > 1e-2


@pytest.mark.slow
def test_usage_and_decomposition_toy(offset_rope, offset_prompts):
    u = R.frequency_usage(offset_rope, offset_prompts, decompose=True, batch_size=4)
    assert u.q_norm.shape == (1, 2, 16) and u.k_norm.shape == (1, 2, 16)
    assert u.decomposition is not None and u.decomposition.max_abs_error < 1e-4
    assert torch.allclose(u.q_share().sum(-1), torch.ones(1, 2))
    # wavelength / rotation bookkeeping: chunk 0 turns (T−1)/2π times
    assert u.rotations[0, 0].item() == pytest.approx((u.context - 1) / (2 * math.pi), rel=1e-5)
    assert u.slow[0].tolist() == (u.rotations[0] < 1).tolist() and bool(u.slow[0, -1]) and not bool(u.slow[0, 0])
    # independent check of the decomposition on one cached prompt
    spec = model_spec(offset_rope)
    toks = offset_rope.to_tokens(offset_prompts[:1])
    _, cache = offset_rope.run_with_cache(toks)
    c = R.chunk_logits(cache["blocks.0.attn.hook_rot_q"], cache["blocks.0.attn.hook_rot_k"], spec.rope, spec.attn_scale)
    T = toks.shape[1]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    assert (c.sum(2) - cache["blocks.0.attn.hook_attn_scores"])[..., causal].abs().max() < 1e-4
    full = R.logit_decomposition(offset_rope, offset_prompts[:2], keep_full=True)
    assert len(full.full) == 2 and full.full[0].shape[:3] == (1, 2, 16)
    for r in (u, u.decomposition):
        json.dumps(r.to_json())
        r.plot()
    u.plot("k"), u.plot_profile(0, 1), u.decomposition.plot_head(0, 1)
    assert len(u.top(2)) == 2


@pytest.mark.slow
def test_planted_offset_head_is_high_frequency_and_needs_it(offset_rope, offset_prompts):
    """toy-offset-rope: L0H1 attends to t−3 (manifest). It rests on the high band."""
    pf = R.positional_frequency_heads(offset_rope, offset_prompts, fraction=0.25, max_offset=4)
    assert pf.positional[0, 1] > 0.9
    assert pf.high_share[0, 1] > 0.4  # uniform usage would give 0.25
    assert "L0H1" in [h for h, _, _ in pf.heads]
    ab = R.band_ablation(offset_rope, offset_prompts, fraction=0.25, max_offset=4)
    o3 = ab.scores[..., ab.score_names.index("offset_3")]
    base = o3[0, 0, 1]
    assert o3[ab.conditions.index("unrotate highest 25%"), 0, 1] < 0.5 * base
    assert o3[ab.conditions.index("zero highest 25%"), 0, 1] < 0.5 * base
    assert o3[ab.conditions.index("unrotate lowest 25%"), 0, 1] > 0.9 * base
    assert "L0H1" in [h for h, _, _ in ab.lost_pattern("unrotate highest 25%", "offset_3")]
    assert ab.top(1, "unrotate highest 25%", "offset_3")[0][1] < 0
    for r in (pf, ab):
        json.dumps(r.to_json())
        r.plot()
    ab.plot_heads("offset_3")
    # an empty band re-rotates the stashed pre-rotation q/k: must reproduce the intact model
    same = R.band_ablation(offset_rope, offset_prompts[:4], bands={"none": []}, modes=("unrotate",), max_offset=4)
    assert torch.allclose(same.scores[0], same.scores[1], atol=1e-5) and abs(same.loss_change[1]) < 1e-5
    with pytest.raises(ValueError, match="mode"):
        R.band_ablation(offset_rope, offset_prompts, modes=("rotate",))


def test_band_ablation_group_losses_equal_separate_runs(offset_rope, offset_prompts):
    """Per-prompt losses: pooled they give ``loss``; on a group of prompts they give what
    band_ablation of that group alone measures (a separate run, other batches and padding)."""
    prompts = offset_prompts[:6]
    ab = R.band_ablation(offset_rope, prompts, fraction=0.25, max_offset=4, batch_size=4)
    assert ab.prompt_nll.shape == (len(ab.conditions), 6) and int(ab.prompt_predictions.sum()) == ab.n_predictions
    pooled = ab.prompt_nll.sum(1) / ab.prompt_predictions.sum()
    assert torch.allclose(pooled, ab.loss.double(), rtol=1e-6)
    groups = [[0, 2, 5], [1], [3, 4]]
    got = ab.group_loss_change(groups)
    for g, row in zip(groups, got):
        alone = R.band_ablation(offset_rope, [prompts[i] for i in g], fraction=0.25, max_offset=4, batch_size=2)
        assert torch.allclose(row, alone.loss_change.double(), atol=1e-5), (g, row, alone.loss_change)
    assert got.abs().max() > 1e-3  # the ablations do change the loss on this model
    with pytest.raises(ValueError, match="prompt indices"):
        ab.group_loss_change([[0, 6]])
    json.dumps(ab.to_json())


def test_unrotated_attention_is_shift_invariant(offset_rope, offset_prompts):
    full = R.shift_invariance(offset_rope, offset_prompts[:4], deltas=(0, 1000),
                              unrotated=list(range(16)), dtypes=("float32", "bfloat16"))
    assert full.D.tolist() == [0.0, 0.0]
    rope = R.shift_invariance(offset_rope, offset_prompts[:4], deltas=(0, 1000), dtypes=("float32", "bfloat16"))
    assert rope.D[1] > 10 * rope.D[0] > 0  # bf16 breaks relative-position invariance, fp32 barely
    assert 0 <= rope.first_token_share[1] <= 1
    json.dumps(rope.to_json())
    rope.plot()


def test_no_rope_model_gets_clear_error(random_toy):
    m = random_toy("toy-offset-abs")
    with pytest.raises(NoRotaryError, match="learned"):
        R.frequency_usage(m, ["1 2 3"])
    with pytest.raises(NoRotaryError, match="none"):
        R.base_bounds(random_toy("toy-nope"))


# ---------------------------------------------------------------- real models


@pytest.mark.real_model
def test_smollm2_pairing_and_decomposition(smollm2):
    spec = model_spec(smollm2)
    rope = spec.rope
    wrong = dataclasses.replace(rope, pairing="adjacent")
    toks = smollm2.to_tokens(PROMPTS[:1])
    _, cache = smollm2.run_with_cache(toks, names_filter=[f"blocks.{l}.attn.{h}" for l in (0, 7) for h in (
        "hook_q", "hook_rot_q", "hook_rot_k", "hook_attn_scores")])
    for l in (0, 7):
        pre, rot = cache[f"blocks.{l}.attn.hook_q"], cache[f"blocks.{l}.attn.hook_rot_q"]
        assert (rope.chunks(pre).norm(dim=-1) - rope.chunks(rot).norm(dim=-1)).abs().max() < 1e-4
        assert (wrong.chunks(pre).norm(dim=-1) - wrong.chunks(rot).norm(dim=-1)).abs().max() > 1e-2
        c = R.chunk_logits(rot, cache[f"blocks.{l}.attn.hook_rot_k"], rope, spec.attn_scale)
        T = toks.shape[1]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        assert (c.sum(2) - cache[f"blocks.{l}.attn.hook_attn_scores"])[..., causal].abs().max() < 1e-4
    u = R.frequency_usage(smollm2, PROMPTS, decompose=True)
    assert u.decomposition.max_abs_error < 1e-4  # every layer and head, both prompts (padded)
    assert u.q_norm.shape == (30, 9, 32) and u.k_norm.shape == (30, 3, 32)
    assert u.bases[0] == 1e5


@pytest.mark.real_model
def test_smollm2_band_ablation(smollm2):
    ab = R.band_ablation(smollm2, PROMPTS[:1], fraction=0.25, modes=("unrotate",), max_offset=2)
    assert ab.conditions == ["intact", "unrotate highest 25%", "unrotate lowest 25%"]
    assert ab.scores.shape[:3] == (3, 30, 9)
    assert torch.isfinite(ab.loss).all()
    assert ab.loss[1] > ab.loss[0]  # the model needs its high frequencies


@pytest.mark.real_model
@pytest.mark.gemma
def test_gemma_decomposition_per_layer_type(gemma):
    u = R.frequency_usage(gemma, PROMPTS[:1], decompose=True)
    assert u.decomposition.max_abs_error < 1e-4
    assert u.bases[0] == 1e4 and u.bases[5] == 1e6
    # global layers rotate slower: their last chunk has a longer wavelength
    assert u.wavelengths[5, -1] > 50 * u.wavelengths[0, -1]
    assert set(u.summary()) == {"sliding_attention", "full_attention"}
    # q/k-norm model: re-rotating the stashed hook_q_normed/hook_k_normed reproduces the model
    same = R.band_ablation(gemma, PROMPTS[:1], bands={"none": []}, modes=("unrotate",), max_offset=2)
    assert abs(same.loss_change[1]) < 1e-4 and torch.allclose(same.scores[0], same.scores[1], atol=1e-4)
    b = R.base_bounds(gemma, length=512, compute_min_base=False)
    assert b.layer_types == ["sliding_attention", "full_attention"] and b.bases == [1e4, 1e6]
