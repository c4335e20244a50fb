"""Attribution methods beyond EAP / EAP-IG, dispatched from :func:`circuits.attribute`.

Every method scores the same position-aware graph (same-position and crossing edges, positions,
spans or none; GQA) and goes through the same streamed loop of :mod:`circuits.attribution`;
only the gradient points or the per-edge formula differ. For an edge u → v with sender delta
:math:`\\delta_u = z^*_u - z_u`:

* ``"eap"`` (Syed et al. 2023, arXiv 2310.10348): :math:`\\delta_u\\cdot\\nabla_v M` at the clean run.
* ``"eap-ig"`` (Hanna, Pezzelle, Belinkov 2024, arXiv 2403.17806; MIB's *EAP-IG-inputs*): the
  gradient averaged over m input embeddings :math:`e^* + \\tfrac{k}{m}(e - e^*)`.
* ``"clean-corrupted"`` (MIB, Mueller et al. 2025, arXiv 2504.13151): the gradient averaged over
  the clean and the corrupted (ablated) input,
  :math:`\\delta_u\\cdot\\tfrac12(\\nabla_v M|_{e} + \\nabla_v M|_{e^*})` — EAP at clean plus EAP
  with the gradients of the corrupt point, halved. Crossing edges use the averaged
  :math:`\\partial M/\\partial z` in their closed form. The corrupt point is the ablated input
  embedding in clean coordinates (the counterfactual aligned span by span; the mean; zero).
* ``"atp*"`` (Kramár et al. 2024, arXiv 2403.00745): EAP with the QK fix for query/key receivers
  (:mod:`circuits._atp`). ``graddrop=True`` adds their second fix, GradDrop (against cancellation
  between paths): L backward passes, pass ℓ with the gradient through layer ℓ's outputs (heads
  and MLP, where they enter the residual stream) zeroed, each giving AtP* scores
  :math:`\\hat c_{\\ell}(e)` per example; the score is
  :math:`\\hat c_{GD}(e) = \\frac{1}{L-1}\\sum_{\\ell=1}^{L}|\\hat c_{\\ell}(e)|` (a magnitude: GradDrop
  scores are ≥ 0; an edge into layer ℓ's receivers gets 0 from pass ℓ, hence L − 1), averaged
  over examples per abstract edge (the absolute value is taken per example, after summing the
  concrete edges of a span).
* ``"eap-ig-activations"`` (MIB, Mueller et al. 2025, arXiv 2504.13151; the reference
  implementation of Hanna et al.'s EAP-IG library): instead of the input embeddings, the *output
  of one component at a time* is interpolated — the component list is the input embedding and,
  per layer, the attention layer (all its heads) and the MLP. For component c and
  :math:`\\alpha_k = k/m`, k = 1 … m, the clean forward is run with c's output replaced by the
  constant :math:`z^*_c + \\alpha_k (z_c - z^*_c)` (no gradient flows through it; everything
  downstream is recomputed), and the receiver gradients of all (2L+1)·m runs are averaged:
  :math:`g(u\\to v) = \\delta_u\\cdot\\frac{1}{(2L+1)m}\\sum_c\\sum_k \\nabla_v M|_{c,\\alpha_k}`.
  Crossing edges use the averaged :math:`\\partial M/\\partial z` in their closed form. Cost:
  (2L+1)·m forward + backward passes.
* ``"atp*-ig"`` (this package, not a published method): the QK fix with EAP-IG's interpolated
  gradient at z (and EAP-IG scores for every other receiver). On trained toy-induction it ranks
  nodes / edges like exact patching at 0.93 / 0.89 where AtP* reaches 0.71 / 0.61 (BENCHMARKS.md).
* ``"exact"``: every abstract edge patched exactly (:mod:`circuits._exact`).

"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange, reduce
from torch import Tensor

from circuits._activations import Activations
from circuits._forward import PatchableModel
from circuits._stream import GradPoints, add_point_grads, ig_grads
from circuits.metrics import Metric, MetricBatch
from circuits.registry import METHODS  # re-exported: the one list

__all__ = ["METHODS", "method_ablation_check", "add_corrupt_point", "exact_attribute",
           "activation_ig_grads", "components"]


def method_ablation_check(method: str, ablation: str) -> None:
    """Warn where a method's corrupt point is off-distribution."""
    if method == "clean-corrupted" and ablation == "zero":
        warnings.warn("clean-corrupted with zero ablation takes gradients at an all-zero input "
                      "embedding, where RMSNorm/LayerNorm are singular; prefer mean or "
                      "counterfactual ablation", stacklevel=3)


def add_corrupt_point(pm: PatchableModel, met: Metric, gp: GradPoints, e_clean: Tensor,
                      abl: Activations | None, mask: Tensor, idx: Tensor) -> GradPoints:
    """The clean point's gradients ``gp`` plus those at the ablated input embedding (same
    metric targets): a two-point :class:`GradPoints` whose mean is the clean-corrupted gradient."""
    e_abl = (abl.senders[:, :, 0] if abl is not None else torch.zeros_like(e_clean)).expand_as(e_clean)
    clean_logits = None
    if met.needs_clean:
        with torch.no_grad():
            clean_logits = pm.forward(None, mask, embeds=e_clean)["logits"]

    def mb_fn(mc: int) -> MetricBatch:
        return MetricBatch.from_mask(mask.repeat(mc, 1), idx.repeat(mc),
                                     None if clean_logits is None else clean_logits.repeat(mc, 1, 1))

    gc = ig_grads(pm, met, e_clean, e_abl.contiguous(), mask, mb_fn, 1, 1, condense=False)  # k = 0: e*
    return GradPoints(gp.ln1_in + gc.ln1_in, gp.g_qkv + gc.g_qkv,
                      [a + b for a, b in zip(gp.mlp, gc.mlp)], gp.logits + gc.logits,
                      [a + b for a, b in zip(gp.z, gc.z)], 2, gp.b)


def components(pm: PatchableModel) -> list[tuple[str, int]]:
    """MIB's EAP-IG-activations component list: the input, then per layer attention and MLP."""
    return [("embed", -1)] + [(kind, l) for l in range(pm.n_layers) for kind in ("attn", "mlp")]


@dataclass
class _SummedGradPoints(GradPoints):
    """GradPoints whose attention-receiver gradients are already summed over the points
    (``attn_sum[l]`` ``[b p H+2G d]``): the runs' residuals differ, so each point's norm
    Jacobian is applied before summing, and nothing per point is kept."""

    attn_sum: list[Tensor] = field(default_factory=list)

    def attn(self, pm: PatchableModel, layer: int) -> Tensor:
        return self.attn_sum[layer] / self.m

    def release(self, layer: int) -> None:
        super().release(layer)
        self.attn_sum[layer] = None  # type: ignore[call-overload]


def activation_ig_grads(pm: PatchableModel, met: Metric, e_clean: Tensor, e_abl: Tensor,
                        clean_senders: Tensor, abl_senders: Tensor, mask: Tensor, mb_fn: Any,
                        m: int, chunk: int) -> GradPoints:
    """EAP-IG-activations (module docstring): receiver gradients summed over the (2L+1)·m runs,
    each with one component's output replaced by :math:`z^*_c + \tfrac{k}{m}(z_c - z^*_c)`,
    k = 1 … m (``chunk`` values of k stacked along the batch axis per forward/backward)."""
    from circuits._stream import _split, _targets

    b = e_clean.shape[0]
    L = pm.n_layers
    abl_s = abl_senders.expand_as(clean_senders)
    alphas = torch.arange(1, m + 1, device=e_clean.device, dtype=e_clean.dtype) / m
    attn_sum: list[Tensor | None] = [None] * L
    mlp = logits = z = None
    n_runs = 0
    for kind, l in components(pm):
        if kind == "attn":
            ss = pm.sender_slice(l)
            sl = slice(ss.start, ss.stop - 1)
        elif kind == "mlp":
            sl = pm.sender_slice(l).stop - 1
        for k0 in range(0, m, chunk):
            a = alphas[k0: min(m, k0 + chunk)]
            mc = a.shape[0]
            aa = rearrange(a, "point -> point 1 1 1" + (" 1" if kind == "attn" else ""))  # [point b p (n) d]
            if kind == "embed":
                emb = e_abl + rearrange(a, "point -> point 1 1 1") * (e_clean - e_abl)
                emb = rearrange(emb, "point b p d_model -> (point b) p d_model")
                rep = None
            else:
                c, x = clean_senders[:, :, sl], abl_s[:, :, sl]
                val = rearrange(x + aa * (c - x), "point b ... -> (point b) ...").detach()
                emb = e_clean.repeat(mc, 1, 1)
                rep = {(kind, l): val}
            emb = emb.detach().requires_grad_(True)
            with torch.enable_grad():
                o = pm.forward(None, mask.repeat(mc, 1), embeds=emb, grad_nodes=True, replace=rep)
                mval = met(o["logits"], mb_fn(mc))
                gk = torch.autograd.grad(mval.sum(), _targets(o), allow_unused=True)
            ln1, qkv, mlp_c, logits_c, z_c = _split(pm, o, gk, b)
            del o, gk
            for li in range(L):
                r = pm.attn_receiver_grads(li, ln1[li], *qkv[li])
                r = reduce(r, "(point b) ... -> b ...", "sum", b=b) if r.shape[0] != b else r
                attn_sum[li] = r if attn_sum[li] is None else attn_sum[li] + r
            mlp, logits, z = add_point_grads((mlp, logits, z), (mlp_c, logits_c, z_c))
            n_runs += mc
    assert mlp is not None and logits is not None and z is not None
    return _SummedGradPoints([], [], mlp, logits, z, n_runs, b,
                             attn_sum=[t for t in attn_sum if t is not None])


def _ablation_source(pm: PatchableModel, data: Any, ablation: str) -> Activations:
    from circuits._inputs import _fit_width, _mean_activations, _realign_rope

    cb = data.clean
    toks, mask = cb.tokens.to(pm.device), cb.mask.to(pm.device)
    if ablation == "counterfactual":
        xb = data.corrupt
        src = data.position_map.to(pm.device)
        return _realign_rope(pm, pm.activations(xb.tokens.to(pm.device), xb.mask.to(pm.device)).align(src), src)
    if ablation == "mean":
        return _fit_width(_mean_activations(pm, data.corrupt if data.corrupt is not None else cb, 64),
                          toks.shape[1])
    return pm.activations(toks, mask).zeros_like()


def exact_attribute(pm: PatchableModel, met: Metric, data: Any, *, ablation: str, sizes: Tensor,
                    pairs: Tensor, cross_valid: Tensor, out_dt: torch.dtype, max_edges: int,
                    progress: bool, meta_extra: dict[str, Any]) -> Any:
    """``attribute(method="exact")``: an :class:`~circuits.graph.AttributionGraph` whose scores
    are exact patching of each abstract edge (see :mod:`circuits._exact`)."""
    from circuits._exact import exact_graph
    from circuits.graph import GRAPH_VERSION, AttributionGraph

    cb = data.clean
    abl = _ablation_source(pm, data, ablation)
    toks = cb.tokens.to(pm.device)
    same, cross = exact_graph(pm, met, data, abl, toks, max_edges=max_edges, progress=progress)
    with torch.no_grad():
        lg = pm.run(toks, cb.mask.to(pm.device))
        mclean = float(met(lg, MetricBatch.from_mask(cb.mask.to(pm.device), None,
                                                      lg if met.needs_clean else None)).mean())
    meta = {
        "version": GRAPH_VERSION, "method": "exact", "ig_steps": None, "ablation": ablation,
        "metric": met.name, "metric_clean_mean": mclean, "granularity": data.granularity,
        "schema_spans": data.span_names, "prepend_bos": cb.prepend_bos,
        "model": pm.model_name, "task": meta_extra.get("task"),
        "n_examples": int(cb.tokens.shape[0]), "batch_size": None,
        "position_alignment": ("schema spans (offset clipped to span)"
                               if data.span_names and ablation == "counterfactual" else "identity"),
        "store": "dense", "seconds": round(time.perf_counter() - meta_extra.get("t0", time.perf_counter()), 3),
    }
    if data.granularity == "none":
        cross_valid = torch.ones(1, 1, dtype=torch.bool)
    same_o = same.to(out_dt) * pm.valid.cpu()
    cross_o = cross.to(out_dt) * cross_valid
    return AttributionGraph(list(pm.senders), list(pm.receivers), list(data.positions), same_o,
                            pm.valid.clone().cpu(), cross_o, cross_valid, sizes.to(out_dt),
                            pairs.to(out_dt), meta)
