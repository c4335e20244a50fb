"""A :class:`~circuits.circuit.Circuit` stores its crossing edges sparsely (``cross_index [n 5]``)
and is selected from a top-k graph without densifying anything ``[layer head 3 P P]``: the
circuit, its JSON, edge table, plot and faithfulness equal those of the same circuit selected
from the dense form of the graph (the existing dense code, an independent path), and the
faithfulness of the sparse masks equals the dense ``keep``/``keep_cross`` patching in float64."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import circuits.circuit as circuit_mod
from circuits import attribute, select
from circuits.circuit import Circuit
from circuits.faithfulness import FaithfulnessEvaluator, expand_masks
from circuits.metrics import logit_diff
from circuits.select import circuit_from_masks, greedy_order, prune, prune_sparse
from helpers import _tiny_llama


@pytest.fixture(scope="module")
def llama64(tmp_path_factory):
    from interp import load_model

    d = tmp_path_factory.mktemp("tiny-llama-sparse")
    _tiny_llama(d)
    return load_model(str(d), device="cpu", dtype=torch.float64)


def _data(T, n=3, seed=0, vocab=40):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, vocab, (n, T), generator=g)
    clean[:, 0] = 0  # BOS
    corrupt = clean.clone()
    corrupt[:, T // 2:] = torch.randint(4, vocab, (n, T - T // 2), generator=g)
    met = logit_diff(torch.randint(4, vocab, (n,), generator=g), torch.randint(4, vocab, (n,), generator=g))
    return clean, corrupt, met


def _stored_only(top):
    """The dense form of a top-k graph with every edge it did not store made NaN (never selected
    by the dense code): the reference the sparse selection must reproduce."""
    d = top.to_dense()
    P, S, R = d.same_pos.shape
    flat = torch.full((P * S * R + d.cross.numel(),), float("nan"))
    flat[top.edge_ids] = top.scores.float()
    return dataclasses.replace(d, same_pos=flat[:P * S * R].reshape(d.same_pos.shape),
                               cross=flat[P * S * R:].reshape(d.cross.shape))


def _same_circuit(a: Circuit, b: Circuit) -> None:
    assert torch.equal(a.same_pos, b.same_pos)
    assert a.cross_shape == b.cross_shape
    assert torch.equal(a.cross_index, b.cross.nonzero())
    assert torch.equal(a.cross, b.cross)
    assert torch.equal(a.same_values, b.same_pos_scores[b.same_pos])
    assert torch.equal(a.cross_values, b.cross_scores[b.cross])
    key = lambda e: tuple(sorted((k, str(v)) for k, v in e.items()))  # noqa: E731
    assert sorted(map(key, a.edges())) == sorted(map(key, b.edges()))
    assert a.nodes() == b.nodes()


def test_sparse_selection_equals_dense(llama64, tmp_path):
    """Greedy and top-N selection, pruning, JSON, edges, plot and faithfulness of a circuit
    selected from a top-k graph equal the dense code's on the graph's stored edges."""
    m = llama64
    clean, corrupt, met = _data(10)
    dense = attribute(m, clean, corrupt, met, granularity="position")
    nonzero = sum(1 for e in dense.top_edges(None) if e.score != 0)
    k = nonzero // 3
    top = attribute(m, clean, corrupt, met, granularity="position", store="topk", k=k)
    ref_graph = _stored_only(top)
    ev = FaithfulnessEvaluator(m, clean, corrupt, met, n_boot=0)
    for method, n in (("greedy", 40), ("greedy", 10 ** 6), ("topn", 60)):
        c = select(top, n, method=method)
        ref = select(ref_graph, n, method=method)
        assert c.n_edges > 0 and c.meta["method"] == method
        _same_circuit(c, ref)
        if method == "topn":  # the top-k graph holds the dense graph's top k: same top-N
            full = select(dense, n, method="topn")
            assert torch.equal(c.same_pos, full.same_pos) and torch.equal(c.cross, full.cross)
        # JSON round trip (sparse in, sparse out) and the dense-built circuit's JSON agree
        back = Circuit.from_json(c.to_json())
        assert back.equals(c) and back.equals(Circuit.from_json(ref.to_json()))
        p = tmp_path / f"{method}{n}.json"
        c.save_json(p)
        assert Circuit.from_json(str(p)).equals(c)
        # plots draw the same edges and nodes
        fa, fb = c.plot(), ref.plot()
        assert [(t.x, t.y) for t in fa.data] == [(t.x, t.y) for t in fb.data]
        assert c.to_frame().equals(ref.to_frame())
        # faithfulness: same numbers as the dense-built circuit, and as dense-mask patching
        r, rr = ev(c), ev(ref)
        assert r.m_circuit == rr.m_circuit and r.concrete_edges == rr.concrete_edges
        assert r.n_edges == rr.n_edges == c.n_edges
        pi = ev.position_index(c)
        keep, keep_cross = expand_masks(c, pi, protect=ev.protect)
        rd = ev.evaluate_masks(keep, keep_cross)
        torch.testing.assert_close(r.per_example[0].double(), rd.per_example[0].double(), atol=1e-9, rtol=1e-9)
        assert r.concrete_edges == pytest.approx(float(c.concrete_edges(pi).mean()))
    # greedy order itself
    assert greedy_order(top, 25).tolist() == greedy_order(ref_graph, 25).tolist()
    # circuit_from_masks with sparse crossing rows, pruned and not: any valid edge may be in the
    # circuit (score 0 if the graph did not store it), as on the graph's dense form (zeros)
    g = torch.Generator().manual_seed(1)
    same = torch.rand(dense.same_pos.shape, generator=g) < 0.3
    cross = torch.rand(dense.cross.shape, generator=g) < 0.3
    for do_prune in (True, False):
        a = circuit_from_masks(top, same, cross.nonzero(), do_prune=do_prune)
        b = circuit_from_masks(top, same, cross, do_prune=do_prune)
        assert torch.equal(a.same_pos, b.same_pos) and torch.equal(a.cross_index, b.cross_index)
        ref = circuit_from_masks(top.to_dense(), same, cross, do_prune=do_prune)
        _same_circuit(a, ref)


def test_prune_sparse_reaches_like_a_path_search():
    """Pruning keeps exactly the edges on an embed → logits path, checked against an explicit
    search over the concrete node graph (independent of the fixed-point formulation)."""
    from circuits._forward import receiver_names, sender_names
    from circuits.circuit import GraphIndex

    L, H, G, P = 2, 4, 2, 4
    S, R = sender_names(L, H), receiver_names(L, H, G)
    ix = GraphIndex(S, R, L, H)
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        d = (0.08, 0.2)[trial % 2]
        same = torch.rand(P, len(S), len(R), generator=gen) < d
        cross = (torch.rand(L, H, 3, P, P, generator=gen) < d) & torch.tril(torch.ones(P, P, dtype=torch.bool))
        # edges as (parent node, child node); nodes: ("s", p, s) sender, ("r", p, r) receiver
        edges = []
        for p, s, r in same.nonzero().tolist():
            edges.append((("s", p, s), ("r", p, r), ("same", p, s, r)))
        for l, h, k, q, kp in cross.nonzero().tolist():
            par = int(ix.cross_parent[l, h, k])
            edges.append((("r", q if k == 0 else kp, par), ("s", q, int(ix.head_sender[l, h])), ("cross", l, h, k, q, kp)))
        links = [(("r", p, int(ix.mlp_recv[l])), ("s", p, int(ix.mlp_sender[l]))) for l in range(L) for p in range(P)]

        def closure(start, fwd):
            seen, todo = set(start), list(start)
            while todo:
                n = todo.pop()
                for a, b, _ in edges:
                    x, y = (a, b) if fwd else (b, a)
                    if x == n and y not in seen:
                        seen.add(y)
                        todo.append(y)
                for a, b in links:
                    x, y = (a, b) if fwd else (b, a)
                    if x == n and y not in seen:
                        seen.add(y)
                        todo.append(y)
            return seen

        fw = closure([("s", p, int(ix.embed_sender[0])) for p in range(P)], True)
        bw = closure([("r", p, int(ix.logits_recv)) for p in range(P)], False)
        want = {e for a, b, e in edges if a in fw and b in bw}
        ks, kc = prune(same, cross, S, R)
        got = {("same", *x) for x in ks.nonzero().tolist()} | {("cross", *x) for x in kc.nonzero().tolist()}
        assert got == want, trial
        ks2, ci = prune_sparse(same, cross.nonzero(), cross.shape, S, R)
        assert torch.equal(ks2, ks) and torch.equal(ci, kc.nonzero())


def test_dense_view_guard_and_edits():
    """``cross`` densifies only when small, raises with the sparse accessors named otherwise;
    in-place edits of the dense view and of ``same_pos`` edit the circuit."""
    P, S, R = 3, 2, 2
    names_s, names_r = ["embed", "L0H0"], ["L0H0.q", "logits"]
    idx = torch.tensor([[0, 0, 2, 2, 0], [0, 0, 0, 1, 1]])
    c = Circuit(torch.zeros(P, S, R, dtype=torch.bool), None, None, None, names_s, names_r, [0, 1, 2],
                {}, cross_index=idx, cross_values=torch.tensor([0.5, -2.0]), cross_shape=(1, 1, 3, P, P))
    assert c.cross_index.tolist() == [[0, 0, 0, 1, 1], [0, 0, 2, 2, 0]]  # sorted
    assert c.cross_values.tolist() == [-2.0, 0.5] and c.n_cross == 2
    assert c.cross_scores[0, 0, 2, 2, 0] == 0.5 and c.cross_layer(0)[0, 0, 1, 1]
    assert c.cross_pair_counts()[2, 0] == 1 and c.cross_head_kinds()[0, 0].tolist() == [True, False, True]
    c.cross[0, 0, 0, 1, 1] = False  # in-place edit of the dense view
    assert c.n_cross == 1 and c.cross_values.tolist() == [0.5]
    with pytest.raises(ValueError, match="repeated"):
        Circuit(torch.zeros(P, S, R, dtype=torch.bool), None, None, None, names_s, names_r, [0, 1, 2],
                cross_index=torch.cat([idx, idx]), cross_shape=(1, 1, 3, P, P))
    big = Circuit(torch.zeros(P, S, R, dtype=torch.bool), None, None, None, names_s, names_r, [0, 1, 2],
                  cross_index=idx, cross_shape=(1, 1, 3, P, P))
    old = circuit_mod.DENSE_CROSS_LIMIT
    try:
        circuit_mod.DENSE_CROSS_LIMIT = 10
        with pytest.raises(MemoryError, match="cross_index"):
            big.cross
        with pytest.raises(MemoryError, match="cross_index"):
            big.cross_scores
    finally:
        circuit_mod.DENSE_CROSS_LIMIT = old


class _NoBigTensor(TorchDispatchMode):
    """Fails on any op whose output has ``>= limit`` elements."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.biggest = limit, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.biggest = max(self.biggest, t.numel())
                assert t.numel() < self.limit, (func, tuple(t.shape))
        return out


def test_position_circuit_without_a_whole_model_crossing_tensor(llama64, monkeypatch):
    """Select (greedy, top-N), evaluate, save/load, list and plot a position circuit from a top-k
    graph on a 96-token prompt: no tensor with as many elements as ``[layer head 3 P P]`` is
    created, and neither the circuit's nor the graph's dense views are used."""
    from circuits.stores import SparseAttributionGraph

    m = llama64
    T = 96
    clean, corrupt, met = _data(T, n=1, seed=2)
    top = attribute(m, clean, corrupt, met, granularity="position", store="topk", k=3000)
    ev = FaithfulnessEvaluator(m, clean, corrupt, met, n_boot=0)
    L, H = top.n_layers, top.n_heads
    limit = L * H * 3 * T * T

    def no_dense(*a, **k):
        raise AssertionError("densified the top-k graph")

    monkeypatch.setattr(SparseAttributionGraph, "to_dense", no_dense)
    monkeypatch.setattr(circuit_mod, "DENSE_CROSS_LIMIT", 0)
    with _NoBigTensor(limit) as mode:
        for method in ("greedy", "topn"):
            c = select(top, 300, method=method)
            assert c.n_cross > 0 and c.cross_shape == (L, H, 3, T, T)
            r = ev(c)
            back = Circuit.from_json(c.to_json())
            assert back.equals(c) and back.n_edges == c.n_edges
            assert len(c.edges()) == c.n_edges and c.plot(max_edges=50) is not None
            assert r.n_edges == c.n_edges and 0 < r.concrete_edges
    assert 0 < mode.biggest < limit
