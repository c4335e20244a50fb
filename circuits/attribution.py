"""Position-aware edge attribution: EAP and EAP-IG over positions and schema spans.

For an edge u → v (sender u, receiver v) of the graph of :mod:`circuits._forward` at position
p, with clean sender output :math:`z_u`, ablated output :math:`z^*_u` (counterfactual, mean or
zero) and metric M (Haklay et al. 2025, arXiv:2502.04577; Syed et al. 2023, arXiv:2310.10348; REFERENCES.md):

* **EAP**: :math:`g(u\\to v) = (z^*_u - z_u)\\cdot \\partial M/\\partial x_v` at the clean run —
  one forward on the counterfactual, one forward + backward on the clean input, all edges at once.
* **EAP-IG** (Hanna et al. 2024): the gradient is averaged over m runs whose input embeddings
  are interpolated, :math:`e_k = e^* + \\tfrac{k}{m}(e - e^*)`, k = 0 … m−1.
* **Crossing edges** (inside query head h at query t, from key position t' ≤ t) are exact in
  the attention, linear only in the head output: the change :math:`\\Delta z_t` of the head's
  mixed value at t is computed in closed form from cached q/k/v/patterns and dotted with
  :math:`\\partial M/\\partial z_t` (averaged over the IG points for EAP-IG):

  - v: :math:`\\Delta z_t = A_{tt'}(v^*_{t'} - v_{t'})`;
  - k or q: one score :math:`s_{tt'}` moves by :math:`\\delta` (:math:`q_t\\cdot(k^*_{t'}-k_{t'})/\\sqrt d`
    or :math:`(q^*_t-q_t)\\cdot k_{t'}/\\sqrt d`); re-normalising the softmax gives
    :math:`\\Delta z_t = c\\,(v_{t'} - z_t)` with :math:`c = A_{tt'}(e^\\delta-1)/(1+A_{tt'}(e^\\delta-1))`.

Scores are **means over examples** of per-example sums (granularity ``"position"``: per token
position of the example's own coordinates; ``"span"``: summed inside schema spans,
:math:`g_S(e) = \\frac1{|D|}\\sum_x\\sum_{e'\\in f(e)} g_x(e')`; ``"none"``: summed over all
positions — the non-positional baseline, exactly the sum of the ``"position"`` scores).
Sign: a score approximates M(ablated edge) − M(clean).

Variable lengths: clean and counterfactual prompts may differ in length when a schema is given;
token j of span s of the clean prompt takes its counterfactual from token min(j, |s*|−1) of the
same span of the counterfactual prompt. Without a schema the per-example lengths must match.
Zero ablation is a large, off-distribution perturbation: EAP ranks nodes only roughly like exact
patching there (Spearman ≈ 0.55 on random toys), and EAP-IG's k = 0 point is an all-zero input on
which the norms are singular (a warning is raised). Aligned counterfactual queries and keys are re-rotated to the clean positions under RoPE (so
crossing edges compare q and k at the clean relative offsets). Mean ablation averages the
ablation split per token position (own coordinates).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from einops import einsum, rearrange
from jaxtyping import Float, Int
from torch import Tensor

from circuits._forward import Activations, PatchableModel
from circuits._inputs import (  # re-exported: the inputs live below attribution (no import cycle)
    AlignedData,
    Ablation,
    Granularity,
    Method,
    _fit_width,
    _mean_activations,
    _realign_rope,
    _setup_exact,
    patchable,
    prepare,
)
from circuits._stream import (SenderDeltas, _softmax_shift, acc_dtype_for, align_lite, eap_grads,
                              full_senders, ig_grads, layer_cross_blocks)
from circuits.graph import GRAPH_VERSION, AttributionGraph
from circuits.metrics import Metric, MetricBatch, as_metric
from interp.types import Model

__all__ = ["attribute", "patchable", "exact_node_scores", "exact_edge_score", "AlignedData",
           "prepare"]


# ----------------------------------------------------------------------------------------------
# crossing edges
# ----------------------------------------------------------------------------------------------
def _grad_targets(out: dict[str, Any]) -> list[Tensor]:
    """Tensors of a ``grad_nodes`` forward to differentiate at: per layer q, k, v projections,
    then the MLP inputs, the final-norm input and the head results z."""
    return ([t for qkv in out["qkv"] for t in qkv] + out["mlp_in"] + [out["logits_in"]]
            + out["z"])


def _receiver_grads(pm: PatchableModel, out: dict[str, Any], targets: list[Tensor],
                    grads: Sequence[Tensor | None]) -> list[Tensor]:
    """``[attn receivers of layer 0 … L−1] + [MLP inputs] + [logits input] + [z per layer]``:
    attention receiver inputs ``[b p H+2G d]`` from the q/k/v gradients
    (:meth:`PatchableModel.attn_receiver_grads`), the rest as differentiated."""
    g = [torch.zeros_like(t) if gg is None else gg.detach() for t, gg in zip(targets, grads)]
    L = pm.n_layers
    recv = [pm.attn_receiver_grads(l, out["ln1_in"][l], *g[3 * l: 3 * l + 3]) for l in range(L)]
    return recv + g[3 * L:]


def crossing_scores(
    pm: Any,
    clean: Activations,
    ablated: Activations,
    grad_z: Float[Tensor, "batch layer pos head d_head"],
    attention_mask: Int[Tensor, "batch pos"],
) -> Float[Tensor, "batch layer head kind qpos kpos"]:
    """Per-example crossing-edge scores :math:`\\Delta z_t\\cdot\\partial M/\\partial z_t`
    (kinds q, k, v; closed forms in the module docstring), vectorised over all (t, t').

    ``pm`` needs ``n_heads``, ``n_kv_heads`` and ``scale`` (a :class:`PatchableModel`)."""
    rep = pm.n_heads // pm.n_kv_heads
    f64 = torch.float64

    def kv(t: Tensor) -> Tensor:
        return (t.repeat_interleave(rep, dim=3) if rep > 1 else t).to(f64)

    q, kh, vh, z = clean.q.to(f64), kv(clean.k), kv(clean.v), clean.z.to(f64)
    b = q.shape[0]
    qa = ablated.q.to(f64).expand_as(q)
    kha, vha = kv(ablated.k).expand_as(kh), kv(ablated.v).expand_as(vh)
    g = grad_z.to(f64)
    A = clean.pattern.to(f64)  # [b L H q k]
    qk = "b layer query head d_head, b layer key head d_head -> b layer head query key"  # per-head q·k-type dots
    Gv = einsum(g, vh, qk)
    Gva = einsum(g, vha, qk)
    Go = einsum(g, z, "b layer query head d_head, b layer query head d_head -> b layer head query")
    s_v = A * (Gva - Gv)
    if getattr(pm, "attn_softcap", None) is None:
        dk = pm.scale * einsum(q, kha - kh, qk)
        dq = pm.scale * einsum(qa - q, kh, qk)
    else:  # soft-capped scores (Gemma 2): the move of the capped score, pm.score(q·k)
        s0 = pm.score(einsum(q, kh, qk))
        dk = pm.score(einsum(q, kha, qk)) - s0
        dq = pm.score(einsum(qa, kh, qk)) - s0
    move = Gv - Go[..., None]
    s_k = _softmax_shift(A, dk) * move
    s_q = _softmax_shift(A, dq) * move
    out = torch.stack([s_q, s_k, s_v], dim=3)  # [b L H 3 q k]
    p = attention_mask.shape[1]
    m = attention_mask.bool().to(out.device)
    ok = torch.ones(p, p, dtype=torch.bool, device=out.device).tril()[None] & m[:, :, None] & m[:, None, :]
    out = out * ok[:, None, None, None]
    return out.to(grad_z.dtype)


# ----------------------------------------------------------------------------------------------
# the main entry point
# ----------------------------------------------------------------------------------------------
def attribute(
    model: Model,
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
    store: str = "dense",
    k: int | None = None,
    per: str = "global",
    threshold: float | None = None,
    path: str | Path | None = None,
    max_memory: int | str | None = None,
    exact_max_edges: int = 20000,
    graddrop: bool = False,
) -> Any:
    """Score every edge of the position-aware graph (module docstring has the formulas).

    Args:
        model: a TransformerBridge (or a :class:`PatchableModel`).
        clean: prompts, a ``TokenBatch``, a ``[batch pos]`` token tensor, a right-padded
            ``(tokens, attention_mask)`` pair — or a :class:`circuits.tasks.Task` (then corrupt,
            metric and schema come from it unless given).
        corrupt: counterfactual prompts (one per clean prompt) for ``ablation="counterfactual"``;
            for ``"mean"`` the ablation split (default: the clean prompts); unused for ``"zero"``.
        metric: :class:`~circuits.metrics.Metric` or callable ``f(logits, batch) -> [batch]``.
        method: ``"eap"``, ``"eap-ig"`` (``ig_steps`` interpolation points k/m, k = 0 … m−1),
            ``"atp*"`` (AtP*'s QK fix, :mod:`circuits._atp`), ``"atp*-ig"`` (the QK fix on EAP-IG
            gradients), ``"eap-ig-activations"`` (MIB: each component's output interpolated in
            turn, ``ig_steps`` points k/m, k = 1 … m), ``"clean-corrupted"`` (gradients
            averaged over the clean and the ablated point, MIB) or ``"exact"`` (every edge
            patched exactly, :mod:`circuits._exact`; at most ``exact_max_edges`` edges);
            definitions in :mod:`circuits._methods`.
        graddrop: AtP*'s GradDrop (``method="atp*"`` only; L backward passes, scores are
            magnitudes ≥ 0; :mod:`circuits._methods`).
        granularity: ``"position"`` (own token coordinates), ``"span"`` (needs ``schema``) or
            ``"none"`` (the non-positional baseline: sum over positions).
        schema: ``interp.Schema`` (applied to clean and corrupt), ``SchemaSpans``, or a pair of
            SchemaSpans (clean, corrupt). Needed for spans and for clean/corrupt of different
            lengths.
        batch_size: examples per forward/backward (results do not depend on it).
        store: output of a ``"position"`` graph: ``"dense"`` (an AttributionGraph),
            ``"topk"`` (the ``k`` edges of largest |score|, over the graph or ``per="layer"``),
            ``"threshold"`` (edges with |score| ≥ ``threshold``), ``"disk"`` (safetensors shards
            in the directory ``path``, read lazily) or ``"auto"`` (dense when it fits in
            ``max_memory``, else disk); see :mod:`circuits.stores`.
        max_memory: budget in bytes (or ``"8GiB"``) for the working memory beyond the model's
            weights: the batch size (and EAP-IG points per pass, and with ``store="auto"`` the
            store) are chosen to fit (:func:`circuits.memory.estimate_memory`), or a
            ``MemoryError`` saying what would fit is raised before anything runs.

    Computation is streamed receiver layer by receiver layer (:mod:`circuits._stream`): the
    ``none`` and ``span`` granularities never hold per-position blocks beyond one layer's.

    Returns:
        :class:`~circuits.graph.AttributionGraph` with mean-over-examples scores, or a
        :class:`~circuits.stores.SparseAttributionGraph` / ``ShardedAttributionGraph`` for the
        top-k, threshold and disk stores.
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
    from circuits._methods import METHODS, method_ablation_check

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    method_ablation_check(str(method), str(ablation))
    if graddrop and method != "atp*":
        raise ValueError(f"graddrop=True is AtP*'s GradDrop: use it with method='atp*', not {method!r}")
    if method in ("eap-ig", "atp*-ig", "eap-ig-activations") and ig_steps < 1:
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
    if store not in ("dense", "topk", "threshold", "disk", "auto"):
        raise ValueError(f"store must be 'dense', 'topk', 'threshold', 'disk' or 'auto', got {store!r}")
    if store not in ("dense", "auto") and granularity != "position":
        raise ValueError(f"store={store!r} is for granularity='position' graphs (a {granularity!r} "
                         f"graph is small and always dense): drop store= or use position granularity")
    from circuits.memory import plan_attribution

    plan_method, plan_steps = {"eap-ig": ("eap-ig", ig_steps), "atp*-ig": ("eap-ig", ig_steps),
                               "eap-ig-activations": ("eap-ig", ig_steps),
                               "clean-corrupted": ("eap-ig", 2)}.get(
        str(method), ("eap", 1))
    plan = plan_attribution(pm, n_tokens=P, n_examples=n, batch_size=batch_size,
                            granularity=str(granularity), method=plan_method, ig_steps=plan_steps,
                            store=store, k=k, max_memory=max_memory)
    batch_size, store, ig_chunk = plan["batch_size"], plan["store"], plan["ig_chunk"]
    if store == "disk" and path is None:
        raise ValueError("the graph does not fit in memory as a dense tensor: pass path= (a "
                         "directory for store='disk' shards) or store='topk' with k=")
    K = len(data.positions)
    S, R, L, H = len(pm.senders), len(pm.receivers), pm.n_layers, pm.n_heads
    dev, dt = pm.device, pm.dtype
    acc = acc_dtype_for(dev, dt)
    # crossing-edge blocks [b h 3 T T] are computed in the model's precision (at least float32;
    # float64 models stay float64) and only their reductions accumulate in `acc`
    cdt = torch.promote_types(dt, torch.float32)
    out_dt = torch.float32 if dt in (torch.bfloat16, torch.float16) else dt
    valid = pm.valid.to(dev)
    positional = granularity == "position"
    # concrete sizes and (query, key ≤ query) pairs per abstract position, mean per example
    sizes = torch.zeros(K, dtype=torch.float64)
    pairs = torch.zeros(K, K, dtype=torch.float64)
    tril_full = torch.ones(P, P, dtype=torch.bool).tril()
    for s0 in range(0, n, batch_size):
        grp = data.group[s0: s0 + batch_size]
        real = grp >= 0
        if positional:
            sizes += real.sum(0).double()
            pairs += (real[:, :, None] & real[:, None, :] & tril_full).sum(0).double()
        else:
            oh = torch.zeros(*grp.shape, K, dtype=torch.float64)
            oh[real] = torch.nn.functional.one_hot(grp[real], K).double()
            sizes += oh.sum((0, 1))
            pairs += einsum(oh, tril_full.double(), oh, "b query abs_q, query key, b key abs_k -> abs_q abs_k")
    sizes, pairs = sizes / n, pairs / n
    cross_valid = pairs > 0
    if granularity == "none":
        cross_valid = torch.ones(1, 1, dtype=torch.bool)
    if graddrop and L < 2:
        raise ValueError("GradDrop needs at least 2 layers (its scores are divided by L - 1)")
    if method == "exact":
        from circuits._methods import exact_attribute

        return exact_attribute(pm, met, data, ablation=str(ablation), sizes=sizes, pairs=pairs,
                               cross_valid=cross_valid, out_dt=out_dt, max_edges=exact_max_edges,
                               progress=progress, meta_extra={"task": task, "t0": t0})
    batches = list(range(0, n, batch_size))
    sink = None
    if positional:
        from circuits.stores import PositionSink

        sink = PositionSink(senders=list(pm.senders), receivers=list(pm.receivers),
                            positions=list(data.positions), n_layers=L, n_heads=H,
                            valid=pm.valid.cpu(), cross_valid=cross_valid,
                            span_sizes=sizes.to(out_dt), cross_pairs=pairs.to(out_dt),
                            n_batches=len(batches), n_examples=n, store=store, k=k, per=per,
                            threshold=threshold, path=path, device=dev if store == "dense" else "cpu")
    # the none/span accumulators are made when the first batch is scored (not live during its
    # backward passes)
    same: Tensor | None = None
    cross: Tensor | None = None
    mean_acts = None
    if ablation == "mean":
        mean_acts = _mean_activations(pm, data.corrupt if data.corrupt is not None else cb, batch_size)
    metric_total = 0.0
    it: Any = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"{method} attribution")
    work = int(plan["work_bytes"])

    def counterfactual_batch(idx: Tensor, w: int) -> tuple[Tensor, Tensor, Tensor]:
        """Counterfactual tokens and mask of examples ``idx`` (trimmed to their longest) and, for
        each of the ``w`` clean tokens, the counterfactual position it takes its value from."""
        xb = data.corrupt
        assert xb is not None and data.position_map is not None
        wx = int(xb.mask[idx].sum(1).max())
        src = data.position_map[idx, :w].clamp(max=wx - 1).to(dev)
        return xb.tokens[idx, :wx].to(dev), xb.mask[idx, :wx].to(dev), src

    for s0 in it:
        idx = torch.arange(s0, min(n, s0 + batch_size))
        w = int(cb.mask[idx].sum(1).max())
        toks = cb.tokens[idx, :w].to(dev)
        mask = cb.mask[idx, :w].to(dev)
        grp = data.group[idx, :w].to(dev)
        b_ = toks.shape[0]
        def ablation_source(idx: Tensor = idx, w: int = w) -> Activations | None:
            """Ablated activations in clean coordinates (no attention patterns; a counterfactual's
            head outputs are not recorded either — made from z with its deltas, SenderDeltas)."""
            if ablation == "counterfactual":
                xt, xm, src = counterfactual_batch(idx, w)
                with torch.no_grad():
                    ax = pm.forward(xt, xm, record=True, record_pattern=False, need_logits=False,
                                    record_heads=False)["activations"]
                return _realign_rope(pm, align_lite(ax, src), src)
            if ablation == "mean":
                assert mean_acts is not None
                return _fit_width(mean_acts, w)
            return None

        def ablation_embedding(idx: Tensor = idx, w: int = w) -> Tensor:
            """The ablation source's input embedding (its ``embed`` sender, in clean coordinates)
            without running the ablated forward: EAP-IG's interpolation end point."""
            if ablation == "counterfactual":
                xt, xm, src = counterfactual_batch(idx, w)
                ex = pm.embed(xt, pm.position_ids(xm))
                return torch.gather(ex, 1, src.long()[:, :, None].expand(-1, -1, ex.shape[-1]))
            if ablation == "mean":
                assert mean_acts is not None
                return _fit_width(mean_acts, w).senders[:, :, 0]
            return torch.zeros_like(e_clean)

        with torch.no_grad():
            e_clean = pm.embed(toks, pm.position_ids(mask))
        if method in ("eap", "atp*", "clean-corrupted"):
            # the ablation source after the backward: not live during it
            acts, gp, tot = eap_grads(pm, met, e_clean, mask, idx.to(dev),
                                      stop_grad_layer=0 if graddrop else None)
            clean_ln1 = gp.ln1_in[0]
            abl = ablation_source()
            if method == "clean-corrupted":
                from circuits._methods import add_corrupt_point

                gp = add_corrupt_point(pm, met, gp, e_clean, abl, mask, idx.to(dev))
        else:
            # EAP-IG needs only the ablated input embedding before its passes: the ablation source
            # and the clean recording are made after them (not live during the backward passes)
            late = method in ("eap-ig", "atp*-ig")
            abl = None if late else ablation_source()
            clean_logits = None
            if late and met.needs_clean:
                with torch.no_grad():
                    clean_logits = pm.forward(toks, mask)["logits"]
            out0: dict[str, Any] = {}

            def record_clean() -> float:
                """The clean recording (into ``out0``) and its summed metric."""
                with torch.no_grad():
                    out0.update(pm.forward(toks, mask, record=True, record_pattern=False,
                                           grad_nodes=method == "atp*-ig", record_heads=False))
                cl = out0["logits"] if clean_logits is None and met.needs_clean else clean_logits
                return float(met(out0["logits"], MetricBatch.from_mask(mask, idx.to(dev), cl)).sum())

            if not late:
                tot = record_clean()
                clean_logits = out0["logits"] if met.needs_clean else None
            e_abl = (ablation_embedding() if late else
                     abl.senders[:, :, 0] if abl is not None else torch.zeros_like(e_clean)).expand_as(e_clean)

            def mb_fn(mc: int, mask: Tensor = mask, idx: Tensor = idx, cl: Any = clean_logits) -> MetricBatch:
                return MetricBatch.from_mask(mask.repeat(mc, 1), idx.to(dev).repeat(mc),
                                             None if cl is None else cl.repeat(mc, 1, 1))

            if method == "eap-ig-activations":
                from circuits._methods import activation_ig_grads

                # the clean run recorded no head outputs (record_heads=False): recompute them here
                cs = full_senders(pm, out0["activations"])
                abl_s = full_senders(pm, abl) if abl is not None else torch.zeros_like(cs[:1])
                gp = activation_ig_grads(pm, met, e_clean, e_abl, cs, abl_s, mask, mb_fn,
                                         ig_steps, min(ig_chunk, ig_steps))
                del cs
            else:
                # a counterfactual at the clean positions and mask (identity alignment): the
                # k = 0 point's run on its embedding is the counterfactual run — recorded there
                # instead of running it again, where that does not raise the peak (the plan)
                reuse = False
                if ablation == "counterfactual" and plan["ig_record_first"]:
                    xt_, xm_, src_ = counterfactual_batch(idx, w)
                    reuse = (xm_.shape == mask.shape and torch.equal(xm_, mask)
                             and torch.equal(src_, torch.arange(w, device=dev).expand_as(src_)))
                    del xt_, xm_, src_
                gp = ig_grads(pm, met, e_clean, e_abl, mask, mb_fn, ig_steps, min(ig_chunk, ig_steps),
                              record_first=reuse)
                del e_abl
                # the clean recording first, its logits dropped as soon as the metric is read;
                # then the ablation source (or the k = 0 point's recording)
                tot = record_clean()
                out0["logits"] = None
                if reuse:
                    assert gp.first is not None
                    abl, gp.first = gp.first, None
                else:
                    abl = ablation_source()
            acts = out0["activations"]
            clean_ln1 = out0["ln1_in"]
            del out0
        metric_total += tot
        # sender deltas z* − z, made a sender layer at a time as the scoring below reaches them
        # (head outputs from z where a run recorded none; remade per receiver layer where the plan
        # cannot hold them); ablated q/k/v per layer
        deltas = SenderDeltas(pm, acts, abl, keep=plan["deltas"] == "keep")
        if abl is None:
            za = torch.zeros_like(acts.q[:1])
            qa_all, ka_all, va_all = za, torch.zeros_like(acts.k[:1]), torch.zeros_like(acts.v[:1])
        else:  # in place: one [b p S d] buffer
            qa_all, ka_all, va_all = abl.q, abl.k, abl.v
        q_all, k_all, v_all, z_all = acts.q, acts.k, acts.v, acts.z
        del acts, abl
        realf = (grp >= 0).to(deltas.dtype)
        if not positional and same is None:
            same = torch.zeros(K, S, R, dtype=acc, device=dev)
            cross = torch.zeros(L, H, 3, K, K, dtype=acc, device=dev)
        oh = None
        if not positional:
            oh = torch.zeros(b_, w, K, dtype=acc, device=dev)
            r_ = grp >= 0
            oh[r_] = torch.nn.functional.one_hot(grp[r_], K).to(acc)
        d = pm.d_model
        absw = 1.0 / (L - 1) if graddrop else None
        ex = None
        for drop in (range(L) if graddrop else [None]):
            if drop:  # GradDrop pass drop > 0 (pass 0 came with the clean activations)
                del gp
                _, gp, _ = eap_grads(pm, met, e_clean, mask, idx.to(dev), stop_grad_layer=drop)
            for l in range(L + 1):
                if l < L:
                    rs = pm.receiver_slice(l)
                    ns = pm.n_upstream(l, "mlp")
                    G_l = torch.cat([gp.attn(pm, l), gp.mean(gp.mlp[l])], dim=2)  # [b p H+2G+1 d]
                else:  # the logits receiver reads every sender
                    rs, ns = slice(R - 1, R), S
                    G_l = gp.mean(gp.logits)
                nr = rs.stop - rs.start
                pc = max(1, min(w, work // max(1, 4 * b_ * ns * (nr + (d if b_ > 1 else 0)))))
                for c0 in range(0, w, pc):
                    c1 = min(w, c0 + pc)
                    blk = deltas.dot(G_l, c0, c1, ns)  # [b pos sender receiver]
                    if method in ("atp*", "atp*-ig") and l < L:  # QK fix: exact softmax for q/k receivers
                        from circuits._atp import qk_fix_block

                        blk[..., :H + pm.n_kv_heads] = qk_fix_block(
                            pm, l, clean_ln1[l], deltas.dense(c0, c1, ns), c0, q_all[:, l], k_all[:, l],
                            v_all[:, l], z_all[:, l], gp.mean(gp.z[l]), mask,
                            torch.promote_types(dt, torch.float32)).to(blk.dtype)
                    blk = blk * realf[:, c0:c1, None, None]
                    if absw is not None and sink is not None:  # GradDrop: |score| per example
                        blk = blk.abs() * absw
                    if sink is not None:
                        sink.add_same(rs, ns, c0, blk[0] if b_ == 1 else blk.sum(0))
                    elif absw is not None:  # per-example group sums, |.| after every chunk
                        assert oh is not None
                        if ex is None:
                            ex = torch.zeros(b_, K, ns, nr, dtype=acc, device=dev)
                        ex += einsum(oh[:, c0:c1], blk.to(acc),
                                     "b pos abs, b pos sender receiver -> b abs sender receiver")
                    else:
                        assert same is not None and oh is not None
                        same[:, :ns, rs] += einsum(oh[:, c0:c1], blk.to(acc),
                                                   "b pos abs, b pos sender receiver -> abs sender receiver")
                if ex is not None:
                    assert same is not None and absw is not None
                    same[:, :ns, rs] += ex.abs().sum(0) * absw
                    ex = None
                del G_l
                if l == L:
                    break
                hc = max(1, min(H, work // max(1, b_ * w * w * 8 * 12)))
                for h0, h1, cs in layer_cross_blocks(
                        pm, l, q_all[:, l], k_all[:, l], v_all[:, l], z_all[:, l], qa_all[:, l],
                        ka_all[:, l], va_all[:, l], gp.mean(gp.z[l]), mask, hc, cdt):
                    # the [b h 3 T T] block in the compute dtype, its reductions added in `acc`
                    if sink is not None:  # (one example: its own block, no copy)
                        cb_ = cs if absw is None else cs.abs() * absw
                        sink.add_cross(l, h0, cb_[0] if b_ == 1 else cb_.sum(0))
                    elif granularity == "none":
                        assert cross is not None
                        cross[l, h0:h1, :, 0, 0] += (cs.sum((0, 3, 4)) if absw is None
                                                     else cs.sum((3, 4)).abs().sum(0) * absw).to(acc)
                    else:
                        assert cross is not None and oh is not None
                        ohc = oh.to(cdt)
                        # keys first, then queries: two [T T]×[T K] products, never [.. T K T K]
                        ck = einsum(cs, ohc, "b head kind query key, b key abs_k -> b head kind query abs_k")
                        if absw is None:
                            cross[l, h0:h1] += einsum(ohc, ck, "b query abs_q, b head kind query abs_k "
                                                               "-> head kind abs_q abs_k").to(acc)
                        else:
                            cross[l, h0:h1] += einsum(ohc, ck, "b query abs_q, b head kind query abs_k "
                                                               "-> b head kind abs_q abs_k").abs().sum(0).to(acc) * absw
                        del ck
                if absw is None:  # layer l's gradients are done with (GradDrop's passes reuse them)
                    gp.release(l)
        del deltas, gp
        if sink is not None:
            sink.end_batch()
    meta = {
        "version": GRAPH_VERSION,
        "method": method,
        "ig_steps": (ig_steps if method in ("eap-ig", "atp*-ig", "eap-ig-activations")
                     else (2 if method == "clean-corrupted" else None)),
        "graddrop": bool(graddrop),
        "ablation": ablation,
        "metric": met.name,
        "metric_clean_mean": metric_total / n,
        "granularity": granularity,
        "schema_spans": data.span_names,
        "prepend_bos": cb.prepend_bos,
        "model": pm.model_name,
        "task": task,
        "n_examples": n,
        "batch_size": batch_size,
        "position_alignment": "schema spans (offset clipped to span)" if data.span_names and ablation == "counterfactual" else "identity",
        "store": store,
        "sender_deltas": plan["deltas"],  # kept, or remade per receiver layer (memory plan)
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if sink is not None:
        return sink.finish(n, meta)
    assert same is not None and cross is not None
    same_o = (same / n).to(out_dt).cpu() * pm.valid
    cross_o = (cross / n).to(out_dt).cpu() * cross_valid
    return AttributionGraph(list(pm.senders), list(pm.receivers), list(data.positions),
                            same_o, pm.valid.clone(), cross_o, cross_valid, sizes.to(out_dt),
                            pairs.to(out_dt), meta)


# ----------------------------------------------------------------------------------------------
# exact patching (the reference the attribution scores are validated against)
# ----------------------------------------------------------------------------------------------
def _metric_mean(pm: PatchableModel, met: Metric, logits: Tensor, mask: Tensor, clean_logits: Tensor) -> float:
    mb = MetricBatch.from_mask(mask, None, clean_logits if met.needs_clean else None)
    return float(met(logits, mb).mean())


@torch.no_grad()
def exact_node_scores(
    model: Model,
    clean: Any,
    corrupt: Any,
    metric: Any,
    *,
    ablation: Ablation = "counterfactual",
    senders: Sequence[str] | None = None,
    positions: Sequence[int] | None = None,
    schema: Any = None,
) -> Float[Tensor, "pos sender"]:
    """Exact activation patching of sender nodes, one (sender, position) at a time:
    ``M(sender output at p ablated) − M(clean)``, mean over examples (own token coordinates).
    Entries not requested are NaN. Cost: one forward per (sender, position)."""
    pm, data, met, abl, toks = _setup_exact(model, clean, corrupt, metric, ablation, schema)
    mask = data.clean.mask.to(pm.device)
    n, P = toks.shape
    S, R = len(pm.senders), len(pm.receivers)
    base_logits = pm.run(toks, mask)
    base = _metric_mean(pm, met, base_logits, mask, base_logits)
    out = torch.full((P, S), float("nan"))
    sel = list(range(S)) if senders is None else [pm.sender_index[s] for s in senders]
    pos = list(range(P)) if positions is None else [int(p) % P for p in positions]
    keep = torch.ones(n, P, S, R, dtype=torch.bool, device=pm.device)
    for p in pos:
        for s in sel:
            keep[:, p, s, :] = False
            lg = pm.run(toks, mask, ablated=abl, keep=keep)
            keep[:, p, s, :] = True
            out[p, s] = _metric_mean(pm, met, lg, mask, base_logits) - base
    return out


@torch.no_grad()
def exact_edge_score(
    model: Model,
    clean: Any,
    corrupt: Any,
    metric: Any,
    edge: Any,
    *,
    ablation: Ablation = "counterfactual",
    schema: Any = None,
) -> float:
    """Exact patching of one edge (a :class:`~circuits.graph.Edge` at position granularity, or
    a tuple ``(kind, sender, receiver, pos, kpos)`` with integer positions):
    ``M(edge ablated) − M(clean)``, mean over examples."""
    pm, data, met, abl, toks = _setup_exact(model, clean, corrupt, metric, ablation, schema)
    mask = data.clean.mask.to(pm.device)
    n, P = toks.shape
    base_logits = pm.run(toks, mask)
    base = _metric_mean(pm, met, base_logits, mask, base_logits)
    lg = pm.run(toks, mask, ablated=abl, **one_edge_keep(pm, edge, n, P))
    return _metric_mean(pm, met, lg, mask, base_logits) - base


def one_edge_keep(pm: PatchableModel, edge: Any, n: int, n_pos: int) -> dict[str, Tensor]:
    """``keep=`` or ``keep_cross=`` for :meth:`PatchableModel.run` that ablate exactly ``edge``
    (an :class:`~circuits.graph.Edge` at position granularity, or ``(kind, sender, receiver, pos,
    kpos)``) in all ``n`` examples of ``n_pos`` positions."""
    kind, snd, rcv, pos, kpos = edge[:5]
    pos, kpos = int(str(pos).split(":")[0]), int(str(kpos).split(":")[0])
    if kind == "same":
        keep = torch.ones(n, n_pos, len(pm.senders), len(pm.receivers), dtype=torch.bool,
                          device=pm.device)
        keep[:, pos, pm.sender_index[snd], pm.receiver_index[rcv]] = False
        return {"keep": keep}
    l, h = (int(x) for x in snd[1:].split("H"))
    kc = torch.ones(n, pm.n_layers, pm.n_heads, 3, n_pos, n_pos, dtype=torch.bool, device=pm.device)
    kc[:, l, h, "qkv".index(kind), pos, kpos] = False
    return {"keep_cross": kc}
