"""Sparse circuit masks (:class:`circuits._sparse.SparseMasks`) give the same patched forward as
the dense ``keep [b T S R]`` / ``keep_cross [b L H 3 T T]`` masks (which
tests/test_faithfulness.py checks against TransformerLens hook patching): positions, spans and
the non-positional granularity, small / half / large circuits (kept-edge and ablated-edge
corrections), crossing edges constant or mixed per head, BOS protection, padding, GQA, Gemma 3
(sandwich norms, sliding windows), Gemma 2 (soft-caps), OLMo-2 (q/k norm over the projection,
post-norm) and GPT-J (parallel block)."""

from __future__ import annotations

import pytest
import torch

from circuits._forward import PatchableModel
from circuits._sparse import SparseMasks
from circuits.faithfulness import expand_masks
from helpers import _tiny_gemma

B, T = 3, 9


def _llama_gqa():
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=0, eos_token_id=0, pad_token_id=1, attn_implementation="eager")
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _family(name):
    from families import tiny_hf

    return tiny_hf(name).eval()


MODELS = {
    "llama-gqa": _llama_gqa,
    "gemma3": lambda: _tiny_gemma(),
    "gemma2": lambda: _family("gemma2"),
    "olmo2": lambda: _family("olmo2"),
    "gptj": lambda: _family("gptj"),
}


def _circuit(pm, P, density, seed, mode="mixed"):
    """Random abstract masks: same-position edges at ``density`` (valid edges only); crossing
    edges per head all kept, all ablated or (``mode="mixed"``) random."""
    g = torch.Generator().manual_seed(seed)
    S, R = len(pm.senders), len(pm.receivers)
    same = (torch.rand(P, S, R, generator=g) < density) & pm.valid[None]
    L, H = pm.n_layers, pm.n_heads
    cross = torch.rand(L, H, 3, P, P, generator=g) < density
    kind = torch.randint(0, 3 if mode == "mixed" else 2, (L, H, 3), generator=g)  # 0 none, 1 all, 2 random
    cross = torch.where((kind == 1)[..., None, None], True, torch.where((kind == 0)[..., None, None], False, cross))
    return same, cross


def _C(same, cross, pm):
    from circuits.circuit import Circuit

    return Circuit(same, cross, same.float(), cross.float(), list(pm.senders), list(pm.receivers),
                   list(range(same.shape[0])), {})


def _data(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, vocab, (B, T), generator=g)
    corrupt = torch.randint(3, vocab, (B, T), generator=g)
    clean[:, 0] = corrupt[:, 0] = 2
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, -2:] = 0  # right padding
    return clean, corrupt, mask


@pytest.fixture(scope="module", params=[
    pytest.param(n, marks=() if n in ("llama-gqa", "gemma3") else pytest.mark.slow) for n in MODELS])
def model_data(request):
    pm = PatchableModel(MODELS[request.param]().double())
    clean, corrupt, mask = _data(pm.W_E.shape[0])
    return request.param, pm, clean, mask, pm.activations(corrupt, mask)


def _pos_index(gran, mask):
    if gran == "position":
        pi, P = torch.arange(T).expand(B, T).clone(), T
    elif gran == "span":
        pi, P = torch.tensor([0, 1, 1, 1, 2, 2, 3, 3, 3]).expand(B, T).clone(), 4
    else:
        pi, P = torch.zeros(B, T, dtype=torch.long), 1
    return torch.where(mask.bool(), pi, -1), P


@pytest.mark.parametrize("gran", ["position", "span", "none"])
@pytest.mark.parametrize("density", [0.01, 0.5, 0.97])
def test_sparse_masks_equal_dense_masks(model_data, gran, density):
    name, pm, clean, mask, abl = model_data
    pi, P = _pos_index(gran, mask)
    protect = torch.zeros(B, T, dtype=torch.bool)
    protect[:, 0] = True
    for seed, mode in ((0, "mixed"), (1, "const")):
        same, cross = _circuit(pm, P, density, seed, mode)
        keep, keep_cross = expand_masks(_C(same, cross, pm), pi, protect=protect)
        dense = pm.run(clean, mask, ablated=abl, keep=keep, keep_cross=keep_cross)
        sparse = pm.run(clean, mask, ablated=abl, masks=SparseMasks.build(same, cross, pi, protect))
        err = (sparse - dense).abs().max()
        assert err <= 1e-9 * dense.abs().max(), (name, gran, density, mode, float(err))


def test_sparse_masks_without_protection_and_mean_ablation(model_data):
    """include_bos (nothing protected) and a batch-1 (mean) ablation source."""
    name, pm, clean, mask, abl = model_data
    mean = abl.mean()
    pi, P = _pos_index("span", mask)
    same, cross = _circuit(pm, P, 0.05, 3)
    keep, keep_cross = expand_masks(_C(same, cross, pm), pi)
    dense = pm.run(clean, mask, ablated=mean, keep=keep, keep_cross=keep_cross)
    sparse = pm.run(clean, mask, ablated=mean, masks=SparseMasks.build(same, cross, pi))
    assert torch.allclose(sparse, dense, rtol=0, atol=1e-9 * float(dense.abs().max())), name


def test_sparse_masks_store_only_needed_senders(model_data):
    _, pm, clean, mask, abl = model_data
    pi, P = _pos_index("none", mask)
    S, R = len(pm.senders), len(pm.receivers)
    same = torch.zeros(1, S, R, dtype=torch.bool)
    same[0, 0, R - 1] = True  # embed -> logits only
    m = SparseMasks.build(same, torch.zeros(pm.n_layers, pm.n_heads, 3, 1, 1, dtype=torch.bool), pi)
    groups = [(pm.receiver_slice(l).start, pm.receiver_slice(l).stop - 1, pm.n_upstream(l, "attn"))
              for l in range(pm.n_layers)] + [(R - 1, R, S)]
    slot = m.senders_needed(groups, S)
    assert int((slot >= 0).sum()) == 1 and int(slot[0]) == 0


def _planted_four_way(pm, P):
    """Span circuit whose heads mix all four (q, k) source combinations over the causal span
    pairs (layer 0, head 0 planted; every other head random), plus a varying v mask."""
    same, cross = _circuit(pm, P, 0.5, 7)
    p = torch.arange(P)
    cross[0, 0, 0] = (p[:, None] + p[None, :]) % 2 == 0  # (0,0) (1,1): q kept; (1,0) (2,1): ablated
    cross[0, 0, 1] = (p[None, :] % 2 == 0).expand(P, P)  # key span 0, 2: k kept
    cross[0, 0, 2] = p[None, :] < p[:, None]
    return same, cross


@pytest.mark.parametrize("path", ["fused", "fused-chunks", "blocks", "elements"])
def test_sparse_masks_block_and_element_crossing_paths(model_data, path, monkeypatch):
    """Fused attention per query run (no pattern; not with soft-caps), span-block crossing path
    (one product per (query run, key run) block; pattern kept) and the per-element path (concrete
    masks, four-combination formula) all equal the dense masks, with padding, BOS protection and
    (Gemma 3) sliding windows."""
    import circuits._sparse as sparse_mod

    name, pm, clean, mask, abl = model_data
    if path == "elements":
        monkeypatch.setattr(sparse_mod, "_MAX_RUNS", 0)
    if path == "fused-chunks":  # query chunks of 2 rows inside the runs
        monkeypatch.setattr(sparse_mod, "_QCHUNK", 2)
    pi, P = _pos_index("span", mask)
    protect = torch.zeros(B, T, dtype=torch.bool)
    protect[:, 0] = True
    same, cross = _planted_four_way(pm, P)
    m = SparseMasks.build(same, cross, pi, protect)
    m.need_pattern = path == "blocks"
    assert (m._runs() is None) == (path == "elements")
    st = m._head_status(0)
    assert int(st[0, 0]) == -1 and int(st[0, 1]) == -1 and int(st[0, 2]) == -1
    keep, keep_cross = expand_masks(_C(same, cross, pm), pi, protect=protect)
    dense = pm.run(clean, mask, ablated=abl, keep=keep, keep_cross=keep_cross)
    sparse = pm.run(clean, mask, ablated=abl, masks=m)
    err = (sparse - dense).abs().max()
    assert err <= 1e-9 * dense.abs().max(), (name, path, float(err))


@pytest.mark.parametrize("layout", ["disagree", "split"])
def test_sparse_masks_span_layouts(model_data, layout):
    """Examples whose spans sit at different tokens (no shared runs: per-element path) and an
    abstract position split over two runs (block path) equal the dense masks."""
    name, pm, clean, mask, abl = model_data
    if layout == "disagree":
        pi = torch.tensor([[0, 1, 1, 1, 2, 2, 3, 3, 3], [0, 1, 1, 2, 2, 2, 3, 3, 3],
                           [0, 1, 2, 2, 2, 2, 3, 3, 3]])
    else:
        pi = torch.tensor([0, 1, 1, 2, 2, 1, 1, 3, 3]).expand(B, T).clone()
    pi = torch.where(mask.bool(), pi, -1)
    P = 4
    m_runs = SparseMasks.build(torch.zeros(P, 1, 1, dtype=torch.bool),
                               torch.zeros(1, 1, 3, P, P, dtype=torch.bool), pi)._runs()
    assert (m_runs is None) == (layout == "disagree")
    if m_runs is not None:
        assert [r[2] for r in m_runs] == [0, 1, 2, 1, 3]
    same, cross = _planted_four_way(pm, P)
    keep, keep_cross = expand_masks(_C(same, cross, pm), pi)
    dense = pm.run(clean, mask, ablated=abl, keep=keep, keep_cross=keep_cross)
    sparse = pm.run(clean, mask, ablated=abl, masks=SparseMasks.build(same, cross, pi))
    err = (sparse - dense).abs().max()
    assert err <= 1e-9 * dense.abs().max(), (name, layout, float(err))


@pytest.mark.parametrize("gran", ["position", "span", "none"])
def test_sparse_masks_batch_one(model_data, gran):
    """One example (each abstract position's tokens consecutive: same-position corrections as
    slices), BOS protected, mixed crossing heads."""
    name, pm, clean, mask, abl = model_data
    pi, P = _pos_index(gran, mask)
    pi, c1, m1 = pi[:1], clean[:1], mask[:1]
    protect = torch.zeros(1, T, dtype=torch.bool)
    protect[:, 0] = True
    a1 = pm.activations(clean[1:2].flip(1), m1)
    for density in (0.01, 0.5):
        same, cross = _circuit(pm, P, density, 5)
        keep, keep_cross = expand_masks(_C(same, cross, pm), pi, protect=protect)
        dense = pm.run(c1, m1, ablated=a1, keep=keep, keep_cross=keep_cross)
        sparse = pm.run(c1, m1, ablated=a1, masks=SparseMasks.build(same, cross, pi, protect))
        err = (sparse - dense).abs().max()
        assert err <= 1e-9 * dense.abs().max(), (name, gran, density, float(err))


def test_sparse_masks_smollm2_span_circuit_fused(smollm2):
    """SmolLM2 (GQA, RoPE) in float64, 8 equal spans, BOS protected: the fused per-run attention
    and the same-position products equal the dense masks."""
    import copy

    pm = PatchableModel(copy.deepcopy(smollm2.original_model).double())  # the fixture is shared
    g = torch.Generator().manual_seed(1)
    n = 48
    clean = torch.randint(100, 1000, (1, n), generator=g)
    corrupt = clean.clone()
    corrupt[:, n // 2:] = torch.randint(100, 1000, (1, n - n // 2), generator=g)
    mask = torch.ones(1, n, dtype=torch.long)
    abl = pm.activations(corrupt, mask)
    pi = (torch.arange(n) * 8 // n)[None]
    protect = torch.zeros(1, n, dtype=torch.bool)
    protect[:, 0] = True
    same, cross = _circuit(pm, 8, 0.05, 11)
    m = SparseMasks.build(same, cross, pi, protect)
    assert m._runs() is not None and len(m._runs()) == 8
    keep, keep_cross = expand_masks(_C(same, cross, pm), pi, protect=protect)
    dense = pm.run(clean, mask, ablated=abl, keep=keep, keep_cross=keep_cross)
    sparse = pm.run(clean, mask, ablated=abl, masks=m)
    err = (sparse - dense).abs().max()
    assert err <= 1e-9 * dense.abs().max(), float(err)


@pytest.mark.parametrize("density", [0.0, 0.02])
def test_sparse_masks_kept_pair_path(model_data, density, monkeypatch):
    """Position granularity with few kept crossing pairs on the per-element path (as at long
    context, where the tokens form more than _MAX_RUNS runs): mixed heads take the ablated
    product plus each kept pair's own q/k score and A·(v − v*) — equal to the dense masks,
    with padding and BOS protection; and the pair path is really taken."""
    import circuits._sparse as sparse_mod

    name, pm, clean, mask, abl = model_data
    monkeypatch.setattr(sparse_mod, "_MAX_RUNS", 0)
    pi, P = _pos_index("position", mask)
    protect = torch.zeros(B, T, dtype=torch.bool)
    protect[:, 0] = True
    same, cross = _circuit(pm, P, density, 11)
    same = pm.valid[None].expand_as(same).clone()  # every same-position edge: current q/k/v ≠ ablated
    cross[0, 0] = False  # layer 0 head 0: a few kept pairs of every kind (mixed)
    cross[0, 0, :, 5, 2] = True
    cross[0, 0, 0, 7, 3] = cross[0, 0, 1, 6, 6] = cross[0, 0, 2, 8, 1] = True
    m = SparseMasks.build(same, cross, pi, protect)
    st = m._head_status(0)
    assert bool((st[0] == -1).all())
    pairs = m._kept_pairs(0, st)
    assert pairs is not None and all(len(pairs[c]) > 0 for c in range(3))
    keep, keep_cross = expand_masks(_C(same, cross, pm), pi, protect=protect)
    dense = pm.run(clean, mask, ablated=abl, keep=keep, keep_cross=keep_cross)
    sparse = pm.run(clean, mask, ablated=abl, masks=m)
    err = (sparse - dense).abs().max()
    assert err <= 1e-9 * dense.abs().max(), (name, density, float(err))


def test_sparse_masks_record_patterns(model_data):
    """A recording run with sparse masks records the patched attention patterns (the fused
    evaluator path, which returns none, is left for the pattern-keeping one): equal to the dense
    masks' patterns."""
    name, pm, clean, mask, abl = model_data
    pi, P = _pos_index("span", mask)
    protect = torch.zeros(B, T, dtype=torch.bool)
    protect[:, 0] = True
    same, cross = _circuit(pm, P, 0.3, 5)
    keep, keep_cross = expand_masks(_C(same, cross, pm), pi, protect=protect)
    dense = pm.forward(clean, mask, ablated=abl, keep=keep, keep_cross=keep_cross, record=True)["activations"]
    m = SparseMasks.build(same, cross, pi, protect)
    sparse = pm.forward(clean, mask, ablated=abl, masks=m, record=True)["activations"]
    assert m.need_pattern and sparse.pattern.shape == dense.pattern.shape
    assert (sparse.pattern - dense.pattern).abs().max() <= 1e-9, name
