"""Exact edge patching, batched: the reference every attribution method approximates.

The exact score of an abstract edge e is :math:`M(\\text{run with } e \\text{ ablated}) - M(\\text{clean})`,
mean over examples, where ablating e feeds every concrete edge it stands for (all token pairs of
its position group, span or — non-positional — every position) from the ablation source
(counterfactual, mean or zero; Haklay et al. 2025, arXiv:2502.04577). This is
ACDC's / MIB's ``"exact"`` score (one patched forward per edge), computed here for several edges
per forward by stacking copies of the batch, each copy with its own ``keep`` mask.

Cost: one forward of ``n`` examples per edge. Use it on small graphs (the trained toys) or on a
subsample of edges (:func:`exact_edge_scores`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from einops import reduce
from torch import Tensor

from circuits._activations import Activations
from circuits._forward import PatchableModel
from circuits.metrics import Metric, MetricBatch
from interp.types import Model

__all__ = ["exact_edge_scores", "exact_graph", "edges_per_forward"]


def _repeat(a: Activations, r: int) -> Activations:
    if a.batch == 1 or r == 1:
        return a
    return a._map(lambda _n, t: t.repeat(r, *([1] * (t.dim() - 1))))


def edges_per_forward(pm: PatchableModel, n: int, p: int, budget: int = 768 * 2 ** 20) -> int:
    """How many edge copies of an ``n × p`` batch fit one patched forward within ``budget``
    bytes (keep masks, their float copies, per-receiver inputs and the ablation source)."""
    S, R, d = len(pm.senders), len(pm.receivers), pm.d_model
    H, G = pm.n_heads, pm.n_kv_heads
    item = torch.finfo(pm.dtype).bits // 8
    per = n * p * (S * R * (1 + item) + (2 * S + 2 * (H + 2 * G)) * d * item
                   + pm.n_layers * H * 3 * p)
    return max(1, int(budget // max(1, per)))


@torch.no_grad()
def _patched_metric(pm: PatchableModel, met: Metric, toks: Tensor, mask: Tensor, abl: Activations,
                    base_logits: Tensor, keep: Tensor | None, keep_cross: Tensor | None,
                    copies: int) -> Tensor:
    """Mean metric per copy ``[copies]`` of a run with the given masks (batch = copies · n)."""
    n = toks.shape[0]
    T = toks.repeat(copies, 1)
    Mk = mask.repeat(copies, 1)
    lg = pm.run(T, Mk, ablated=_repeat(abl, copies), keep=keep, keep_cross=keep_cross)
    idx = torch.arange(n, device=toks.device).repeat(copies)
    cl = base_logits.repeat(copies, 1, 1) if met.needs_clean else None
    vals = met(lg, MetricBatch.from_mask(Mk, idx, cl))
    return reduce(vals.double(), "(copy n) -> copy", "mean", copy=copies)


def _edge_masks(pm: PatchableModel, edges: Sequence[tuple], group: Tensor,
                ) -> tuple[Tensor | None, Tensor | None]:
    """Stacked keep / keep_cross masks ``[E·n …]`` ablating edge e in copy e. An edge is
    ``(kind, sender, receiver, g, g_k)`` with abstract position ids ``g`` (query) and ``g_k``
    (key) matched against ``group`` ``[n p]``."""
    n, p = group.shape
    E = len(edges)
    S, R, L, H = len(pm.senders), len(pm.receivers), pm.n_layers, pm.n_heads
    dev = pm.device
    grp = group.to(dev)
    keep = keep_cross = None
    tril = torch.ones(p, p, dtype=torch.bool, device=dev).tril()
    for e, (kind, snd, rcv, g, gk) in enumerate(edges):
        rows = slice(e * n, (e + 1) * n)
        if kind == "same":
            if keep is None:
                keep = torch.ones(E * n, p, S, R, dtype=torch.bool, device=dev)
            keep[rows, :, pm.sender_index[snd], pm.receiver_index[rcv]] = ~(grp == g)
        else:
            if keep_cross is None:
                keep_cross = torch.ones(E * n, L, H, 3, p, p, dtype=torch.bool, device=dev)
            l, h = (int(x) for x in snd[1:].split("H"))
            sel = (grp == g)[:, :, None] & (grp == gk)[:, None, :] & tril
            keep_cross[rows, l, h, "qkv".index(kind)] = ~sel
    return keep, keep_cross


def run_exact(pm: PatchableModel, met: Metric, toks: Tensor, mask: Tensor, abl: Activations,
              group: Tensor, edges: Sequence[tuple], *, per_forward: int | None = None,
              progress: bool = False) -> Tensor:
    """Exact scores ``[E]`` (float64) of abstract edges ``(kind, sender, receiver, g, g_k)``."""
    toks, mask = toks.to(pm.device), mask.to(pm.device)
    base_logits = pm.run(toks, mask)
    mb = MetricBatch.from_mask(mask, None, base_logits if met.needs_clean else None)
    base = float(met(base_logits, mb).double().mean())
    n, p = toks.shape
    per = per_forward or edges_per_forward(pm, n, p)
    out = torch.empty(len(edges), dtype=torch.float64)
    # same-position and crossing edges in separate forwards (each needs only its own masks)
    order = sorted(range(len(edges)), key=lambda i: edges[i][0] != "same")
    chunks = [order[i: i + per] for i in range(0, len(order), per)]
    it: Any = chunks
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chunks, desc="exact patching")
    for ch in it:
        kinds = {edges[i][0] == "same" for i in ch}
        if len(kinds) > 1:  # split a mixed chunk
            parts = [[i for i in ch if edges[i][0] == "same"], [i for i in ch if edges[i][0] != "same"]]
        else:
            parts = [ch]
        for part in parts:
            keep, kc = _edge_masks(pm, [edges[i] for i in part], group)
            vals = _patched_metric(pm, met, toks, mask, abl, base_logits, keep, kc, len(part))
            out[torch.tensor(part)] = vals.cpu() - base
    return out


def exact_edge_scores(model: Model, clean: Any, corrupt: Any, metric: Any, edges: Sequence[Any], *,
                      ablation: str = "counterfactual", schema: Any = None,
                      per_forward: int | None = None, progress: bool = False) -> Tensor:
    """Exact patching of many position-granularity edges (:class:`~circuits.graph.Edge` or
    ``(kind, sender, receiver, pos, kpos)``), several per forward: ``M(edge ablated) − M(clean)``,
    mean over examples. Equal to :func:`circuits.attribution.exact_edge_score` edge by edge."""
    from circuits._inputs import _setup_exact

    pm, data, met, abl, toks = _setup_exact(model, clean, corrupt, metric, ablation, schema)  # type: ignore[arg-type]
    tup = []
    for e in edges:
        kind, snd, rcv, pos, kpos = e[:5]
        tup.append((kind, snd, rcv, int(str(pos).split(":")[0]), int(str(kpos).split(":")[0])))
    return run_exact(pm, met, toks, data.clean.mask, abl, data.group, tup,
                     per_forward=per_forward, progress=progress)


def exact_graph(pm: PatchableModel, met: Metric, data: Any, abl: Activations, toks: Tensor,
                *, max_edges: int, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Exact scores of every valid abstract edge of the graph of ``data`` (its granularity):
    ``same [K S R]`` and ``cross [L H 3 K K]`` (zeros where invalid)."""
    K = len(data.positions)
    S, R, L, H = len(pm.senders), len(pm.receivers), pm.n_layers, pm.n_heads
    grp = data.group
    present = torch.zeros(K, dtype=torch.bool)
    present[grp[grp >= 0].unique()] = True
    p = grp.shape[1]
    tril = torch.ones(p, p, dtype=torch.bool).tril()
    real = grp >= 0
    pair = torch.zeros(K, K, dtype=torch.bool)
    for i in range(grp.shape[0]):
        qi, ki = torch.nonzero(tril & real[i][:, None] & real[i][None, :], as_tuple=True)
        pair[grp[i, qi], grp[i, ki]] = True
    valid = pm.valid.cpu()
    edges: list[tuple] = []
    for g in torch.nonzero(present).flatten().tolist():
        for s, r in torch.nonzero(valid).tolist():
            edges.append(("same", pm.senders[s], pm.receivers[r], g, g))
    heads = [f"L{l}H{h}" for l in range(L) for h in range(H)]
    for gq, gk in torch.nonzero(pair).tolist():
        for hd in heads:
            for kind in "qkv":
                edges.append((kind, hd, hd, gq, gk))
    if len(edges) > max_edges:
        raise ValueError(f"method='exact' would patch {len(edges)} edges, one forward each (more than "
                         f"exact_max_edges={max_edges}): use a coarser granularity, fewer positions, "
                         f"circuits.exact_edge_scores on a subsample of edges, or raise exact_max_edges")
    vals = run_exact(pm, met, toks, data.clean.mask, abl, grp, edges, progress=progress)
    same = torch.zeros(K, S, R, dtype=torch.float64)
    cross = torch.zeros(L, H, 3, K, K, dtype=torch.float64)
    for (kind, snd, rcv, g, gk), v in zip(edges, vals.tolist()):
        if kind == "same":
            same[g, pm.sender_index[snd], pm.receiver_index[rcv]] = v
        else:
            l, h = (int(x) for x in snd[1:].split("H"))
            cross[l, h, "qkv".index(kind), g, gk] = v
    return same, cross
