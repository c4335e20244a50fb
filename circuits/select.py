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
from einops import rearrange
from jaxtyping import Bool, Int
from torch import Tensor

from .circuit import Circuit, GraphIndex

__all__ = ["select", "greedy_order", "prune", "prune_sparse", "circuit_from_masks",
           "circuit_from_order", "n_valid_edges"]


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


def _is_stored(graph: Any) -> bool:
    """A graph that keeps some edges as a list (``edge_ids``/``scores``: a top-k or threshold
    :class:`~circuits.stores.SparseAttributionGraph`); selected from without densifying."""
    return hasattr(graph, "edge_ids") and hasattr(graph, "scores")


def _stored_edges(graph: Any) -> tuple[Tensor, Tensor]:
    """(flat edge ids, float32 scores) of a stored graph's valid, non-NaN edges. Ids: same-position
    ``(p·S + s)·R + r``, crossing ``P·S·R + flat index into [layer head kind qpos kpos]``."""
    P, S, R = len(graph.positions), len(graph.senders), len(graph.receivers)
    ids = graph.edge_ids.detach().long().cpu()
    sc = graph.scores.detach().float().cpu()
    n_same = P * S * R
    valid = graph.valid.detach().bool().cpu()
    same = ids < n_same
    if valid.dim() == 2:
        v_ok = valid.reshape(-1)[(ids % (S * R)).clamp(max=S * R - 1)]
    else:
        v_ok = valid.reshape(-1)[ids.clamp(max=n_same - 1)]
    cv = graph.cross_valid.detach().bool().cpu()
    c = (ids - n_same).clamp(min=0)
    c_ok = cv.reshape(-1)[c % (P * P)] if cv.dim() == 2 else cv.reshape(-1)[c.clamp(max=cv.numel() - 1)]
    ok = torch.where(same, v_ok, c_ok) & ~torch.isnan(sc)
    return ids[ok], sc[ok]


def n_valid_edges(graph: Any) -> int:
    """Total number of abstract edges of a graph (valid same-position + valid crossing)."""
    if _is_stored(graph):
        return int(graph.n_edges())
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

    On a top-k / threshold graph (:class:`~circuits.stores.SparseAttributionGraph`) the candidates
    are the stored edges (no dense tensor is built): the order is the dense code's on the graph
    with every edge it did not store left out (tested). It can differ from greedy growth on the
    full dense graph, which may reach a child whose best edge is outside the global top k.
    """
    if _is_stored(graph):
        return _greedy_order_stored(graph, max_edges, roots=roots, threshold=threshold)
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


def _greedy_order_stored(graph: Any, max_edges: int | None, *, roots: Any,
                         threshold: float | None) -> np.ndarray:
    """:func:`greedy_order` over the stored edges of a sparse graph (same nodes, same heap and
    tie-breaking: per child node, decreasing |score| then increasing edge id)."""
    P, S, R = len(graph.positions), len(graph.senders), len(graph.receivers)
    L, H = int(graph.n_layers), int(graph.n_heads)
    ix = GraphIndex(graph.senders, graph.receivers, L, H)
    if ix.logits_recv < 0:
        raise ValueError("graph has no 'logits' receiver to grow the circuit from")
    ids_t, sc_t = _stored_edges(graph)
    ids = ids_t.numpy().astype(np.int64)
    mag = np.abs(sc_t.numpy()).astype(np.float64)
    n_same = P * S * R
    n_recv_nodes = P * R
    same = ids < n_same
    child = np.empty(len(ids), dtype=np.int64)
    parent = np.full(len(ids), -1, dtype=np.int64)  # node activated by taking the edge (-1: none)
    # same-position edges s -> r @ p: child r @ p; parent the head output / MLP node of s @ p
    i_s = ids[same]
    p, rem = np.divmod(i_s, S * R)
    sn, r = np.divmod(rem, R)
    child[same] = p * R + r
    kind = ix.sender_kind[sn]
    par = np.full(len(i_s), -1, dtype=np.int64)
    hd = kind == 1
    par[hd] = n_recv_nodes + (ix.sender_layer[sn[hd]] * H + ix.sender_head[sn[hd]]) * P + p[hd]
    ml = kind == 2
    par[ml] = p[ml] * R + ix.mlp_recv[ix.sender_layer[sn[ml]]]
    parent[same] = par
    # crossing edges (l, h, k, qp, kp): child head output L{l}H{h} @ qp; parent the q receiver @ qp
    # or the k / v receiver @ kp
    c = ids[~same] - n_same
    rest, kp = np.divmod(c, P)
    rest, qp = np.divmod(rest, P)
    rest, kk = np.divmod(rest, 3)
    l, h = np.divmod(rest, H)
    child[~same] = n_recv_nodes + (l * H + h) * P + qp
    parent[~same] = np.where(kk == 0, qp, kp) * R + ix.cross_parent[l, h, kk]
    n_nodes = n_recv_nodes + L * H * P
    order_e = np.lexsort((ids, -mag, child))  # by child, then decreasing |score|, then id
    ids, mag, child, parent = ids[order_e], mag[order_e], child[order_e], parent[order_e]
    counts = np.bincount(child, minlength=n_nodes)
    starts = np.cumsum(counts) - counts
    in_circuit = np.zeros(n_nodes, dtype=bool)
    ptr = np.zeros(n_nodes, dtype=np.int64)
    heap: list[tuple[float, int, int]] = []
    counter = 0
    limit = max_edges if max_edges is not None else len(ids)
    thr = -np.inf if threshold is None else float(threshold)
    counts_l, starts_l, mag_l = counts.tolist(), starts.tolist(), mag.tolist()
    ids_l, parent_l = ids.tolist(), parent.tolist()

    def push(node):  # unannotated: hot loop, no runtime type checks
        nonlocal counter
        i = ptr[node]
        if i < counts_l[node]:
            heapq.heappush(heap, (-mag_l[starts_l[node] + i], counter, node))
            counter += 1

    def activate(node):
        if not in_circuit[node]:
            in_circuit[node] = True
            push(node)

    for pp in _root_positions(roots, P):
        activate(pp * R + int(ix.logits_recv))
    out: list[int] = []
    while heap and len(out) < limit:
        negs, _, node = heapq.heappop(heap)
        if -negs < thr:
            break
        i = ptr[node]
        ptr[node] = i + 1
        e = starts_l[node] + i
        out.append(ids_l[e])
        if parent_l[e] >= 0:
            activate(parent_l[e])
        push(node)
    return np.asarray(out, dtype=np.int64)


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
    fixed points over the layered graph (a few scatter / gather ops over the kept edges per step,
    no per-edge loop; see :func:`prune_sparse`). Under counterfactual ablation the pruned edges
    carry exactly their counterfactual value anyway.
    """
    shape = tuple(int(x) for x in cross.shape)
    same_keep, cidx = prune_sparse(same_pos, cross.nonzero(), shape, senders, receivers, roots=roots)
    cross_keep = torch.zeros(shape, dtype=torch.bool)
    cross_keep[tuple(cidx.T)] = True
    return same_keep, cross_keep


def prune_sparse(
    same_pos: Bool[Tensor, "pos sender receiver"],
    cross_index: Int[Tensor, "edge 5"],
    cross_shape: Sequence[int],
    senders: Sequence[str],
    receivers: Sequence[str],
    *,
    roots: Literal["all", "last"] | Sequence[int] = "all",
) -> tuple[Bool[Tensor, "pos sender receiver"], Int[Tensor, "kept 5"]]:
    """:func:`prune` with the crossing edges as rows ``[n 5]`` (layer, head, kind, qpos, kpos):
    returns the pruned same-position mask and the surviving rows (in their input order).

    Forward reachability ``fs[p, s]`` (sender node reachable from an embedding) and backward
    reachability ``br[p, r]`` (receiver node reaches the logits at ``roots``) are fixed points:
    a receiver is reached if one of its kept edges' parent is; a head output at ``qp`` if one of
    its kept crossing edges' parent receiver (q at ``qp``, k / v of its KV head at ``kp``) is; an
    MLP sender if its MLP receiver is.
    """
    P, S, R = same_pos.shape
    L, H = int(cross_shape[0]), int(cross_shape[1])
    ix = GraphIndex(senders, receivers, L, H)
    lh_sender = torch.as_tensor(ix.head_sender)  # [L H]
    cpar = torch.as_tensor(ix.cross_parent)  # [L H 3]
    has_head = bool((lh_sender >= 0).all()) if L * H else False
    if L * H and not has_head:
        raise ValueError("every (layer, head) needs a sender 'L{l}H{h}' to prune crossing edges")
    mlp_s = torch.as_tensor(ix.mlp_sender)
    mlp_r = torch.as_tensor(ix.mlp_recv)
    mlp_ok = (mlp_s >= 0) & (mlp_r >= 0)
    mlp_s, mlp_r = mlp_s[mlp_ok], mlp_r[mlp_ok]
    sp, ss, sr = same_pos.nonzero(as_tuple=True)  # same-position edges
    ci = cross_index.long().reshape(-1, 5)
    cl, ch, ck, cq, ckp = ci.unbind(-1)
    if L * H:
        par = cpar[cl, ch, ck]  # parent receiver of each crossing edge
        ppos = torch.where(ck == 0, cq, ckp)  # ... and its position
        has_par = par >= 0
        par = par.clamp(min=0)
        head_s = lh_sender[cl, ch]  # the head-output sender (the child) of each crossing edge

    def reach_fwd(fs: Tensor) -> Tensor:  # [P R]: receiver reached through a kept same edge
        fr = torch.zeros(P, R, dtype=torch.bool)
        m = fs[sp, ss]
        fr[sp[m], sr[m]] = True
        return fr

    def reach_bwd(br: Tensor) -> Tensor:  # [P S]: sender reaches a live receiver
        bs = torch.zeros(P, S, dtype=torch.bool)
        m = br[sp, sr]
        bs[sp[m], ss[m]] = True
        return bs

    # ---- forward reachability from the embeddings
    fs = torch.zeros(P, S, dtype=torch.bool)
    fs[:, torch.as_tensor(ix.embed_sender, dtype=torch.long)] = True
    while True:
        fr = reach_fwd(fs)
        new = fs.clone()
        new[:, mlp_s] |= fr[:, mlp_r]
        if L * H:
            ok = has_par & fr[ppos, par]
            new[cq[ok], head_s[ok]] = True
        if torch.equal(new, fs):
            break
        fs = new
    fr = reach_fwd(fs)
    # ---- backward reachability from the logits
    br = torch.zeros(P, R, dtype=torch.bool)
    if ix.logits_recv >= 0:
        br[_root_positions(roots, P), ix.logits_recv] = True
    while True:
        bs = reach_bwd(br)
        new = br.clone()
        new[:, mlp_r] |= bs[:, mlp_s]
        if L * H:
            live = bs[cq, head_s] & has_par  # the head output at qp reaches the logits
            new[ppos[live], par[live]] = True
        if torch.equal(new, br):
            break
        br = new
    bs = reach_bwd(br)
    same_keep = torch.zeros(P, S, R, dtype=torch.bool)
    m = fs[sp, ss] & br[sp, sr]
    same_keep[sp[m], ss[m], sr[m]] = True
    if L * H:
        keep = has_par & fr[ppos, par] & bs[cq, head_s]
        return same_keep, ci[keep]
    return same_keep, ci.clone()


def circuit_from_masks(
    graph: Any,
    same_pos: Bool[Tensor, "pos sender receiver"],
    cross: Bool[Tensor, "layer head kind qpos kpos"] | Int[Tensor, "edge 5"],
    meta: dict[str, Any] | None = None,
    *,
    do_prune: bool = True,
    roots: Literal["all", "last"] | Sequence[int] = "all",
) -> Circuit:
    """Wrap edge masks on ``graph`` into a :class:`Circuit` (pruned unless ``do_prune=False``).

    ``cross`` is the dense crossing mask or the rows ``[n 5]`` (layer, head, kind, qpos, kpos) of
    its kept edges. On a top-k / threshold graph nothing ``[layer head 3 P P]``-sized is built:
    the circuit keeps the stored scores of its edges (0 for edges the graph did not store)."""
    if _is_stored(graph):
        P, S, R = len(graph.positions), len(graph.senders), len(graph.receivers)
        cshape = (int(graph.n_layers), int(graph.n_heads), 3, P, P)
        cidx = cross.nonzero() if cross.dim() == 5 else cross.long().reshape(-1, 5)
        return _circuit_from_stored(graph, same_pos.bool(), cidx, cshape, meta, do_prune=do_prune,
                                    roots=roots)
    sp, valid, cr, cv = _graph_parts(graph)
    if cross.dim() != 5:
        dense = torch.zeros(cr.shape, dtype=torch.bool)
        dense[tuple(cross.long().reshape(-1, 5).T)] = True
        cross = dense
    same_pos = same_pos & valid
    cross = cross & cv
    if do_prune:
        same_pos, cross = prune(same_pos, cross, graph.senders, graph.receivers, roots=roots)
    return Circuit(same_pos, cross, sp, cr, list(graph.senders), list(graph.receivers),
                   list(graph.positions), _circuit_meta(graph, meta, do_prune))


def _circuit_meta(graph: Any, meta: dict[str, Any] | None, do_prune: bool) -> dict[str, Any]:
    gmeta = dict(getattr(graph, "meta", {}) or {})
    m = {"granularity": gmeta.get("granularity", "none" if list(graph.positions) == ["all"] else "position"),
         "graph_meta": gmeta, "pruned": do_prune}
    m.update(meta or {})
    return m


def _circuit_from_stored(graph: Any, same_pos: Tensor, cross_index: Tensor, cshape: tuple[int, ...],
                         meta: dict[str, Any] | None, *, do_prune: bool, roots: Any) -> Circuit:
    """A :class:`Circuit` on a stored (top-k / threshold) graph from a same-position mask and
    crossing-edge rows, without densifying the graph or the crossing mask."""
    P, S, R = same_pos.shape
    n_same = P * S * R
    valid = graph.valid.detach().bool().cpu()
    same_pos = same_pos & (valid[None] if valid.dim() == 2 else valid)
    cv = graph.cross_valid.detach().bool().cpu()
    ci = cross_index
    if len(ci):
        c_ok = cv[ci[:, 3], ci[:, 4]] if cv.dim() == 2 else cv[tuple(ci.T)]
        ci = ci[c_ok]
    if do_prune:
        same_pos, ci = prune_sparse(same_pos, ci, cshape, graph.senders, graph.receivers, roots=roots)
    # scores of the circuit's edges: look their ids up among the stored edges (0 if not stored)
    ids, sc = _stored_edges(graph)
    order = torch.argsort(ids)
    ids, sc = ids[order], sc[order]
    _, H, _, _, _ = cshape
    p, s, r = same_pos.nonzero(as_tuple=True)
    want = torch.cat([(p * S + s) * R + r,
                      n_same + (((ci[:, 0] * H + ci[:, 1]) * 3 + ci[:, 2]) * P + ci[:, 3]) * P + ci[:, 4]])
    pos = torch.searchsorted(ids, want).clamp(max=max(len(ids) - 1, 0))
    found = (ids[pos] == want) if len(ids) else torch.zeros(len(want), dtype=torch.bool)
    vals = torch.where(found, sc[pos] if len(ids) else torch.zeros(len(want)), torch.zeros(len(want)))
    n_s = len(p)
    return Circuit(same_pos, None, None, None, list(graph.senders), list(graph.receivers),
                   list(graph.positions), _circuit_meta(graph, meta, do_prune), cross_index=ci,
                   cross_values=vals[n_s:], cross_shape=cshape, same_values=vals[:n_s])


def circuit_from_order(graph: Any, order: np.ndarray, n: int, meta: dict[str, Any] | None = None,
                       *, do_prune: bool = True,
                       roots: Literal["all", "last"] | Sequence[int] = "all") -> Circuit:
    """The circuit made of the first ``n`` edges of a :func:`greedy_order` (then pruned)."""
    if _is_stored(graph):
        return _circuit_from_ids(graph, torch.as_tensor(order[:n], dtype=torch.long), meta,
                                 do_prune=do_prune, roots=roots)
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


def _circuit_from_ids(graph: Any, ids: Tensor, meta: dict[str, Any] | None, *, do_prune: bool,
                      roots: Any) -> Circuit:
    """Circuit of flat edge ids (same-position ``(p·S + s)·R + r``, crossing ``P·S·R + flat``)
    on a stored graph."""
    P, S, R = len(graph.positions), len(graph.senders), len(graph.receivers)
    L, H = int(graph.n_layers), int(graph.n_heads)
    n_same = P * S * R
    same = torch.zeros(n_same, dtype=torch.bool)
    same[ids[ids < n_same]] = True
    c = torch.unique(ids[ids >= n_same] - n_same)  # sorted
    kp, rest = c % P, c // P
    q, rest = rest % P, rest // P
    k, rest = rest % 3, rest // 3
    h, l = rest % H, rest // H
    ci = torch.stack([l, h, k, q, kp], dim=-1)
    return _circuit_from_stored(graph, same.reshape(P, S, R), ci, (L, H, 3, P, P), meta,
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
    if _is_stored(graph):  # the stored edges, by decreasing |score| (ties: by id)
        ids, sc = _stored_edges(graph)
        mag = sc.abs()
        ok = mag >= (threshold if threshold is not None else 0.0)
        ids, mag = ids[ok], mag[ok].double()
        order = np.lexsort((ids.numpy(), -mag.numpy()))
        if n_edges is not None:
            order = order[:n_edges]
        return _circuit_from_ids(graph, ids[torch.as_tensor(order, dtype=torch.long)], meta,
                                 do_prune=do_prune, roots=roots)
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
