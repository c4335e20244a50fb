"""Streamed attribution equals the dense loop it replaced; position stores keep the right edges;
memory estimate and budget."""

from __future__ import annotations

import pytest
import torch

from _attribution_dense_ref import attribute_dense_reference
from circuits import AttributionGraph, attribute, estimate_memory, select
from circuits.attribution import patchable
from circuits.metrics import kl_to_clean, logit_diff


def _data(model_vocab, bos, n=5, p=9, seed=0, span=(2, 5)):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, model_vocab, (n, p), generator=g)
    clean[:, 0] = bos
    corrupt = clean.clone()
    corrupt[:, span[0]:span[1]] = torch.randint(3, model_vocab, (n, span[1] - span[0]), generator=g)
    met = logit_diff(torch.randint(3, model_vocab, (n,), generator=g),
                     torch.randint(3, model_vocab, (n,), generator=g))
    return clean, corrupt, met


def _toy(random_toy, name):
    m = random_toy(name)
    return m, _data(m.original_model.config.vocab_size, m.tokenizer.bos_token_id)


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.mark.parametrize("name", ["toy-induction", "toy-nope", "toy-offset-abs"])
@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_streamed_equals_dense_reference(random_toy, name, method):
    """Same and crossing scores of every granularity and ablation match the dense pre-streaming
    loop to 1e-5 relative (batches of 2 of 5 examples: accumulation across batches too)."""
    m, (clean, corrupt, met) = _toy(random_toy, name)
    for ablation in ("counterfactual", "mean", "zero"):
        for gran in ("position", "none"):
            kw = dict(method=method, ablation=ablation, granularity=gran, batch_size=2, ig_steps=3)
            x = None if ablation == "zero" else corrupt
            with pytest.warns(UserWarning) if (method == "eap-ig" and ablation == "zero") else _nullctx():
                a = attribute(m, clean, x, met, **kw)
            with pytest.warns(UserWarning) if (method == "eap-ig" and ablation == "zero") else _nullctx():
                r = attribute_dense_reference(m, clean, x, met, **kw)
            assert _rel(a.same_pos, r.same_pos) < 1e-5, (ablation, gran)
            assert _rel(a.cross, r.cross) < 1e-5, (ablation, gran)
            assert torch.equal(a.cross_valid, r.cross_valid)
            torch.testing.assert_close(a.cross_pairs, r.cross_pairs)
            torch.testing.assert_close(a.span_sizes, r.span_sizes)
            assert a.meta["metric_clean_mean"] == pytest.approx(r.meta["metric_clean_mean"], rel=1e-6)


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_streamed_equals_dense_spans_and_gemma(random_toy):
    """Span granularity with clean/corrupt of different lengths (schema-aligned), a needs-clean
    metric, and a tiny Gemma 3 (sliding window, MQA, head shares, float64)."""
    from interp import Schema
    from test_forward import _tiny_gemma

    m = random_toy("toy-nope")
    schema = Schema.from_template("{A} t5 {B} t6")
    clean = [schema.render(A="t1 t2", B="t3"), schema.render(A="t7", B="t8 t9 t10")]
    corrupt = [schema.render(A="t11", B="t12 t13"), schema.render(A="t14 t15", B="t16")]
    met = logit_diff([20, 21], [22, 23])
    for method in ("eap", "eap-ig"):
        for gran in ("span", "position"):
            kw = dict(method=method, granularity=gran, schema=schema, batch_size=1, ig_steps=2)
            a = attribute(m, clean, corrupt, met, **kw)
            r = attribute_dense_reference(m, clean, corrupt, met, **kw)
            assert _rel(a.same_pos, r.same_pos) < 1e-5 and _rel(a.cross, r.cross) < 1e-5
            assert torch.equal(a.cross_valid, r.cross_valid)
    pm = patchable(_tiny_gemma().double())
    clean, corrupt, met = _data(61, 2, n=3, p=8)
    for metric in (met, kl_to_clean()):
        for method in ("eap", "eap-ig"):
            kw = dict(method=method, granularity="position", ig_steps=3)
            a = attribute(pm, clean, corrupt, metric, **kw)
            r = attribute_dense_reference(pm, clean, corrupt, metric, **kw)
            if method == "eap" and metric is not met:
                # KL to the clean run has a zero gradient at the clean point: EAP's scores are
                # exactly 0, both sides hold float64 round-off (~1e-18), not comparable relatively
                assert a.same_pos.abs().max() < 1e-12 and r.same_pos.abs().max() < 1e-12
                assert a.cross.abs().max() < 1e-12 and r.cross.abs().max() < 1e-12
                continue
            assert _rel(a.same_pos, r.same_pos) < 1e-5 and _rel(a.cross, r.cross) < 1e-5


def test_attention_pattern_recomputation_equals_forward(random_toy):
    """The per-layer pattern streamed attribution recomputes from q, k is the forward's own
    (padding, sliding window, GQA/MQA, learned positions)."""
    from test_forward import _tiny_gemma

    models = [patchable(random_toy(n)) for n in ("toy-induction", "toy-offset-abs")]
    models.append(patchable(_tiny_gemma()))
    for pm in models:
        toks = torch.randint(3, 30, (2, 9), generator=torch.Generator().manual_seed(1))
        mask = torch.ones_like(toks)
        mask[1, 6:] = 0
        a = pm.activations(toks, mask)
        for l in range(pm.n_layers):
            torch.testing.assert_close(pm.attention_pattern(l, a.q[:, l], a.k[:, l], mask),
                                       a.pattern[:, l], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("batch_size", [5, 2])
def test_topk_threshold_and_disk_stores_keep_the_dense_edges(random_toy, tmp_path, batch_size):
    """A top-k graph holds exactly the dense graph's top-k edges (global and per layer); a
    threshold graph every edge with |score| ≥ t; a disk graph reads back the dense scores
    lazily; all keep the exact node/receiver/head aggregates. One batch (streamed per layer) and
    several batches (summed through memory-mapped files first)."""
    m, (clean, corrupt, met) = _toy(random_toy, "toy-induction")
    kw = dict(batch_size=batch_size)
    dense = attribute(m, clean, corrupt, met, **kw)
    nonzero = sum(1 for e in dense.top_edges(None) if e.score != 0)
    k = nonzero // 2  # no ties at zero inside the top k
    assert k >= 50
    top = attribute(m, clean, corrupt, met, store="topk", k=k, **kw)
    want = dense.top_edges(k)
    got = top.top_edges(k)
    assert top.n_stored == k
    key = lambda e: (e.kind, e.sender, e.receiver, e.pos, e.kpos)  # noqa: E731
    # ties in |score| could reorder; compare as sets plus the scores
    assert {key(e) for e in got} == {key(e) for e in want}
    ws = {key(e): e.score for e in want}
    assert max(abs(e.score - ws[key(e)]) for e in got) <= 1e-6 * max(abs(e.score) for e in want)
    torch.testing.assert_close(top.node_scores(), dense.node_scores(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(top.receiver_scores(), dense.receiver_scores(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(top.head_cross_scores(), dense.head_cross_scores(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(top.head_query_scores(), dense.head_query_scores(), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="larger k"):
        top.top_edges(k + 1)
    # per layer: k edges per receiver layer (same-position edges into logits form their own)
    per = attribute(m, clean, corrupt, met, store="topk", k=20, per="layer", **kw)
    for l in range(dense.n_layers):
        d_l = dense.top_edges(20, layers=[l])
        p_l = per.top_edges(None, layers=[l])
        assert {key(e) for e in d_l} == {key(e) for e in p_l}
    # threshold
    t = abs(want[k // 2].score)
    thr = attribute(m, clean, corrupt, met, store="threshold", threshold=t, **kw)
    assert {key(e) for e in thr.edges()} == {key(e) for e in dense.top_edges(None) if abs(e.score) >= t}
    # disk shards, read lazily
    disk = attribute(m, clean, corrupt, met, store="disk", path=tmp_path / "g", **kw)
    back = AttributionGraph.load(tmp_path / "g")
    assert type(back).__name__ == "ShardedAttributionGraph" and len(back.pieces) > 1
    torch.testing.assert_close(back.to_dense().same_pos, dense.same_pos, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(back.to_dense().cross, dense.cross, atol=1e-7, rtol=1e-5)
    assert [key(e) for e in disk.top_edges(10)] == [key(e) for e in dense.top_edges(10)]
    # a sparse graph round-trips and feeds selection and plots
    top.save(tmp_path / "top.safetensors")
    t2 = AttributionGraph.load(tmp_path / "top.safetensors")
    assert torch.equal(t2.edge_ids, top.edge_ids)
    c, cd = select(top, method="topn", n_edges=50), select(dense, method="topn", n_edges=50)
    assert c.n_edges == cd.n_edges > 0
    assert torch.equal(c.same_pos, cd.same_pos) and torch.equal(c.cross, cd.cross)
    assert top.plot("cross") is not None and top.plot("nodes") is not None


def test_bad_store_arguments(random_toy, tmp_path):
    m, (clean, corrupt, met) = _toy(random_toy, "toy-induction")
    with pytest.raises(ValueError, match="needs k"):
        attribute(m, clean, corrupt, met, store="topk")
    with pytest.raises(ValueError, match="threshold"):
        attribute(m, clean, corrupt, met, store="threshold")
    with pytest.raises(ValueError, match="path"):
        attribute(m, clean, corrupt, met, store="disk")
    with pytest.raises(ValueError, match="position"):
        attribute(m, clean, corrupt, met, store="topk", k=3, granularity="none")


def test_bfloat16_model_accumulates_in_float32(random_toy):
    """A bfloat16 model's scores come out float32 and agree with the float32 model's to bf16
    precision (the score maths runs in float64/float32, not in bf16)."""
    m, (clean, corrupt, met) = _toy(random_toy, "toy-nope")
    ref = attribute(m, clean, corrupt, met, granularity="none")
    pm16 = patchable(m)
    import copy

    hf16 = copy.deepcopy(m.original_model).to(torch.bfloat16)
    from circuits._forward import PatchableModel

    g16 = attribute(PatchableModel(hf16), clean, corrupt, met, granularity="none")
    assert g16.same_pos.dtype == torch.float32 and g16.cross.dtype == torch.float32
    assert pm16.dtype == torch.float32
    a, b = g16.node_scores().flatten(), ref.node_scores().flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.98
    assert _rel(a, b) < 0.1


def test_estimate_memory_and_budget(random_toy):
    m, (clean, corrupt, met) = _toy(random_toy, "toy-induction")
    est = estimate_memory(m, 9, 5)
    assert {"forward_backward", "activations", "gradients", "layer_work", "output", "peak",
            "weights"} <= set(est)
    assert est["peak"] >= est["output"] > 0
    # more tokens, more memory; top-k output smaller than dense at long context
    big = estimate_memory(m, 512, 1)
    topk = estimate_memory(m, 512, 1, store="topk", k=1000)
    assert big["peak"] > est["peak"] and topk["output"] < big["output"]
    # a budget that one example cannot fit fails before running, saying what would fit
    with pytest.raises(MemoryError, match="up to ~[1-8] tokens fit"):
        attribute(m, clean, corrupt, met, max_memory=estimate_memory(m, 5, 1)["peak"])
    with pytest.raises(MemoryError, match="Not even"):
        attribute(m, clean, corrupt, met, max_memory="1KiB")
    # a budget between batch 1 and batch 5: a smaller batch size is picked, same scores
    one = estimate_memory(m, 9, 1)["peak"]
    g = attribute(m, clean, corrupt, met, batch_size=5, max_memory=one + (est["peak"] - one) // 8)
    assert g.meta["batch_size"] < 5
    ref = attribute(m, clean, corrupt, met, batch_size=5)
    torch.testing.assert_close(g.same_pos, ref.same_pos, atol=1e-6, rtol=1e-5)


def test_faithfulness_max_memory(random_toy):
    """max_memory lowers the evaluator's batch size (same result) or fails before any run."""
    from circuits import FaithfulnessEvaluator
    from circuits.memory import estimate_faithfulness_memory

    m, (clean, corrupt, met) = _toy(random_toy, "toy-induction")
    g = attribute(m, clean, corrupt, met)
    c = select(g, method="topn", n_edges=30)
    full = FaithfulnessEvaluator(m, clean, corrupt, met, n_boot=0)
    one = estimate_faithfulness_memory(m, clean.shape[1], 1)["peak"]
    small = FaithfulnessEvaluator(m, clean, corrupt, met, n_boot=0, max_memory=one + one // 2)
    assert small.batch_size == 1 < full.batch_size
    assert small(c).f == pytest.approx(full(c).f, rel=1e-5, abs=1e-6)
    with pytest.raises(MemoryError, match="max_memory"):
        FaithfulnessEvaluator(m, clean, corrupt, met, max_memory=one // 2)


@pytest.mark.parametrize("method", ["eap-ig", "atp*-ig"])
def test_ig_counterfactual_recorded_at_its_first_point(random_toy, monkeypatch, method):
    """EAP-IG's k = 0 point runs the model on the counterfactual's own embedding: with a
    same-length counterfactual that run is recorded as the ablation source (when the memory plan
    allows) instead of a second counterfactual forward — the scores are the same either way."""
    import circuits.memory as mem

    m, (clean, corrupt, met) = _toy(random_toy, "toy-induction")
    graphs = {}
    for first in (False, True):
        monkeypatch.setattr(mem, "ig_records_first", lambda *a, _f=first, **k: _f)
        graphs[first] = attribute(m, clean, corrupt, met, method=method, ig_steps=3, batch_size=2)
    a, b = graphs[True], graphs[False]
    assert _rel(a.same_pos, b.same_pos) < 1e-6 and _rel(a.cross, b.cross) < 1e-6
    assert float(a.same_pos.abs().max()) > 0


@pytest.mark.parametrize("method", ["eap", "eap-ig", "atp*"])
def test_recomputed_deltas_equal_kept(random_toy, monkeypatch, method):
    """Sender deltas remade per receiver layer (the plan's choice where keeping them does not
    fit; here forced, with position chunks of 2 rows) give the scores of kept deltas, for every
    ablation and granularity."""
    import circuits.memory as mem
    from circuits._stream import SenderDeltas

    m, (clean, corrupt, met) = _toy(random_toy, "toy-induction")
    plan = mem.plan_attribution

    made = []
    make = SenderDeltas._make

    def spy(self, j, rows):
        made.append((self.keep, rows.start))
        return make(self, j, rows)

    monkeypatch.setattr(SenderDeltas, "_make", spy)

    def recompute(*a, **k):  # ~2-row position chunks of the 5 receivers × 7 senders blocks
        return {**plan(*a, **k), "deltas": "recompute", "work_bytes": 8000}

    for ablation in ("counterfactual", "mean", "zero"):
        if ablation == "zero" and method != "eap":
            continue  # EAP-IG from an all-zero embedding is singular (warned); AtP*: counterfactual-style
        x = None if ablation == "zero" else corrupt
        for gran in ("position", "none"):
            kw = dict(method=method, ablation=ablation, granularity=gran, batch_size=2, ig_steps=3)
            monkeypatch.setattr(mem, "plan_attribution", plan)
            kept = attribute(m, clean, x, met, **kw)
            monkeypatch.setattr(mem, "plan_attribution", recompute)
            remade = attribute(m, clean, x, met, **kw)
            assert _rel(remade.same_pos, kept.same_pos) < 1e-6, (ablation, gran)
            assert _rel(remade.cross, kept.cross) < 1e-6, (ablation, gran)
            assert (kept.meta["sender_deltas"], remade.meta["sender_deltas"]) == ("keep", "recompute")
            assert float(kept.same_pos.abs().max()) > 0
    remade_rows = {start for keep, start in made if not keep}
    assert None not in remade_rows and len(remade_rows) > 1  # remade per position chunk
    assert {start for keep, start in made if keep} == {None}  # made once, all positions


def test_plan_recomputes_deltas_only_where_keeping_does_not_fit(random_toy):
    from circuits.memory import plan_attribution

    m, _ = _toy(random_toy, "toy-induction")
    kw = dict(n_tokens=2048, n_examples=1, granularity="none", method="eap", ig_steps=1,
              store="dense", k=None)
    keep = estimate_memory(m, 2048, 1, granularity="none")["peak"]
    remade = estimate_memory(m, 2048, 1, granularity="none", deltas="recompute")["peak"]
    assert remade < keep
    assert plan_attribution(m, batch_size=1, max_memory=None, **kw)["deltas"] == "keep"
    assert plan_attribution(m, batch_size=1, max_memory=keep, **kw)["deltas"] == "keep"
    assert plan_attribution(m, batch_size=1, max_memory=(keep + remade) // 2, **kw)["deltas"] == "recompute"
    with pytest.raises(ValueError, match="deltas must be"):
        estimate_memory(m, 9, 1, deltas="drop")


def test_empty_clean_batch_is_a_clear_error(random_toy):
    m, (clean, corrupt, met) = _toy(random_toy, "toy-induction")
    with pytest.raises(ValueError, match="no clean examples"):
        attribute(m, clean[:0], corrupt[:0], met)
