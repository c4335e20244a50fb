"""The dense (pre-streaming) attribution loop, kept verbatim as a test reference.

Streamed attribution (circuits.attribute) must equal these scores to 1e-5 relative.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

import torch

from circuits.attribution import (Ablation, Granularity, Method, _fit_width, _grad_targets,
                                  _mean_activations, _realign_rope, _receiver_grads,
                                  crossing_scores, patchable, prepare)
from circuits.graph import GRAPH_VERSION, AttributionGraph
from circuits.metrics import Metric, MetricBatch, as_metric


def attribute_dense_reference(
    model: Any,
    clean: Any,
    corrupt: Any = None,
    metric: Metric | Callable[..., Tensor] | None = None,
    *,
    method: Method | str = "eap",
    ig_steps: int = 5,
    ablation: Ablation | str = "counterfactual",
    granularity: Granularity | str = "position",
    schema: Any = None,
    batch_size: int = 8,
    task: str | None = None,
    progress: bool = False,
) -> AttributionGraph:
    """Score every edge of the position-aware graph (module docstring has the formulas).

    Args:
        model: a TransformerBridge (or a :class:`PatchableModel`).
        clean: prompts, a ``TokenBatch``, a ``[batch pos]`` token tensor, a right-padded
            ``(tokens, attention_mask)`` pair — or a :class:`circuits.tasks.Task` (then corrupt,
            metric and schema come from it unless given).
        corrupt: counterfactual prompts (one per clean prompt) for ``ablation="counterfactual"``;
            for ``"mean"`` the ablation split (default: the clean prompts); unused for ``"zero"``.
        metric: :class:`~circuits.metrics.Metric` or callable ``f(logits, batch) -> [batch]``.
        method: ``"eap"`` or ``"eap-ig"`` (``ig_steps`` interpolation points k/m, k = 0 … m−1).
        granularity: ``"position"`` (own token coordinates), ``"span"`` (needs ``schema``) or
            ``"none"`` (the non-positional baseline: sum over positions).
        schema: ``interp.Schema`` (applied to clean and corrupt), ``SchemaSpans``, or a pair of
            SchemaSpans (clean, corrupt). Needed for spans and for clean/corrupt of different
            lengths.
        batch_size: examples per forward/backward (results do not depend on it).

    Returns:
        :class:`~circuits.graph.AttributionGraph` with mean-over-examples scores.
    """
    from circuits.tasks import Task

    if isinstance(clean, Task):
        t = clean
        clean = t.clean
        corrupt = t.corrupt if corrupt is None else corrupt
        metric = t.metric if metric is None else metric
        schema = t.schema if schema is None else schema
        task = t.name if task is None else task
    if metric is None:
        raise ValueError("attribute needs a metric (e.g. circuits.logit_diff(correct, wrong))")
    if method not in ("eap", "eap-ig"):
        raise ValueError(f"method must be 'eap' or 'eap-ig', got {method!r}")
    if method == "eap-ig" and ig_steps < 1:
        raise ValueError(f"ig_steps must be >= 1, got {ig_steps}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if method == "eap-ig" and ablation == "zero":
        warnings.warn("EAP-IG with zero ablation interpolates from an all-zero input embedding, "
                      "where RMSNorm/LayerNorm are singular: scores (especially of 'embed') are "
                      "unreliable; prefer mean or counterfactual ablation", stacklevel=2)
    met = as_metric(metric)
    pm = patchable(model)
    t0 = time.perf_counter()
    data = prepare(pm, clean, corrupt, ablation=ablation, granularity=granularity, schema=schema)
    cb = data.clean
    n, P = cb.tokens.shape
    K = len(data.positions)
    S, R, L, H = len(pm.senders), len(pm.receivers), pm.n_layers, pm.n_heads
    dev, dt = pm.device, pm.dtype
    same = torch.zeros(K, S, R, dtype=torch.float64, device=dev)
    cross = torch.zeros(L, H, 3, K, K, dtype=torch.float64, device=dev)
    sizes = torch.zeros(K, dtype=torch.float64, device=dev)
    pairs = torch.zeros(K, K, dtype=torch.float64, device=dev)
    valid = pm.valid.to(dev)
    mean_acts = None
    if ablation == "mean":
        mean_acts = _mean_activations(pm, data.corrupt if data.corrupt is not None else cb, batch_size)
    metric_total = 0.0
    it = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"{method} attribution")
    for s0 in it:
        idx = torch.arange(s0, min(n, s0 + batch_size))
        w = int(cb.mask[idx].sum(1).max())
        toks = cb.tokens[idx, :w].to(dev)
        mask = cb.mask[idx, :w].to(dev)
        grp = data.group[idx, :w].to(dev)
        # ablation source in clean coordinates
        if ablation == "counterfactual":
            xb = data.corrupt
            assert xb is not None and data.position_map is not None
            wx = int(xb.mask[idx].sum(1).max())
            ax = pm.activations(xb.tokens[idx, :wx].to(dev), xb.mask[idx, :wx].to(dev))
            src = data.position_map[idx, :w].clamp(max=wx - 1).to(dev)
            abl = _realign_rope(pm, ax.align(src), src)
        elif ablation == "mean":
            assert mean_acts is not None
            abl = _fit_width(mean_acts, w)
        else:
            abl = None  # zeros, built from the clean activations below
        with torch.no_grad():
            pos_ids = pm.position_ids(mask)
            e_clean = pm.embed(toks, pos_ids)
        needs_clean_logits = met.needs_clean
        if method == "eap":
            emb = e_clean.clone().requires_grad_(True)
            with torch.enable_grad():
                out = pm.forward(None, mask, embeds=emb, grad_nodes=True, record=True)
                acts = out["activations"].detach()
                mb = MetricBatch.from_mask(mask, idx.to(dev),
                                           out["logits"].detach() if needs_clean_logits else None)
                mval = met(out["logits"], mb)
                metric_total += float(mval.detach().sum())
                targets = _grad_targets(out)
                grads = torch.autograd.grad(mval.sum(), targets, allow_unused=True)
            grads = _receiver_grads(pm, out, targets, grads)
            if abl is None:
                abl = acts.zeros_like()
        else:
            with torch.no_grad():
                out0 = pm.forward(toks, mask, record=True)
            acts = out0["activations"]
            clean_logits = out0["logits"] if needs_clean_logits else None
            mb = MetricBatch.from_mask(mask, idx.to(dev), clean_logits)
            metric_total += float(met(out0["logits"], mb).sum())
            if abl is None:
                abl = acts.zeros_like()
            e_abl = abl.senders[:, :, 0].expand_as(e_clean)
            # All m interpolation points of this batch in one forward/backward: the points are
            # stacked along the batch axis (rows = m · batch), which on CPU runs the small
            # per-point matmuls as one larger, faster one; per-example maths is unchanged.
            m_, b_ = ig_steps, toks.shape[0]
            alphas = torch.arange(m_, device=dev, dtype=e_clean.dtype) / m_  # k/m, k = 0 … m-1
            emb = (e_abl[None] + alphas[:, None, None, None] * (e_clean - e_abl)[None])
            emb = emb.reshape(m_ * b_, *e_clean.shape[1:]).detach().requires_grad_(True)
            mask_m = mask.repeat(m_, 1)
            mb_m = MetricBatch.from_mask(mask_m, idx.to(dev).repeat(m_),
                                         None if clean_logits is None else clean_logits.repeat(m_, 1, 1))
            with torch.enable_grad():
                o = pm.forward(None, mask_m, embeds=emb, grad_nodes=True)
                mval = met(o["logits"], mb_m)
                targets = _grad_targets(o)
                gk = torch.autograd.grad(mval.sum(), targets, allow_unused=True)
            # mean over the m points: [m·b …] -> [m b …] -> [b …]
            grads = [g.reshape(m_, b_, *g.shape[1:]).mean(0)
                     for g in _receiver_grads(pm, o, targets, gk)]
        # ---- same-position edges
        g_recv = []
        for l in range(L):
            g_recv += [grads[l], grads[L + l]]  # [b p H+2G d], [b p 1 d]
        g_recv.append(grads[2 * L])  # logits [b p 1 d]
        gR = torch.cat(g_recv, dim=2)  # [b p R d]
        delta = (abl.senders.expand_as(acts.senders) - acts.senders)  # [b p S d]
        b_, p_ = toks.shape
        sc = torch.bmm(delta.reshape(b_ * p_, S, -1), gR.reshape(b_ * p_, R, -1).transpose(1, 2))
        onehot = torch.zeros(b_ * p_, K, dtype=sc.dtype, device=dev)
        gflat = grp.reshape(-1)
        real = gflat >= 0
        onehot[real.nonzero().squeeze(1), gflat[real]] = 1.0
        same += (onehot.T @ sc.reshape(b_ * p_, S * R)).reshape(K, S, R).double()
        # ---- crossing edges
        gz = torch.stack(grads[2 * L + 1:], dim=1)  # [b L p H e]
        cs = crossing_scores(pm, acts, abl, gz, mask)  # [b L H 3 p p]
        oh = onehot.view(b_, p_, K).double()
        cross += torch.einsum("blhxqk,bqi,bkj->lhxij", cs.double(), oh, oh)
        sizes += oh.sum((0, 1))
        tril = torch.ones(p_, p_, dtype=torch.float64, device=dev).tril()
        pairs += torch.einsum("bqi,qk,bkj->ij", oh, tril, oh)
    same = (same / n).to(dt) * valid
    cross = (cross / n).to(dt)
    sizes = (sizes / n).to(dt)
    pairs = (pairs / n).to(dt)
    cross_valid = pairs > 0
    if granularity == "none":
        cross_valid = torch.ones(1, 1, dtype=torch.bool, device=dev)
    cross = cross * cross_valid
    info = getattr(pm.bridge, "interp_info", None)
    meta = {
        "version": GRAPH_VERSION,
        "method": method,
        "ig_steps": ig_steps if method == "eap-ig" else None,
        "ablation": ablation,
        "metric": met.name,
        "metric_clean_mean": metric_total / n,
        "granularity": granularity,
        "schema_spans": data.span_names,
        "prepend_bos": cb.prepend_bos,
        "model": getattr(info, "name", None) or pm.model_name,
        "task": task,
        "n_examples": n,
        "batch_size": batch_size,
        "position_alignment": "schema spans (offset clipped to span)" if data.span_names and ablation == "counterfactual" else "identity",
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return AttributionGraph(list(pm.senders), list(pm.receivers), list(data.positions),
                            same.cpu(), valid.cpu(), cross.cpu(), cross_valid.cpu(), sizes.cpu(),
                            pairs.cpu(), meta)
