"""Attribution (EAP, EAP-IG, crossing edges, granularities) validated against exact patching."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import spearmanr

from circuits import AttributionGraph, attribute
from circuits._forward import Activations
from circuits.attribution import (crossing_scores, exact_edge_score, exact_node_scores,
                                  patchable)
from circuits.metrics import MetricBatch, kl_to_clean, logit_diff, prob_diff

RESULTS: dict[str, float] = {}


def _data(model, n=6, p=8, seed=0, span=(2, 5)):
    g = torch.Generator().manual_seed(seed)
    V = model.original_model.config.vocab_size
    clean = torch.randint(3, V, (n, p), generator=g)
    clean[:, 0] = model.tokenizer.bos_token_id
    corrupt = clean.clone()
    corrupt[:, span[0]:span[1]] = torch.randint(3, V, (n, span[1] - span[0]), generator=g)
    met = logit_diff(torch.randint(3, V, (n,), generator=g), torch.randint(3, V, (n,), generator=g))
    return clean, corrupt, met


def _spearman(a, b):
    a, b = a.flatten(), b.flatten()
    ok = ~torch.isnan(a) & ~torch.isnan(b) & ((a.abs() + b.abs()) > 0)
    return float(spearmanr(a[ok].numpy(), b[ok].numpy()).statistic)


@pytest.mark.parametrize("name", ["toy-nope", "toy-induction", "toy-backcopy"])
def test_node_scores_vs_exact_patching(random_toy, name):
    m = random_toy(name)
    clean, corrupt, met = _data(m)
    exact = exact_node_scores(m, clean, corrupt, met)
    eap = attribute(m, clean, corrupt, met, method="eap").node_scores()
    ig = attribute(m, clean, corrupt, met, method="eap-ig", ig_steps=5).node_scores()
    r_eap, r_ig = _spearman(exact, eap), _spearman(exact, ig)
    RESULTS[f"{name} node eap"], RESULTS[f"{name} node eap-ig"] = r_eap, r_ig
    print(f"{name}: node Spearman EAP {r_eap:.3f}, EAP-IG {r_ig:.3f}")
    # measured (6 × 8 tokens): toy-nope 0.93 / 0.97, toy-induction (MQA) 0.67 / 0.90,
    # toy-backcopy 1.00 / 1.00 (EAP / EAP-IG)
    assert r_eap >= 0.6
    assert r_ig >= 0.7
    assert r_ig >= r_eap - 0.02


@pytest.mark.parametrize("name", ["toy-nope", "toy-induction"])
def test_edge_scores_vs_exact_patching(random_toy, name):
    """Same-position and crossing edges: top-|score| edges plus a random sample, patched one by one."""
    m = random_toy(name)
    clean, corrupt, met = _data(m, n=4, p=7)
    res = {}
    for method in ("eap", "eap-ig"):
        g = attribute(m, clean, corrupt, met, method=method)
        edges = g.top_edges(None)
        if method == "eap":
            gen = torch.Generator().manual_seed(0)
            pick = edges[:25] + [edges[i] for i in torch.randperm(len(edges), generator=gen)[:35].tolist()]
            exact = torch.tensor([exact_edge_score(m, clean, corrupt, met, e) for e in pick])
            kinds = {e.kind for e in pick}
            assert {"same", "k", "v"} <= kinds
            key = [(e.kind, e.sender, e.receiver, e.pos, e.kpos) for e in pick]
        lookup = {(e.kind, e.sender, e.receiver, e.pos, e.kpos): e.score for e in edges}
        approx = torch.tensor([lookup[k] for k in key])
        res[method] = _spearman(exact, approx)
    RESULTS[f"{name} edge eap"], RESULTS[f"{name} edge eap-ig"] = res["eap"], res["eap-ig"]
    print(f"{name}: edge Spearman EAP {res['eap']:.3f}, EAP-IG {res['eap-ig']:.3f}")
    assert res["eap"] >= 0.7 and res["eap-ig"] >= 0.7
    assert res["eap-ig"] >= res["eap"] - 0.02


def test_crossing_closed_form_vs_brute_force():
    """Δz from the closed forms equals recomputing softmax(qKᵀ/√d)V with one entry replaced."""
    torch.manual_seed(0)
    b, L, p, H, G, e = 2, 1, 5, 4, 2, 3
    rep = H // G

    class PM:
        n_heads, n_kv_heads, scale = H, G, e ** -0.5

    def acts(seed):
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(b, L, p, H, e, generator=g, dtype=torch.float64)
        k = torch.randn(b, L, p, G, e, generator=g, dtype=torch.float64)
        v = torch.randn(b, L, p, G, e, generator=g, dtype=torch.float64)
        kh, vh = k.repeat_interleave(rep, 3), v.repeat_interleave(rep, 3)
        s = torch.einsum("blqhe,blkhe->blhqk", q, kh) * PM.scale
        s = s.masked_fill(~torch.ones(p, p, dtype=torch.bool).tril(), float("-inf"))
        A = s.softmax(-1)
        z = torch.einsum("blhqk,blkhe->blqhe", A, vh)
        return Activations(torch.zeros(b, p, 1, 1, dtype=torch.float64), q, k, v, z, A,
                           torch.ones(b, p, dtype=torch.long))

    c, a = acts(1), acts(2)
    gz = torch.randn(b, L, p, H, e, dtype=torch.float64)
    got = crossing_scores(PM(), c, a, gz, torch.ones(b, p, dtype=torch.long))
    want = torch.zeros_like(got)
    for h in range(H):
        gi = h // rep
        for t in range(p):
            for tp in range(t + 1):
                for kind in range(3):
                    q, k, v = c.q[:, 0, t, h].clone(), c.k[:, 0, :, gi].clone(), c.v[:, 0, :, gi].clone()
                    s = torch.einsum("be,bke->bk", q, k) * PM.scale
                    if kind == 0:
                        s[:, tp] = (a.q[:, 0, t, h] * k[:, tp]).sum(-1) * PM.scale
                    elif kind == 1:
                        s[:, tp] = (q * a.k[:, 0, tp, gi]).sum(-1) * PM.scale
                    else:
                        v[:, tp] = a.v[:, 0, tp, gi]
                    A = s[:, : t + 1].softmax(-1)
                    z = torch.einsum("bk,bke->be", A, v[:, : t + 1])
                    want[:, 0, h, kind, t, tp] = ((z - c.z[:, 0, t, h]) * gz[:, 0, t, h]).sum(-1)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)


def test_none_is_sum_of_positions_and_batch_size_invariance(random_toy):
    m = random_toy("toy-induction")
    clean, corrupt, met = _data(m, n=5, p=9)
    gp = attribute(m, clean, corrupt, met, granularity="position", batch_size=2)
    gn = attribute(m, clean, corrupt, met, granularity="none", batch_size=5)
    torch.testing.assert_close(gn.same_pos[0], gp.same_pos.sum(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gn.cross[..., 0, 0], (gp.cross * gp.cross_valid).sum((-1, -2)),
                               atol=1e-6, rtol=1e-5)
    gp1 = attribute(m, clean, corrupt, met, granularity="position", batch_size=1)
    torch.testing.assert_close(gp1.same_pos, gp.same_pos, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gp1.cross, gp.cross, atol=1e-6, rtol=1e-5)
    # EAP-IG too
    a = attribute(m, clean, corrupt, met, method="eap-ig", ig_steps=3, batch_size=2)
    b = attribute(m, clean, corrupt, met, method="eap-ig", ig_steps=3, batch_size=5, granularity="none")
    torch.testing.assert_close(b.same_pos[0], a.same_pos.sum(0), atol=1e-6, rtol=1e-5)
    assert gp.meta["n_examples"] == 5 and gp.span_sizes.tolist() == [1.0] * 9


def _toy_prompts(m, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    V = m.original_model.config.vocab_size - 3
    return [" ".join(f"t{int(i)}" for i in torch.randint(0, V, (n,), generator=g)) for n in lengths]


def test_padding_side_invariance(random_toy):
    from interp import tokenize

    m = random_toy("toy-induction")
    clean = _toy_prompts(m, [5, 8, 6], 0)
    corrupt = _toy_prompts(m, [5, 8, 6], 1)
    met = logit_diff([5, 6, 7], [8, 9, 10])
    graphs = []
    for side in ("right", "left"):
        cb = tokenize(m, clean, padding_side=side)
        xb = tokenize(m, corrupt, padding_side=side)
        graphs.append(attribute(m, cb, xb, met, batch_size=2))
    torch.testing.assert_close(graphs[0].same_pos, graphs[1].same_pos, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(graphs[0].cross, graphs[1].cross, atol=1e-6, rtol=1e-5)
    # per-example: a padded batch equals the mean of single-example runs
    singles = [attribute(m, [c], [x], logit_diff([a], [w])) for c, x, a, w in
               zip(clean, corrupt, [5, 6, 7], [8, 9, 10])]
    P = graphs[0].same_pos.shape[0]
    tot = torch.zeros_like(graphs[0].same_pos)
    for s in singles:
        tot[: s.same_pos.shape[0]] += s.same_pos
    torch.testing.assert_close(graphs[0].same_pos, tot / 3, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(graphs[0].span_sizes, torch.tensor([1.0] * 6 + [2 / 3, 1 / 3, 1 / 3]))
    assert P == 9


def test_variable_lengths_need_schema_and_spans_align(random_toy):
    from interp import Schema

    m = random_toy("toy-nope")
    schema = Schema.from_template("{A} t5 {B} t6")
    clean = [schema.render(A="t1 t2", B="t3"), schema.render(A="t7", B="t8 t9 t10")]
    corrupt = [schema.render(A="t11", B="t12 t13"), schema.render(A="t14 t15", B="t16")]
    met = logit_diff([20, 21], [22, 23])
    with pytest.raises(ValueError, match="schema"):
        attribute(m, clean, corrupt, met)
    gs = attribute(m, clean, corrupt, met, granularity="span", schema=schema)
    assert gs.positions == ["BOS", "A", "t5", "B", "t6"]
    torch.testing.assert_close(gs.span_sizes, torch.tensor([1.0, 1.5, 1.0, 2.0, 1.0]))
    gp = attribute(m, clean, corrupt, met, granularity="position", schema=schema)
    gn = attribute(m, clean, corrupt, met, granularity="none", schema=schema)
    torch.testing.assert_close(gs.same_pos.sum(0), gn.same_pos[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gp.same_pos.sum(0), gn.same_pos[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close((gs.cross * gs.cross_valid).sum((-1, -2)), gn.cross[..., 0, 0],
                               atol=1e-6, rtol=1e-5)
    # spans: crossing edges only from key spans not after the query span
    assert not gs.cross_valid[1, 3] and gs.cross_valid[3, 1] and gs.cross_valid[3, 3]
    # the counterfactual really is aligned span by span: exact node patching agrees in rank
    ex = exact_node_scores(m, clean, corrupt, met, schema=schema)
    assert _spearman(ex, gp.node_scores()) >= 0.7
    # no schema, same lengths is fine; different lengths error names the fix
    with pytest.raises(ValueError, match="span"):
        attribute(m, clean, corrupt, met, granularity="span")


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_mean_and_zero_ablation_vs_exact(random_toy, ablation):
    """Mean ablation: EAP and EAP-IG rank like exact patching. Zero ablation is far off the data
    (a large perturbation), where the linear EAP estimate degrades and EAP-IG is required."""
    m = random_toy("toy-nope")
    clean, corrupt, met = _data(m, n=6, p=8)
    split = corrupt if ablation == "mean" else None
    exact = exact_node_scores(m, clean, split, met, ablation=ablation)
    r = {}
    for method in ("eap", "eap-ig"):
        g = attribute(m, clean, split, met, ablation=ablation, method=method)
        r[method] = _spearman(exact, g.node_scores())
        RESULTS[f"toy-nope node {method} {ablation}"] = r[method]
        print(f"{ablation} {method}: node Spearman {r[method]:.3f}")
        assert g.meta["ablation"] == ablation
    if ablation == "mean":
        assert r["eap"] >= 0.7 and r["eap-ig"] >= 0.7
        assert r["eap-ig"] >= r["eap"] - 0.02
    else:  # measured: EAP 0.55, EAP-IG 0.57 (the k=0 IG point is an all-zero input)
        assert r["eap"] >= 0.45 and r["eap-ig"] >= 0.45


def test_metrics_and_custom_callable(random_toy):
    m = random_toy("toy-induction")
    clean, corrupt, met = _data(m, n=4, p=7)
    c, w = torch.tensor([5, 6, 7, 8]), torch.tensor([9, 10, 11, 12])
    pm = patchable(m)
    logits = pm.run(clean)
    mb = MetricBatch.from_mask(torch.ones_like(clean))
    ld = logit_diff(c, w)(logits, mb)
    torch.testing.assert_close(ld, logits[:, -1, c].diagonal() - logits[:, -1, w].diagonal())
    pr = logits[:, -1].softmax(-1)
    torch.testing.assert_close(prob_diff(c, w)(logits, mb), pr[:, c].diagonal() - pr[:, w].diagonal())
    kl = kl_to_clean()
    mb2 = MetricBatch.from_mask(torch.ones_like(clean), clean_logits=logits)
    assert kl(logits, mb2).abs().max() < 1e-6
    # custom callable on logits gives the same scores as the built-in
    g1 = attribute(m, clean, corrupt, logit_diff(c, w))
    g2 = attribute(m, clean, corrupt,
                   lambda lg, b: lg[torch.arange(len(b.index)), -1, c[b.index]] - lg[torch.arange(len(b.index)), -1, w[b.index]],
                   batch_size=3)
    torch.testing.assert_close(g1.same_pos, g2.same_pos, atol=1e-6, rtol=1e-5)
    # KL: EAP gradient vanishes at the clean run, EAP-IG does not
    gk = attribute(m, clean, corrupt, kl_to_clean())
    assert gk.same_pos.abs().max() < 1e-6
    gki = attribute(m, clean, corrupt, kl_to_clean(), method="eap-ig", ig_steps=3)
    assert gki.same_pos.abs().max() > 1e-6
    # every differentiable path reaches the scores: nothing is NaN, embed edges are nonzero
    assert torch.isfinite(g1.same_pos).all() and torch.isfinite(g1.cross).all()
    assert g1.same_pos[:, 0].abs().sum() > 0


def test_graph_api_roundtrip(random_toy, tmp_path):
    m = random_toy("toy-induction")
    clean, corrupt, met = _data(m, n=3, p=6)
    g = attribute(m, clean, corrupt, met, task="unit")
    top = g.top_edges(5)
    assert len(top) == 5 and abs(top[0].score) >= abs(top[-1].score)
    assert all(e.kind in ("same", "q", "k", "v") for e in top)
    ks = g.top_edges(3, kinds=["k"])
    assert all(e.kind == "k" for e in ks)
    l1 = g.top_edges(10, layers=[1], kinds=["same"])
    assert all(e.receiver.startswith("L1") for e in l1)
    f = g.filter(positions=[5], kinds=["v"])
    assert f.same_pos.abs().sum() == 0 and (f.cross[:, :, :2] == 0).all()
    assert f.cross[:, :, 2, 5].abs().sum() > 0 and f.cross[:, :, 2, :5].abs().sum() == 0
    f2 = g.filter(kinds=["same"], receiver_kinds=["logits"])
    assert f2.cross.abs().sum() == 0 and f2.same_pos[:, :, -1].abs().sum() > 0
    assert f2.same_pos[:, :, :-1].abs().sum() == 0
    d = json.loads(json.dumps(g.to_json()))
    g2 = AttributionGraph.from_json(d)
    torch.testing.assert_close(g2.same_pos, g.same_pos)
    torch.testing.assert_close(g2.cross, g.cross)
    assert g2.meta["method"] == "eap" and g2.meta["task"] == "unit" and "prepend_bos" in g2.meta
    assert g2.meta["version"] == 1
    d["version"] = 99
    with pytest.raises(ValueError, match="version"):
        AttributionGraph.from_json(d)
    for view in ("nodes", "q", "k", "v", "mlp", "cross"):
        fig = g.plot(view)
        assert fig.layout.title.text
    ns = g.node_scores()
    assert ns.shape == (6, len(g.senders))
    # node score = EAP of the whole sender (sum of its outgoing edges)
    torch.testing.assert_close(ns, (g.same_pos * g.valid).sum(-1))


def test_jsonl_loader(random_toy, tmp_path):
    from circuits.tasks import load_jsonl

    m = random_toy("toy-nope")
    p = tmp_path / "pairs.jsonl"
    lines = [{"template": "{A} t5 {B} t6"},
             {"clean": {"A": "t1 t2", "B": "t3"}, "corrupt": {"A": "t9", "B": "t3"},
              "correct": "t1", "wrong": "t9"},
             {"clean": "t4 t5 t7 t6", "corrupt": {"A": "t8", "B": "t7 t7"},
              "correct": "t4", "wrong": "t8"}]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    task = load_jsonl(p, m)
    assert len(task) == 2 and task.clean.lengths == [6, 5] and task.corrupt.lengths == [5, 6]
    g = attribute(m, task, granularity="span")
    assert g.positions == ["BOS", "A", "t5", "B", "t6"] and g.meta["task"] == "pairs"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"template": "{A} t5", "clean": {"A": "t1"}, "corrupt": {"A": "t2"},
                               "correct": "t1 t2", "wrong": "t3"}) + "\n")
    with pytest.raises(ValueError, match="single"):
        load_jsonl(bad, m)


def test_bad_inputs(random_toy):
    m = random_toy("toy-nope")
    clean, corrupt, met = _data(m, n=2, p=5)
    with pytest.raises(ValueError, match="method"):
        attribute(m, clean, corrupt, met, method="acdc")
    with pytest.raises(ValueError, match="granularity"):
        attribute(m, clean, corrupt, met, granularity="token")
    with pytest.raises(ValueError, match="corrupt"):
        attribute(m, clean, None, met)
    with pytest.raises(ValueError, match="one counterfactual"):
        attribute(m, clean, corrupt[:1], met)
    with pytest.raises(ValueError, match="metric"):
        attribute(m, clean, corrupt, None)


def test_rope_realignment_of_shifted_counterfactual(random_toy):
    """Counterfactual tokens taken from other positions get their q/k re-rotated to the clean
    positions: layer-0 q/k (token + position only) then equal the clean run's."""
    from circuits.attribution import _realign_rope

    m = random_toy("toy-induction")
    pm = patchable(m)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(3, 60, (2, 9), generator=g)
    t[:, 0] = 0
    t2 = torch.cat([t[:, :1], torch.randint(3, 60, (2, 3), generator=g), t[:, 1:6]], 1)
    a, a2 = pm.activations(t), pm.activations(t2)
    src = torch.tensor([[0, 4, 5, 6, 7, 8]] * 2)
    raw = a2.align(src)
    al = _realign_rope(pm, raw, src)
    torch.testing.assert_close(al.q[:, 0], a.q[:, 0, :6], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(al.k[:, 0], a.k[:, 0, :6], atol=1e-5, rtol=1e-5)
    assert (raw.q[:, 0] - a.q[:, 0, :6]).abs().max() > 1e-2


@pytest.mark.real_model
@pytest.mark.slow
def test_smollm2_tasks_and_span_attribution(smollm2):
    from circuits import tasks

    t = tasks.ioi(smollm2, 2, seed=0)
    assert t.clean.lengths == t.corrupt.lengths
    assert [a["order"] for a in t.answers] == ["ABBA", "BABA"]
    gt = tasks.greater_than(smollm2, 4)
    ind = tasks.induction(smollm2, 2, seq_len=5)
    assert gt.clean.lengths == gt.corrupt.lengths and ind.clean.tokens.shape == (2, 11)
    g = attribute(smollm2, t, granularity="span", batch_size=2)  # GQA: 9 query / 3 KV heads
    assert g.positions[0] == "BOS" and g.positions[-1] == "to"
    assert g.meta["metric_clean_mean"] > 1.0  # SmolLM2 solves IOI
    assert torch.isfinite(g.same_pos).all() and torch.isfinite(g.cross).all()
    # what matters flows into the logits at the final span
    top_logit = g.top_edges(1, receiver_kinds=["logits"], kinds=["same"])[0]
    assert top_logit.pos == "to"
    # spans before the first name carry nothing: the counterfactual only changes names
    assert g.same_pos[g.positions.index("When")].abs().max() == 0
    assert "L" in g.top_edges(1)[0].sender


def test_gemma_tiny_eap_is_the_derivative_of_exact_patching():
    """Tiny random Gemma 3 (float64; sandwich norms, q/k norms, sliding window, MQA): each EAP
    edge score equals the derivative of exact edge patching along the ablation direction,
    d/dε M(edge fed z + ε(z* − z)) at ε = 0 (central differences) — same-position edges (through
    the head-share normalisation) and crossing q/k/v edges."""
    from test_forward import _tiny_gemma

    pm = patchable(_tiny_gemma().double())
    g = torch.Generator().manual_seed(0)
    n, p = 3, 8
    clean = torch.randint(3, 61, (n, p), generator=g)
    clean[:, 0] = 2
    corrupt = clean.clone()
    corrupt[:, 2:5] = torch.randint(3, 61, (n, 3), generator=g)
    met = logit_diff(torch.randint(3, 61, (n,), generator=g), torch.randint(3, 61, (n,), generator=g))
    graph = attribute(pm, clean, corrupt, met, method="eap")
    edges = graph.top_edges(10, kinds=["same"]) + graph.top_edges(5, kinds=["q", "k", "v"])
    assert {e.kind for e in edges} >= {"same", "v"} and any(e.receiver == "logits" for e in edges)
    assert_eap_is_patching_derivative(pm, clean, corrupt, met, edges, eps=1e-3, rtol=1e-2)


def assert_eap_is_patching_derivative(pm, clean, corrupt, met, edges, *, eps, rtol, atol=1e-6):
    """Each edge score equals d/dε M(edge fed z + ε(z* − z)) at ε = 0, by central differences of
    exact edge patching (``PatchableModel.run`` with that one edge ablated toward the
    counterfactual activations by ±ε)."""
    from circuits.attribution import one_edge_keep

    c, x = pm.activations(clean), pm.activations(corrupt)
    n, p = clean.shape
    mb = MetricBatch.from_mask(torch.ones(n, p, dtype=torch.long), None, None)

    def toward(e):
        f = lambda a, b: a + e * (b - a)  # noqa: E731
        return Activations(f(c.senders, x.senders), f(c.q, x.q), f(c.k, x.k), f(c.v, x.v), c.z,
                           c.pattern, c.attention_mask)

    for e in edges:
        kw = one_edge_keep(pm, e, n, p)
        up = met(pm.run(clean, ablated=toward(eps), **kw), mb).mean()
        down = met(pm.run(clean, ablated=toward(-eps), **kw), mb).mean()
        fd = float(up - down) / (2 * eps)
        assert abs(fd - e.score) <= rtol * abs(e.score) + atol, (e, fd)


@pytest.mark.gemma
def test_gemma_ioi_eap_vs_exact_and_faithfulness(gemma):
    """Gemma-3-270M (18 layers, MQA 4 q / 1 KV, sliding + global layers): IOI end to end, EAP node
    scores at the last token vs exact node patching of a handful of nodes, faithfulness runs."""
    from circuits import faithfulness, select, tasks

    t = tasks.ioi(gemma, 2, seed=0)
    assert t.clean.lengths == t.corrupt.lengths
    g = attribute(gemma, t, method="eap", batch_size=2)
    assert g.meta["metric_clean_mean"] > 2.0  # Gemma solves IOI (measured 5.48)
    assert torch.isfinite(g.same_pos).all() and torch.isfinite(g.cross).all()
    clean, corrupt = t.clean.tokens, t.corrupt.tokens
    eap = attribute(gemma, clean, corrupt, t.metric, method="eap").node_scores()[-1]  # [sender]
    order = eap.abs().argsort(descending=True)
    rest = order[6:][torch.randperm(len(order) - 6, generator=torch.Generator().manual_seed(0))[:6]]
    pick = torch.cat([order[:6], rest])
    pm = patchable(gemma)
    senders = [pm.senders[i] for i in pick.tolist()]
    exact = exact_node_scores(gemma, clean, corrupt, t.metric, senders=senders, positions=[-1])[-1]
    r = _spearman(exact[pick], eap[pick])
    RESULTS["gemma ioi node eap (12 nodes, last token)"] = r
    print(f"gemma IOI: node Spearman EAP {r:.3f} over {senders}")
    # measured: 0.92 (all 91 senders at the last token: 0.97; at the " a" token, P−3: 0.99)
    assert r >= 0.8
    # faithfulness on Gemma: full model and empty circuit are exact, a selected circuit runs
    c = select(g, n_edges=300)
    res = faithfulness(gemma, c, t, n_boot=50)
    mb = MetricBatch.from_mask(t.clean.attention_mask, None, None)
    with torch.no_grad():
        m_clean = float(t.metric(pm.run(clean, t.clean.attention_mask), mb).mean())
        m_corrupt = float(t.metric(pm.run(corrupt, t.corrupt.attention_mask), mb).mean())
    assert abs(res.m_full - m_clean) < 1e-3 and abs(res.m_empty - m_corrupt) < 1e-3
    assert res.m_full > res.m_empty and torch.isfinite(torch.tensor(res.f))
    RESULTS["gemma ioi faithfulness f (300 edges, span)"] = res.f
    print(f"gemma IOI: circuit of {c.n_edges} span edges, f = {res.f:.3f}")
