"""PatchableModel on every decoder family (tiny random-init HF models, no downloads).

Independent references: HF eager logits (right- and left-padded batches), the HF counterfactual
run (every edge ablated), and central differences of exact edge patching in float64 (EAP scores
are its derivative) on one tiny model per structural variant.
"""

from __future__ import annotations

import pytest
import torch
from families import EXTRA_FAMILIES, FAMILIES, tiny_hf, tiny_model

import circuits
from circuits._forward import PatchableModel
from circuits.attribution import attribute, patchable
from circuits.metrics import logit_diff

ATOL = 1e-4
V = 64


def _smollm3_hf():
    """SmolLM3 with an interleaved NoPE layer (no_rope_layers[1] == 0)."""
    from transformers import AutoModelForCausalLM, SmolLM3Config

    cfg = SmolLM3Config(vocab_size=V, hidden_size=32, intermediate_size=48, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
                        eos_token_id=0, num_hidden_layers=3, no_rope_layers=[1, 0, 1])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
        with torch.no_grad():
            for n, w in m.named_parameters():
                if "norm" in n or n.endswith("bias"):
                    w.add_(torch.randn_like(w) * 0.3)
    return m


EXTRA = EXTRA_FAMILIES + ("smollm3",)


def _hf(family: str):
    return _smollm3_hf() if family == "smollm3" else tiny_hf(family)


def _toks(b: int, p: int, seed: int) -> torch.Tensor:
    t = torch.randint(4, V, (b, p), generator=torch.Generator().manual_seed(seed))
    t[:, 0] = 0  # BOS
    return t


def _hf_logits(hf, toks, mask):
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf(input_ids=toks, attention_mask=mask, position_ids=pos).logits


@pytest.mark.family_table("circuits")
@pytest.mark.parametrize("family", FAMILIES + EXTRA)
def test_logits_equal_hf_eager_right_and_left_padded(family):
    """Sequences of 11 tokens (longer than every tiny sliding window), lengths 11/7/9, padded on
    the right and on the left (position ids cumsum(mask) − 1, as PatchableModel uses)."""
    hf = _hf(family)
    pm = PatchableModel(hf)
    toks = _toks(3, 11, 0)
    lengths = [11, 7, 9]
    right = torch.zeros_like(toks)
    left = torch.zeros_like(toks)
    tl = toks.clone()
    for i, n in enumerate(lengths):
        right[i, :n] = 1
        left[i, 11 - n:] = 1
        tl[i, 11 - n:] = toks[i, :n]
        tl[i, : 11 - n] = 1  # pad id
    for t, m in ((toks, right), (tl, left)):
        ref = _hf_logits(hf, t, m)
        out = pm.run(t, m)
        err = ((ref - out).abs() * m[..., None]).max()
        assert err < ATOL, (family, float(err))
    # left-padded rows equal their unpadded runs (position ids follow the mask)
    short = pm.run(toks[1:2, :7])
    assert (pm.run(tl, left)[1, 4:] - short[0]).abs().max() < ATOL


@pytest.mark.family_table("circuits")
@pytest.mark.parametrize("family", FAMILIES + EXTRA)
def test_all_edges_ablated_is_the_counterfactual_run_none_is_clean(family):
    hf = _hf(family)
    pm = PatchableModel(hf)
    clean, corrupt = _toks(2, 9, 1), _toks(2, 9, 2)
    ones = torch.ones_like(clean)
    acts = pm.activations(corrupt)
    S, R = len(pm.senders), len(pm.receivers)
    kc = torch.zeros(2, pm.n_layers, pm.n_heads, 3, 9, 9, dtype=torch.bool)
    out = pm.run(clean, ablated=acts, keep=torch.zeros(2, 9, S, R, dtype=torch.bool), keep_cross=kc)
    assert (out - _hf_logits(hf, corrupt, ones)).abs().max() < ATOL
    out = pm.run(clean, ablated=acts, keep=torch.ones(2, 9, S, R, dtype=torch.bool),
                 keep_cross=torch.ones_like(kc))
    ref = _hf_logits(hf, clean, ones)
    assert (out - ref).abs().max() < ATOL
    assert (pm.run(corrupt) - ref).abs().max() > 1e-3  # clean and counterfactual differ


@pytest.mark.family_table("circuits")
@pytest.mark.parametrize("family", FAMILIES)
def test_attribute_select_faithfulness_run(family):
    """Through ``interp.load_model(directory)`` (a TransformerBridge), as a user would: the
    PatchableModel of the bridge equals the bridge's logits; EAP + greedy selection +
    faithfulness by real patching run, and the full circuit (every edge) recovers the model
    (f = 1)."""
    bridge = tiny_model(family)
    pm = patchable(bridge)
    t = _toks(2, 9, 7)
    with torch.no_grad():
        assert (pm.run(t) - bridge(t)).abs().max() < ATOL
    g = torch.Generator().manual_seed(3)
    clean = _toks(4, 8, 3)
    corrupt = clean.clone()
    corrupt[:, 2:5] = torch.randint(4, V, (4, 3), generator=g)
    met = logit_diff(torch.randint(4, V, (4,), generator=g), torch.randint(4, V, (4,), generator=g))
    graph = attribute(pm, clean, corrupt, met, method="eap")
    assert torch.isfinite(graph.same_pos).all() and graph.same_pos.abs().max() > 0
    full = circuits.select(graph, n_edges=10 ** 6, do_prune=False)
    r = circuits.faithfulness(pm, full, clean, corrupt, met, n_boot=20, include_bos=True)
    # f = (M(C) - M(∅)) / (M(N) - M(∅)) is ill-conditioned when the corruption barely moves the
    # metric (a random tiny model: M(N) - M(∅) ≈ 2e-4 on stablelm); float32 rounding of ~3e-8 then
    # reads as |f - 1| ≈ 1e-4. Check M(C) = M(N) to 1e-4 of the gap, the gap floored at 0.01.
    gap = max(abs(r.m_full - r.m_empty), 1e-2)
    assert abs(r.m_circuit - r.m_full) < 1e-4 * gap, r
    torch.testing.assert_close(r.per_example[0], r.per_example[1], atol=1e-5, rtol=0)
    small = circuits.select(graph, n_edges=5)
    r2 = circuits.faithfulness(pm, small, clean, corrupt, met, n_boot=20)
    assert torch.isfinite(torch.tensor(r2.f))


# one tiny float64 model per structural variant
VARIANTS = {
    "gpt_neox": "parallel block (two norms), partial rotary, fused per-head qkv, LayerNorm biases",
    "gptj": "parallel block (shared norm), interleaved rotary pairing, partial rotary",
    "gemma2": "attention and final logit soft-caps, sandwich norms, sliding window",
    "olmo2": "post-norm only, q/k RMSNorm over the whole projection",
    "phi3": "fused qkv [q|k|v], fused gate_up, partial rotary",
    "stablelm": "per-head LayerNorm q/k norms with per-head weights, parallel shared norm",
    "granite": "embedding/residual/attention/logit multipliers",
    "phi": "parallel block (shared LayerNorm), partial rotary, biases everywhere incl. lm_head",
    "qwen3": "per-head RMSNorm q/k norms, GQA",
    "gpt2": "Conv1D fused qkv, learned positions, LayerNorm",
}


def _layer(name: str) -> int:
    return int(name[1:].split("H")[0])


@pytest.mark.family_table("EAP = patching derivative")
@pytest.mark.parametrize("family", list(VARIANTS))
def test_eap_is_the_derivative_of_exact_edge_patching(family):
    """Same-position edges (every receiver kind) and crossing v edges: EAP = d/dε of exact
    patching toward the counterfactual (central differences, float64). Crossing q/k edges: EAP
    is g·Δz_t with the exact softmax move of the one patched score (through the soft-cap where
    there is one), so it equals g·Δz for Δz = z(one edge exactly patched) − z(clean), read from
    the patched forward, with g = ∂M/∂z of that layer."""
    from helpers import assert_eap_is_patching_derivative

    from circuits.attribution import one_edge_keep
    from circuits.metrics import MetricBatch

    hf = tiny_hf(family).double()
    if family == "gemma2":  # random tiny scores are ≪ 5: a cap of 0.2 makes tanh bite (PatchableModel
        hf.config.attn_logit_softcapping = 0.2  # reads it from the family; HF is not used here)
    pm = patchable(hf)
    if family == "gemma2":
        assert pm.attn_softcap == 0.2
    g = torch.Generator().manual_seed(0)
    n, p = 3, 8
    clean = _toks(n, p, 5)
    corrupt = clean.clone()
    corrupt[:, 2:5] = torch.randint(4, V, (n, 3), generator=g)
    met = logit_diff(torch.randint(4, V, (n,), generator=g), torch.randint(4, V, (n,), generator=g))
    graph = attribute(pm, clean, corrupt, met, method="eap")
    edges = graph.top_edges(8, kinds=["same"])
    edges += [e for r in ("q", "k", "v", "mlp") for e in graph.top_edges(2, kinds=["same"], receiver_kinds=[r])]
    edges += graph.top_edges(3, kinds=["v"])
    assert any(e.receiver == "logits" for e in edges)
    assert any(e.receiver.endswith((".q", ".k")) for e in edges)
    assert_eap_is_patching_derivative(pm, clean, corrupt, met, edges, eps=1e-4, rtol=1e-4, atol=1e-10)
    # crossing q/k edges
    ones = torch.ones_like(clean)
    mb = MetricBatch.from_mask(ones, None, None)
    emb = pm.embed(clean, pm.position_ids(ones)).clone().requires_grad_(True)
    with torch.enable_grad():
        out = pm.forward(None, ones, embeds=emb, grad_nodes=True)
        gz = torch.autograd.grad(met(out["logits"], mb).mean(), out["z"])
    z0, x = pm.activations(clean).z, pm.activations(corrupt)
    qk = graph.top_edges(3, kinds=["q"]) + graph.top_edges(3, kinds=["k"])
    assert abs(qk[0].score) > 1e-9 and abs(qk[3].score) > 1e-9
    for e in qk:
        l = _layer(e.sender)
        z = pm.forward(clean, None, ablated=x, record=True, **one_edge_keep(pm, e, n, p))["activations"].z
        lin = float((gz[l] * (z[:, l] - z0[:, l])).sum())
        assert abs(lin - e.score) <= 1e-6 * abs(e.score) + 1e-15, (e, lin)


OPTIONS = [("phi", {"qk_layernorm": True}), ("gpt_neox", {"use_parallel_residual": False}),
           ("stablelm", {"use_parallel_residual": False, "qk_layernorm": False}),
           ("olmo2", {"attention_bias": True}), ("gemma2", {"attention_bias": True}),
           ("qwen2", {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 1,
                      "layer_types": ["full_attention", "sliding_attention"]})]


@pytest.mark.parametrize("family,options", OPTIONS, ids=[f for f, _ in OPTIONS])
def test_logits_equal_hf_eager_config_options(family, options):
    """The other side of each family's switches: Phi with q/k LayerNorms, sequential NeoX and
    StableLM, OLMo-2 and Gemma 2 with attention biases (b_O inside the post norm), Qwen2 sliding
    layers."""
    from families import tiny_config
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(family)
    for k, v in options.items():
        setattr(cfg, k, v)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
        with torch.no_grad():
            for n, w in hf.named_parameters():
                if "norm" in n or n.endswith("bias"):
                    w.add_(torch.randn_like(w) * 0.3)
    pm = PatchableModel(hf)
    toks = _toks(2, 11, 4)
    mask = torch.ones_like(toks)
    mask[1, 7:] = 0
    err = ((_hf_logits(hf, toks, mask) - pm.run(toks, mask)).abs() * mask[..., None]).max()
    assert err < ATOL, float(err)
    acts = pm.activations(_toks(2, 11, 5))
    S, R = len(pm.senders), len(pm.receivers)
    out = pm.run(toks, ablated=acts, keep=torch.zeros(2, 11, S, R, dtype=torch.bool),
                 keep_cross=torch.zeros(2, pm.n_layers, pm.n_heads, 3, 11, 11, dtype=torch.bool))
    assert (out - pm.run(_toks(2, 11, 5))).abs().max() < ATOL


@pytest.mark.parametrize("family", ["gpt_neox", "gptj", "phi", "stablelm", "llama"])
def test_parallel_block_graph_has_no_head_to_own_mlp_edges(family):
    """Parallel blocks: the MLP of layer l reads the block input, so heads of layer l are not
    upstream of M{l} (and patching their edges into it is refused by `valid`); sequential
    blocks keep those edges (the forward's exactness vs HF is checked above)."""
    pm = PatchableModel(tiny_hf(family))
    si, ri = pm.sender_index, pm.receiver_index
    parallel = family != "llama"
    assert (pm.parallel is not None) == parallel
    assert bool(pm.valid[si["L1H0"], ri["M1"]]) != parallel
    assert pm.valid[si["M0"], ri["M1"]] and pm.valid[si["L0H2"], ri["M1"]]
    assert (pm.n_upstream(1, "mlp") == pm.n_upstream(1, "attn")) == parallel


@pytest.mark.parametrize("family", list(VARIANTS))
def test_condensed_ig_receiver_grads_equal_per_point(family):
    """EAP-IG keeps its attention-receiver gradients condensed (summed scaled q/k/v gradients
    plus per-point norm inputs and one scalar per receiver): the mean over points of the
    receivers' input gradients equals the per-point form (each point's q/k/v gradients through
    its own norm Jacobian, PatchableModel.attn_receiver_grads) on every structural variant —
    RMSNorm, LayerNorm with biases, Gemma's 1 + w, parallel blocks (float64)."""
    from circuits._stream import CondensedGradPoints, ig_grads
    from circuits.metrics import MetricBatch

    pm = patchable(tiny_hf(family).double())
    g = torch.Generator().manual_seed(1)
    n, p, m = 2, 7, 3
    clean = _toks(n, p, 7)
    corrupt = clean.clone()
    corrupt[:, 3:] = torch.randint(4, V, (n, p - 3), generator=g)
    met = logit_diff(torch.randint(4, V, (n,), generator=g), torch.randint(4, V, (n,), generator=g))
    ones = torch.ones_like(clean)
    e, ea = (pm.embed(t, pm.position_ids(ones)) for t in (clean, corrupt))
    mb = lambda mc: MetricBatch.from_mask(ones.repeat(mc, 1), torch.arange(n).repeat(mc), None)  # noqa: E731
    for chunk in (1, 2):
        full = ig_grads(pm, met, e, ea, ones, mb, m, chunk, condense=False)
        cond = ig_grads(pm, met, e, ea, ones, mb, m, chunk)
        assert isinstance(cond, CondensedGradPoints) == (pm.qk_norm != "proj")
        for l in range(pm.n_layers):
            a, b = cond.attn(pm, l), full.attn(pm, l)
            assert float((a - b).abs().max()) <= 1e-10 * float(b.abs().max()), (family, chunk, l)
