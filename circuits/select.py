"""Circuit selection from an attribution graph: greedy growth from the logits, top-N, threshold.

Haklay et al. (2025, §3.3) build circuits *greedily from the logits*: start with the logits node
at the last position and repeatedly add the highest-|score| edge whose child is already in the
circuit, then drop nodes with no path to the inputs. Hanna et al. (2024) / MIB (Mueller et al.
2025) use plain top-N by |score|. Both are here, plus a score threshold, at every granularity
(token position, schema span, or none).

Node model (see :mod:`circuits.circuit`): a same-position edge ``s → r @ p`` has child
``r @ p`` and parent ``s @ p`` (nothing for ``embed``; the MLP node for ``M{l}``; the head-output
node for ``L{l}H{h}``); a crossing edge ``(l, h, kind, qpos, kpos)`` has child ``L{l}H{h} @ qpos``
and parent the query receiver at ``qpos`` or the key/value receiver (of the KV head) at ``kpos``.
"""

from __future__ import annotations

import heapq
from typing import Any, Literal, Sequence

import numpy as np
import torch
from einops import einsum, rearrange
from jaxtyping import Bool
from torch import Tensor

from .circuit import Circuit, GraphIndex

__all__ = ["select", "greedy_order", "prune", "circuit_from_masks", "circuit_from_order",
           "n_valid_edges"]


def _graph_parts(graph: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(same_pos scores, valid [pos sender receiver], cross scores, cross_valid) as CPU tensors."""
    for attr in ("same_pos", "valid", "cross", "senders", "receivers", "positions"):
        if not hasattr(graph, attr):
            raise TypeError(f"select() needs an AttributionGraph-like object with .{attr}; "
                            f"got {type(graph).__name__}")
    sp = graph.same_pos.detach().float().cpu()
    P = sp.shape[0]
    valid = graph.valid.detach().bool().cpu()
    valid = valid.expand(P, *valid.shape[-2:]) if valid.dim() == 2 else valid
    cr = graph.cross.detach().float().cpu()
    cv = getattr(graph, "cross_valid", None)
    if cv is None:
        cv = torch.ones_like(cr, dtype=torch.bool)
        cv &= torch.tril(torch.ones(cr.shape[-2], cr.shape[-1], dtype=torch.bool))
    cv = cv.detach().bool().cpu().expand_as(cr)
    # never select NaN scores
    valid = valid & ~torch.isnan(sp)
    cv = cv & ~torch.isnan(cr)
    return sp, valid, cr, cv


def n_valid_edges(graph: Any) -> int:
    """Total number of abstract edges of a graph (valid same-position + valid crossing)."""
    _, valid, _, cv = _graph_parts(graph)
    return int(valid.sum()) + int(cv.sum())


def _root_positions(roots: Literal["all", "last"] | Sequence[int], P: int) -> list[int]:
    if isinstance(roots, str):
        if roots == "all":
            return list(range(P))
        if roots == "last":
            return [P - 1]
        raise ValueError(f"roots must be 'all', 'last' or a list of position indices, got {roots!r}")
    out = [int(r) % P for r in roots]
    if not out:
        raise ValueError("roots is empty")
    return out


def greedy_order(
    graph: Any,
    max_edges: int | None = None,
    *,
    roots: Literal["all", "last"] | Sequence[int] = "all",
    threshold: float | None = None,
) -> np.ndarray:
    """Edges in the order greedy growth from the logits adds them.

    Start with the ``logits`` receiver at the ``roots`` positions in the circuit; repeatedly add
    the valid edge of highest |score| whose child node is already in the circuit (its parent
    node joins the circuit). Returns flat edge ids: ``(p·S + s)·R + r`` for same-position edges,
    ``P·S·R + flat index into [layer head kind qpos kpos]`` for crossing edges.

    ``roots="all"`` starts from the logits at every position; for metrics read at the final
    position the edges into non-final logits score exactly 0, so the order equals starting from
    the last position (ties aside) while staying right for padded batches at position
    granularity. Stops after ``max_edges`` edges, when the next edge has |score| < ``threshold``,
    or when no candidate is left.
    """
    sp, valid, cr, cv = _graph_parts(graph)
    P, S, R = sp.shape
    L, H = cr.shape[0], cr.shape[1]
    ix = GraphIndex(graph.senders, graph.receivers, L, H)
    if ix.logits_recv < 0:
        raise ValueError("graph has no 'logits' receiver to grow the circuit from")
    n_same = P * S * R
    # receiver nodes: p*R + r ; head-output nodes: P*R + (l*H + h)*P + qp
    A = rearrange(torch.where(valid, sp.abs(), torch.full_like(sp, -1.0)),
                  "pos send recv -> pos recv send").contiguous()
    A_sorted, A_order = torch.sort(A, dim=-1, descending=True, stable=True)
    A_sorted = rearrange(A_sorted, "pos recv send -> (pos recv) send").numpy().astype(np.float64)
    A_order = rearrange(A_order, "pos recv send -> (pos recv) send").numpy()
    C = rearrange(torch.where(cv, cr.abs(), torch.full_like(cr, -1.0)),
                  "layer head kind qpos kpos -> (layer head qpos) (kind kpos)")
    C_sorted, C_order = torch.sort(C, dim=-1, descending=True, stable=True)
    C_sorted = C_sorted.numpy().astype(np.float64)
    C_order = C_order.numpy()
    n_recv_nodes = P * R
    n_nodes = n_recv_nodes + L * H * P
    in_circuit = np.zeros(n_nodes, dtype=bool)
    ptr = np.zeros(n_nodes, dtype=np.int64)
    heap: list[tuple[float, int, int]] = []
    counter = 0
    limit = max_edges if max_edges is not None else n_same + L * H * 3 * P * P
    thr = -np.inf if threshold is None else float(threshold)
    sender_kind, sender_layer = ix.sender_kind.tolist(), ix.sender_layer.tolist()
    sender_head, mlp_recv = ix.sender_head.tolist(), ix.mlp_recv.tolist()
    cross_parent = ix.cross_parent.tolist()

    def push(node):  # unannotated: hot loop, no runtime type checks
        nonlocal counter
        i = ptr[node]
        if node < n_recv_nodes:
            if i < S and A_sorted[node, i] >= 0:
                heapq.heappush(heap, (-A_sorted[node, i], counter, node))
                counter += 1
        else:
            j = node - n_recv_nodes
            if i < 3 * P and C_sorted[j, i] >= 0:
                heapq.heappush(heap, (-C_sorted[j, i], counter, node))
                counter += 1

    def activate(node):
        if not in_circuit[node]:
            in_circuit[node] = True
            push(node)

    for p in _root_positions(roots, P):
        activate(p * R + int(ix.logits_recv))
    order: list[int] = []
    while heap and len(order) < limit:
        negs, _, node = heapq.heappop(heap)
        if -negs < thr:
            break
        i = ptr[node]
        ptr[node] = i + 1
        if node < n_recv_nodes:
            p, r = divmod(node, R)
            s = int(A_order[node, i])
            order.append((p * S + s) * R + r)
            k = sender_kind[s]
            if k == 1:
                activate(n_recv_nodes + (sender_layer[s] * H + sender_head[s]) * P + p)
            elif k == 2:
                activate(p * R + mlp_recv[sender_layer[s]])
        else:
            j = node - n_recv_nodes
            lh, qp = divmod(j, P)
            l, h = divmod(lh, H)
            kk, kp = divmod(int(C_order[j, i]), P)
            order.append(n_same + (((l * H + h) * 3 + kk) * P + qp) * P + kp)
            parent = cross_parent[l][h][kk]
            activate((qp if kk == 0 else kp) * R + parent)
        push(node)
    return np.asarray(order, dtype=np.int64)


def prune(
    same_pos: Bool[Tensor, "pos sender receiver"],
    cross: Bool[Tensor, "layer head kind qpos kpos"],
    senders: Sequence[str],
    receivers: Sequence[str],
    *,
    roots: Literal["all", "last"] | Sequence[int] = "all",
) -> tuple[Bool[Tensor, "pos sender receiver"], Bool[Tensor, "layer head kind qpos kpos"]]:
    """Keep only edges on a path from the inputs (``embed``) to the ``logits`` (at ``roots``).

    An edge survives iff its parent node is reachable from an embedding through circuit edges and
    its child node reaches the logits through circuit edges; both reachabilities are computed as
    fixed points over the layered graph (a few tensor ops per step, no per-edge loop). Under
    counterfactual ablation the pruned edges carry exactly their counterfactual value anyway.
    """
    P, S, R = same_pos.shape
    L, H = cross.shape[0], cross.shape[1]
    ix = GraphIndex(senders, receivers, L, H)
    M = same_pos.float()
    C = cross
    lh_sender = torch.as_tensor(ix.head_sender)  # [L H]
    parent = torch.as_tensor(ix.cross_parent)  # [L H 3]
    has_head = bool((lh_sender >= 0).all()) if L * H else False
    if L * H and not has_head:
        raise ValueError("every (layer, head) needs a sender 'L{l}H{h}' to prune crossing edges")
    mlp_s = torch.as_tensor(ix.mlp_sender)
    mlp_r = torch.as_tensor(ix.mlp_recv)
    mlp_ok = (mlp_s >= 0) & (mlp_r >= 0)
    mlp_s, mlp_r = mlp_s[mlp_ok], mlp_r[mlp_ok]
    # ---- forward reachability from the embeddings
    fs = torch.zeros(P, S, dtype=torch.bool)
    fs[:, torch.as_tensor(ix.embed_sender, dtype=torch.long)] = True
    cq = C[:, :, 0].any(-1)  # [L H qp]
    while True:
        fr = einsum(fs.float(), M, "pos sender, pos sender receiver -> pos receiver") > 0  # [P R]
        new = fs.clone()
        new[:, mlp_s] |= fr[:, mlp_r]
        if L * H:
            # q: parent at qp ; k, v: parent at kp
            fq = (rearrange(fr[:, parent[:, :, 0].clamp(min=0)], "pos layer head -> layer head pos")
                  & (parent[:, :, 0] >= 0)[..., None])  # [L H P]
            fk = (rearrange(fr[:, parent[:, :, 1].clamp(min=0)], "pos layer head -> layer head pos")
                  & (parent[:, :, 1] >= 0)[..., None])
            fv = (rearrange(fr[:, parent[:, :, 2].clamp(min=0)], "pos layer head -> layer head pos")
                  & (parent[:, :, 2] >= 0)[..., None])
            head_f = (cq & fq) | (C[:, :, 1] & fk[:, :, None, :]).any(-1) | (C[:, :, 2] & fv[:, :, None, :]).any(-1)
            new[:, lh_sender.reshape(-1)] |= rearrange(head_f, "layer head pos -> pos (layer head)")
        if torch.equal(new, fs):
            break
        fs = new
    fr = einsum(fs.float(), M, "pos sender, pos sender receiver -> pos receiver") > 0
    # ---- backward reachability from the logits
    br = torch.zeros(P, R, dtype=torch.bool)
    if ix.logits_recv >= 0:
        br[_root_positions(roots, P), ix.logits_recv] = True
    while True:
        bs = einsum(br.float(), M, "pos receiver, pos sender receiver -> pos sender") > 0  # [P S]
        new = br.clone()
        new[:, mlp_r] |= bs[:, mlp_s]
        if L * H:
            # head output at qp reaches logits
            bh = rearrange(bs[:, lh_sender.reshape(-1)], "pos (layer head) -> layer head pos", layer=L)
            live = C & bh[:, :, None, :, None]  # [L H 3 qp kp]
            q_need = live[:, :, 0].any(-1)  # [L H qp]
            k_need = live[:, :, 1].any(-2)  # [L H kp]
            v_need = live[:, :, 2].any(-2)
            for kind, need in ((0, q_need), (1, k_need), (2, v_need)):
                par = parent[:, :, kind]
                ok = par >= 0
                idx = par[ok]  # receivers
                vals = need[ok]  # [n P]
                upd = torch.zeros(R, P, dtype=torch.bool)
                upd.index_put_((idx,), vals, accumulate=True)
                new |= upd.T
        if torch.equal(new, br):
            break
        br = new
    bs = einsum(br.float(), M, "pos receiver, pos sender receiver -> pos sender") > 0
    same_keep = same_pos & fs[:, :, None] & br[:, None, :]
    if L * H:
        bh = rearrange(bs[:, lh_sender.reshape(-1)], "pos (layer head) -> layer head pos", layer=L)
        fpar = []
        for kind in range(3):
            par = parent[:, :, kind]
            f = rearrange(fr[:, par.clamp(min=0)], "pos layer head -> layer head pos") & (par >= 0)[..., None]
            fpar.append(f)
        f_parent = torch.stack([fpar[0][..., :, None].expand(L, H, P, P),
                                fpar[1][..., None, :].expand(L, H, P, P),
                                fpar[2][..., None, :].expand(L, H, P, P)], dim=2)
        cross_keep = C & f_parent & bh[:, :, None, :, None]
    else:
        cross_keep = C.clone()
    return same_keep, cross_keep


def circuit_from_masks(
    graph: Any,
    same_pos: Bool[Tensor, "pos sender receiver"],
    cross: Bool[Tensor, "layer head kind qpos kpos"],
    meta: dict[str, Any] | None = None,
    *,
    do_prune: bool = True,
    roots: Literal["all", "last"] | Sequence[int] = "all",
) -> Circuit:
    """Wrap edge masks on ``graph`` into a :class:`Circuit` (pruned unless ``do_prune=False``)."""
    sp, valid, cr, cv = _graph_parts(graph)
    same_pos = same_pos & valid
    cross = cross & cv
    if do_prune:
        same_pos, cross = prune(same_pos, cross, graph.senders, graph.receivers, roots=roots)
    gmeta = dict(getattr(graph, "meta", {}) or {})
    m = {"granularity": gmeta.get("granularity", "none" if list(graph.positions) == ["all"] else "position"),
         "graph_meta": gmeta, "pruned": do_prune}
    m.update(meta or {})
    return Circuit(same_pos, cross, sp, cr, list(graph.senders), list(graph.receivers),
                   list(graph.positions), m)


def circuit_from_order(graph: Any, order: np.ndarray, n: int, meta: dict[str, Any] | None = None,
                       *, do_prune: bool = True,
                       roots: Literal["all", "last"] | Sequence[int] = "all") -> Circuit:
    """The circuit made of the first ``n`` edges of a :func:`greedy_order` (then pruned)."""
    P, S, R = graph.same_pos.shape
    cshape = tuple(graph.cross.shape)
    n_same = P * S * R
    ids = torch.as_tensor(order[:n], dtype=torch.long)
    same = torch.zeros(n_same, dtype=torch.bool)
    same[ids[ids < n_same]] = True
    cross = torch.zeros(int(np.prod(cshape)), dtype=torch.bool)
    cross[ids[ids >= n_same] - n_same] = True
    return circuit_from_masks(graph, same.reshape(P, S, R), cross.reshape(cshape), meta,
                              do_prune=do_prune, roots=roots)


def select(
    graph: Any,
    n_edges: int | None = None,
    *,
    threshold: float | None = None,
    method: str = "greedy",
    roots: Literal["all", "last"] | Sequence[int] = "all",
    do_prune: bool = True,
    min_freq: float = 0.9,
) -> Circuit:
    """Select a circuit from an :class:`~circuits.graph.AttributionGraph`.

    Args:
        graph: scores ``same_pos[pos, sender, receiver]`` and ``cross[layer, head, kind, qpos,
            kpos]`` with validity masks, at any granularity (positions, spans or ``["all"]``).
        n_edges: number of abstract edges to take (before pruning).
        threshold: keep edges with |score| ≥ threshold (with ``method="greedy"``: grow until the
            best candidate falls below it). Give ``n_edges``, ``threshold`` or both.
        method: ``"greedy"`` — growth from the logits, always adding the highest-|score| edge
            whose child is already in the circuit (Haklay et al. 2025); ``"topn"`` — the
            ``n_edges`` highest-|score| edges (or all above ``threshold``) regardless of
            connectivity (Hanna et al. 2024; MIB); ``"stable"`` — ``graph`` is a
            :class:`~circuits.stability.Stability` (from :func:`circuits.resample`) and the
            circuit keeps the edges selected in ≥ ``min_freq`` of the bootstrap resamples.
        roots: logits positions the circuit grows from (``"all"``, ``"last"`` or indices); also
            the targets of pruning.
        do_prune: drop edges not on a path from the embeddings to the logits.

    Returns:
        :class:`Circuit` with boolean masks shaped like the graph's tensors; pruning can leave
        fewer than ``n_edges`` edges (``meta["n_requested"]`` keeps the request).
    """
    if method == "stable":
        return select_stable(graph, min_freq, do_prune=do_prune, roots=roots)
    if n_edges is None and threshold is None:
        raise ValueError("select() needs n_edges=..., threshold=... or both")
    if n_edges is not None and n_edges < 0:
        raise ValueError(f"n_edges must be >= 0, got {n_edges}")
    meta = {"method": method, "n_requested": n_edges, "threshold": threshold}
    if method == "greedy":
        order = greedy_order(graph, n_edges, roots=roots, threshold=threshold)
        return circuit_from_order(graph, order, len(order), meta, do_prune=do_prune, roots=roots)
    if method != "topn":
        raise ValueError(f"method must be 'greedy', 'topn' or 'stable', got {method!r}")
    sp, valid, cr, cv = _graph_parts(graph)
    scores = torch.cat([torch.where(valid, sp.abs(), torch.full_like(sp, -1.0)).reshape(-1),
                        torch.where(cv, cr.abs(), torch.full_like(cr, -1.0)).reshape(-1)])
    keep = scores >= 0
    if threshold is not None:
        keep &= scores >= threshold
    if n_edges is not None and n_edges < int(keep.sum()):
        top = torch.topk(torch.where(keep, scores, torch.full_like(scores, -1.0)), n_edges).indices
        keep = torch.zeros_like(keep)
        keep[top] = True
    n_same = sp.numel()
    return circuit_from_masks(graph, keep[:n_same].reshape(sp.shape), keep[n_same:].reshape(cr.shape),
                              meta, do_prune=do_prune, roots=roots)


def select_stable(stability: Any, min_freq: float = 0.9, *, do_prune: bool = True,
                  roots: Any = "all") -> Any:
    """The circuit of edges selected in ≥ ``min_freq`` of the resamples (scores: the full-data
    graph's), pruned to paths from the embeddings to the logits unless ``do_prune=False``.

    ``stability`` is a :class:`circuits.stability.Stability` (from :func:`circuits.resample`)."""
    # duck-typed (a Stability has the frequencies and the full-data graph), so that select does not
    # import stability, which imports select
    if not all(hasattr(stability, a) for a in ("same_freq", "cross_freq", "graph", "meta")):
        raise TypeError(f"method='stable' selects from a circuits.stability.Stability (from "
                        f"circuits.resample(...)), got {type(stability).__name__}")
    if not 0 < min_freq <= 1:
        raise ValueError(f"min_freq must be in (0, 1], got {min_freq}")
    meta = {"method": "stable", "min_freq": min_freq, "resamples": stability.meta.get("n"),
            "selection": stability.meta.get("selection")}
    return circuit_from_masks(stability.graph, stability.same_freq >= min_freq - 1e-9,
                              stability.cross_freq >= min_freq - 1e-9, meta, do_prune=do_prune,
                              roots=roots)
