"""Circuit selection: greedy growth, top-N, threshold, pruning — against brute-force references."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from circuits.circuit import Circuit, GraphIndex, concrete_edge_counts
from circuits.select import greedy_order, n_valid_edges, prune, select


def synthetic_graph(L=3, H=4, G=2, P=4, seed=0, positions=None, sparsity=0.0):
    """A random AttributionGraph-like object with the agreed sender / receiver naming."""
    g = torch.Generator().manual_seed(seed)
    senders = ["embed"] + [f"L{l}H{h}" for l in range(L) for h in range(H)] + [f"M{l}" for l in range(L)]
    receivers = ([f"L{l}H{h}.q" for l in range(L) for h in range(H)]
                 + [f"L{l}KV{k}.{t}" for l in range(L) for k in range(G) for t in "kv"]
                 + [f"M{l}" for l in range(L)] + ["logits"])
    ix = GraphIndex(senders, receivers)

    def s_order(s):  # residual-stream order of the sender's write: embed -1, head l -> 2l, mlp l -> 2l+1
        k, l = ix.sender_kind[s], ix.sender_layer[s]
        return -1 if k == 0 else (2 * l if k == 1 else 2 * l + 1)

    def r_order(r):  # order of the read: q/k/v at layer l -> 2l, mlp l -> 2l+1, logits -> inf
        k, l = ix.recv_kind[r], ix.recv_layer[r]
        return 2 * l if k < 3 else (2 * l + 1 if k == 3 else 10 ** 6)

    valid = torch.tensor([[s_order(s) < r_order(r) for r in range(len(receivers))] for s in range(len(senders))])
    positions = positions or list(range(P))
    P = len(positions)
    same = torch.randn(P, len(senders), len(receivers), generator=g) * valid
    cross = torch.randn(L, H, 3, P, P, generator=g)
    cv = torch.tril(torch.ones(P, P, dtype=torch.bool)).expand(L, H, 3, P, P).clone()
    if sparsity:
        same = same * (torch.rand(same.shape, generator=g) > sparsity)
        cross = cross * (torch.rand(cross.shape, generator=g) > sparsity)
    cross = cross * cv
    return SimpleNamespace(same_pos=same, valid=valid, cross=cross, cross_valid=cv, senders=senders,
                           receivers=receivers, positions=positions,
                           meta={"granularity": "position", "prepend_bos": True})


# ---------------------------------------------------------------- brute-force references
def _edges(graph):
    """All valid edges as (id, |score|, child_node, parent_node) with explicit node tuples."""
    P, S, R = graph.same_pos.shape
    L, H = graph.cross.shape[:2]
    ix = GraphIndex(graph.senders, graph.receivers)
    out = []
    for p in range(P):
        for s in range(S):
            for r in range(R):
                if not graph.valid[s, r]:
                    continue
                k = ix.sender_kind[s]
                if k == 0:
                    parent = ("embed", p)
                elif k == 1:
                    parent = ("head", ix.sender_layer[s], ix.sender_head[s], p)
                else:
                    parent = ("recv", ix.mlp_recv[ix.sender_layer[s]], p)
                out.append(((p * S + s) * R + r, abs(float(graph.same_pos[p, s, r])), ("recv", r, p), parent))
    n_same = P * S * R
    for l in range(L):
        for h in range(H):
            for k in range(3):
                for qp in range(P):
                    for kp in range(P):
                        if not graph.cross_valid[l, h, k, qp, kp]:
                            continue
                        par = int(ix.cross_parent[l, h, k])
                        fid = n_same + (((l * H + h) * 3 + k) * P + qp) * P + kp
                        out.append((fid, abs(float(graph.cross[l, h, k, qp, kp])), ("head", l, h, qp),
                                    ("recv", par, qp if k == 0 else kp)))
    return out


def brute_greedy(graph, n, roots):
    ix = GraphIndex(graph.senders, graph.receivers)
    edges = _edges(graph)
    nodes = {("recv", ix.logits_recv, p) for p in roots}
    taken, order = set(), []
    while len(order) < n:
        cands = [e for e in edges if e[0] not in taken and e[2] in nodes]
        if not cands:
            break
        best = max(cands, key=lambda e: e[1])
        taken.add(best[0])
        order.append(best[0])
        nodes.add(best[3])
    return order


def brute_prune(graph, ids, roots):
    ix = GraphIndex(graph.senders, graph.receivers)
    edges = [e for e in _edges(graph) if e[0] in set(ids)]
    # merge the mlp sender node into its receiver node (already done in _edges' parents)
    fwd = {e[3] for e in edges if e[3][0] == "embed"}
    changed = True
    while changed:
        changed = False
        for e in edges:
            if e[3] in fwd and e[2] not in fwd:
                fwd.add(e[2]); changed = True
    bwd = {("recv", ix.logits_recv, p) for p in roots}
    changed = True
    while changed:
        changed = False
        for e in edges:
            if e[2] in bwd and e[3] not in bwd:
                bwd.add(e[3]); changed = True
    return {e[0] for e in edges if e[3] in fwd and e[2] in bwd}


def _ids(circ):
    P, S, R = circ.same_pos.shape
    same = circ.same_pos.reshape(-1).nonzero().flatten().tolist()
    cross = (circ.cross.reshape(-1).nonzero().flatten() + P * S * R).tolist()
    return set(same) | set(cross)


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("roots", ["all", "last"])
def test_greedy_order_matches_bruteforce(roots):
    g = synthetic_graph(L=2, H=2, G=1, P=3, seed=1)
    r = list(range(3)) if roots == "all" else [2]
    order = greedy_order(g, 60, roots=roots)
    assert order.tolist() == brute_greedy(g, 60, r)


def test_greedy_children_in_circuit_and_prune_matches_bruteforce():
    g = synthetic_graph(L=3, H=4, G=2, P=4, seed=2, sparsity=0.3)
    for n in (5, 40, 200):
        c = select(g, n, method="greedy", roots="last")
        order = greedy_order(g, n, roots="last")
        assert _ids(c) == brute_prune(g, order.tolist(), [3])
        assert c.n_edges <= n
    c_all = select(g, 10 ** 9, do_prune=False)
    assert c_all.n_edges <= n_valid_edges(g)


def test_topn_and_threshold_match_bruteforce():
    g = synthetic_graph(L=2, H=2, G=2, P=3, seed=3)
    edges = _edges(g)
    top = sorted(edges, key=lambda e: -e[1])[:50]
    c = select(g, 50, method="topn", do_prune=False)
    assert _ids(c) == {e[0] for e in top}
    c = select(g, 50, method="topn")
    assert _ids(c) == brute_prune(g, [e[0] for e in top], [0, 1, 2])
    thr = 1.0
    c = select(g, threshold=thr, method="topn", do_prune=False)
    assert _ids(c) == {e[0] for e in edges if e[1] >= thr}
    cg = select(g, threshold=thr, method="greedy", do_prune=False)
    assert all(e[1] >= thr for e in edges if e[0] in _ids(cg))


def test_prune_drops_dangling_edges():
    g = synthetic_graph(L=2, H=1, G=1, P=1, seed=0)
    ix = GraphIndex(g.senders, g.receivers)
    same = torch.zeros_like(g.valid)[None].clone()
    cross = torch.zeros(2, 1, 3, 1, 1, dtype=torch.bool)
    # embed -> L0H0.v, crossing v inside L0H0, L0H0 -> logits : a full path
    same[0, ix.embed_sender[0], ix.v_recv[0, 0]] = True
    cross[0, 0, 2, 0, 0] = True
    same[0, ix.head_sender[0, 0], ix.logits_recv] = True
    # dangling: L1H0 -> logits without any input into L1H0; embed -> M1 without output
    same[0, ix.head_sender[1, 0], ix.logits_recv] = True
    same[0, ix.embed_sender[0], ix.mlp_recv[1]] = True
    s2, c2 = prune(same, cross, g.senders, g.receivers)
    assert int(s2.sum()) == 2 and int(c2.sum()) == 1
    assert not s2[0, ix.head_sender[1, 0], ix.logits_recv]
    assert not s2[0, ix.embed_sender[0], ix.mlp_recv[1]]
    # without the crossing edge nothing reaches the logits from the inputs
    s3, c3 = prune(same, torch.zeros_like(cross), g.senders, g.receivers)
    assert int(s3.sum()) == 0 and int(c3.sum()) == 0


@pytest.mark.parametrize("positions", [["all"], ["bos", "IO", "S1", "end"], [0, 1, 2]])
def test_granularities_and_json_roundtrip(positions, tmp_path):
    g = synthetic_graph(L=2, H=2, G=1, positions=positions, seed=4)
    c = select(g, 30)
    assert isinstance(c, Circuit) and 0 < c.n_edges <= 30
    d = c.to_json()
    json.dumps(d)
    c2 = Circuit.from_json(d)
    assert torch.equal(c2.same_pos, c.same_pos) and torch.equal(c2.cross, c.cross)
    assert torch.allclose(c2.same_pos_scores[c.same_pos], c.same_pos_scores[c.same_pos])
    c.save_json(str(tmp_path / "c.json"))
    c3 = Circuit.from_json(str(tmp_path / "c.json"))
    assert c3.n_edges == c.n_edges and c3.positions == list(positions)
    assert c.top(3)[0]["score"] ** 2 >= c.top(3)[-1]["score"] ** 2
    fig = c.plot()
    assert len(fig.data) > 0 and fig.layout.title.text


def test_concrete_edge_counts():
    g = synthetic_graph(L=1, H=1, G=1, positions=["a", "b"], seed=5)
    ix = GraphIndex(g.senders, g.receivers)
    same = torch.zeros(2, len(g.senders), len(g.receivers), dtype=torch.bool)
    cross = torch.zeros(1, 1, 3, 2, 2, dtype=torch.bool)
    same[1, ix.embed_sender[0], ix.logits_recv] = True  # one same-pos edge at span b
    cross[0, 0, 1, 1, 0] = True  # k edge: query in b, key in a
    cross[0, 0, 2, 1, 1] = True  # v edge inside b (causal pairs only)
    pos_index = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, -1, -1]])
    n = concrete_edge_counts(same, cross, pos_index)
    # example 0: |b|=3 -> 3 ; k: 3*2 = 6 ; v: pairs t'<=t in b: 6  -> 15
    # example 1: |b|=2 -> 2 ; k: 2*1 = 2 ; v: 3 -> 7
    assert n.tolist() == [15.0, 7.0]


def test_bad_inputs():
    g = synthetic_graph(L=1, H=1, G=1, P=2)
    with pytest.raises(ValueError, match="n_edges"):
        select(g)
    with pytest.raises(ValueError, match="method"):
        select(g, 3, method="best")
    with pytest.raises(ValueError, match="sender"):
        GraphIndex(["embed", "X1"], ["logits"])
