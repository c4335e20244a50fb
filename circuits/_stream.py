"""Streamed edge attribution: scores computed receiver layer by receiver layer and reduced at once.

The maths is that of :mod:`circuits.attribution` (EAP / EAP-IG, same-position edges
:math:`(z^*_s - z_s)\\cdot\\partial M/\\partial x_r`, crossing edges in closed form). What
differs is *when* things exist. Per batch of examples:

1. the ablation source (sender outputs, q/k/v; no attention patterns) and the clean run's
   sender outputs and q/k/v/z are recorded; the gradients are kept in their compact form
   (per layer: the q/k/v-projection gradients and the residual they normalise, the MLP-input,
   final-norm-input and head-result gradients) — the per-receiver gradient block
   ``[batch pos receivers d_model]`` is never built for all receivers at once;
2. for each layer l: its receivers' input gradients ``[batch pos H+2G+1 d_model]`` are expanded
   (norm closed-form VJP), dotted with the upstream sender deltas in position chunks, and
   reduced to the granularity (``none``: one sum, ``span``: span sums, ``position``: handed to
   a position store); its attention pattern is recomputed from q and k and the crossing edges of
   a chunk of heads are computed and reduced the same way.

Working memory beyond the model's own forward/backward and the recorded activations is one
layer's receiver gradients plus a head chunk of ``[batch pos pos]`` blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from einops import einsum, rearrange, reduce
from jaxtyping import Float
from torch import Tensor

from circuits._forward import Activations, PatchableModel
from interp.heap import release_freed_memory

__all__ = ["GradPoints", "CondensedGradPoints", "eap_grads", "ig_grads", "align_lite",
           "layer_cross_blocks", "acc_dtype_for", "layer_senders", "full_senders", "SenderDeltas",
           "add_point_grads"]


def acc_dtype_for(device: torch.device, dtype: torch.dtype = torch.float64) -> torch.dtype:
    """Accumulation dtype of scores: float64 for float64 models on CPU (the exactness tests),
    float32 otherwise (float32 models; bf16/fp16 models on accelerators accumulate in float32)."""
    return torch.float64 if torch.device(device).type == "cpu" and dtype == torch.float64 else torch.float32


@dataclass
class GradPoints:
    """Compact gradients of one batch: EAP has one point, EAP-IG m interpolation points.

    ``ln1_in[c][l]`` / ``g_qkv[c][l]``: chunk c of points (rows = points · batch) of layer l's
    attention-input residual and q/k/v projection gradients; ``mlp``, ``logits``, ``z``: summed
    over the points (divide by ``m`` for the mean)."""

    ln1_in: list[list[Tensor]]
    g_qkv: list[list[tuple[Tensor, Tensor, Tensor]]]
    mlp: list[Tensor]
    logits: Tensor
    z: list[Tensor]
    m: int
    b: int
    first: Activations | None = None  # EAP-IG ``record_first``: the k = 0 point's activations

    def attn(self, pm: PatchableModel, layer: int) -> Tensor:
        """Mean over the points of layer ``layer``'s attention-receiver input gradients
        ``[b p H+2G d]`` (each point with its own norm Jacobian)."""
        tot = None
        for ln, gq in zip(self.ln1_in, self.g_qkv):
            r = pm.attn_receiver_grads(layer, ln[layer], *gq[layer])
            r = reduce(r, "(point b) ... -> b ...", "sum", b=self.b) if r.shape[0] != self.b else r
            tot = r if tot is None else tot + r
        assert tot is not None
        return tot if self.m == 1 else tot / self.m

    def mean(self, t: Tensor) -> Tensor:
        return t if self.m == 1 else t / self.m

    def release(self, layer: int) -> None:
        """Drop layer ``layer``'s gradients (scored: the streamed loop frees them as it goes)."""
        for ln in self.ln1_in:
            ln[layer] = None  # type: ignore[call-overload]
        for gq in self.g_qkv:
            gq[layer] = None  # type: ignore[call-overload]
        self.mlp[layer] = self.z[layer] = None  # type: ignore[call-overload]


@dataclass
class CondensedGradPoints(GradPoints):
    """EAP-IG's gradient points with the attention-receiver gradients in condensed form
    (:meth:`PatchableModel.condense_attn_grads`): ``ln1_in[c][l]`` as in :class:`GradPoints`,
    ``rg_sum[l]`` the scaled q/k/v gradients summed over all points (``[b p n e]`` each) and
    ``coef[c][l]`` ``[(point b) p H+2G]`` — per point ``d + H + 2G`` numbers per token and layer
    instead of ``d + (H + 2G)·e``; ``g_qkv`` is empty."""

    rg_sum: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)
    coef: list[list[Tensor]] = field(default_factory=list)

    def release(self, layer: int) -> None:
        super().release(layer)
        for c in self.coef:
            c[layer] = None  # type: ignore[call-overload]
        self.rg_sum[layer] = None  # type: ignore[call-overload]

    def attn(self, pm: PatchableModel, layer: int) -> Tensor:
        out = pm.attn_receiver_grads_summed(layer, [ln[layer] for ln in self.ln1_in],
                                            self.rg_sum[layer], [c[layer] for c in self.coef], self.b)
        return out if self.m == 1 else out.div_(self.m)


def _targets(out: dict[str, Any]) -> list[Tensor]:
    return ([t for qkv in out["qkv"] for t in qkv] + out["mlp_in"] + [out["logits_in"]] + out["z"])


def _split(pm: PatchableModel, out: dict[str, Any], grads: Any, b: int) -> tuple[list, list, list, Tensor, list]:
    """(ln1_in per layer, (gq, gk, gv) per layer, mlp grads summed over points, logits, z)."""
    targets = _targets(out)
    g = [torch.zeros_like(t) if gg is None else gg.detach() for t, gg in zip(targets, grads)]
    L = pm.n_layers
    qkv = [tuple(g[3 * l: 3 * l + 3]) for l in range(L)]

    def pts(t: Tensor) -> Tensor:  # sum over the points stacked along the batch axis
        return reduce(t, "(point b) ... -> b ...", "sum", b=b) if t.shape[0] != b else t

    mlp = [pts(t) for t in g[3 * L: 4 * L]]
    logits = pts(g[4 * L])
    z = [pts(t) for t in g[4 * L + 1:]]
    return list(out["ln1_in"]), qkv, mlp, logits, z


def eap_grads(pm: PatchableModel, met: Any, e_clean: Tensor, mask: Tensor, idx: Tensor,
              stop_grad_layer: int | None = None) -> tuple[Activations, GradPoints, float]:
    """One forward + backward on the clean embeddings: clean activations (no patterns), compact
    gradients, and the summed metric (``stop_grad_layer``: GradDrop's pass, see
    :meth:`PatchableModel.forward`)."""
    emb = e_clean.clone().requires_grad_(True)
    b = e_clean.shape[0]
    with torch.enable_grad():
        # no per-head sender outputs ([b p S d]) live during the backward: recomputed from z after
        out = pm.forward(None, mask, embeds=emb, grad_nodes=True, record=True, record_pattern=False,
                         record_heads=False, stop_grad_layer=stop_grad_layer)
        acts = out["activations"].detach()
        from circuits.metrics import MetricBatch

        mb = MetricBatch.from_mask(mask, idx, out["logits"].detach() if met.needs_clean else None)
        mval = met(out["logits"], mb)
        out["logits"] = None  # not held through the backward (the metric's graph keeps what it needs)
        total = float(mval.detach().sum())
        grads = torch.autograd.grad(mval.sum(), _targets(out), allow_unused=True)
    ln1, qkv, mlp, logits, z = _split(pm, out, grads, b)
    del out, grads
    return acts, GradPoints([ln1], [qkv], mlp, logits, z, 1, b), total


def ig_grads(pm: PatchableModel, met: Any, e_clean: Tensor, e_abl: Tensor, mask: Tensor,
             mb_fn: Any, m: int, chunk: int, condense: bool = True,
             record_first: bool = False) -> GradPoints:
    """EAP-IG: gradients at the m interpolated inputs ``e* + k/m (e − e*)``, k = 0 … m−1,
    ``chunk`` points per forward/backward (stacked along the batch axis). ``condense``: keep
    the attention-receiver gradients as :class:`CondensedGradPoints` (not for a q/k norm over
    the whole projection, OLMo-2, which keeps the q/k/v gradients). ``record_first``: also
    record the activations of the k = 0 point — the run on ``e*`` itself (``.first``, no
    per-head sender outputs and no patterns; when ``e*`` is a counterfactual's own embedding,
    that run *is* the counterfactual run)."""
    b = e_clean.shape[0]
    condense = condense and pm.qk_norm != "proj"
    alphas = torch.arange(m, device=e_clean.device, dtype=e_clean.dtype) / m
    ln_all: list[list[Tensor]] = []
    qkv_all: list[list[tuple[Tensor, Tensor, Tensor]]] = []
    coef_all: list[list[Tensor]] = []
    rg_sum: list[tuple[Tensor, Tensor, Tensor]] = []
    mlp = logits = z = None
    first: Activations | None = None
    for k0 in range(0, m, chunk):
        a = alphas[k0: min(m, k0 + chunk)]
        mc = a.shape[0]
        emb = e_abl + rearrange(a, "point -> point 1 1 1") * (e_clean - e_abl)
        emb = rearrange(emb, "point b p d_model -> (point b) p d_model").detach().requires_grad_(True)
        mask_m = mask.repeat(mc, 1)
        rec = record_first and k0 == 0
        with torch.enable_grad():
            o = pm.forward(None, mask_m, embeds=emb, grad_nodes=True, record=rec,
                           record_pattern=False, record_heads=False)
            mval = met(o["logits"], mb_fn(mc))
            o["logits"] = None  # not held through the backward
            gk = torch.autograd.grad(mval.sum(), _targets(o), allow_unused=True)
        if rec:
            first = o["activations"].detach()
            if mc > 1:  # the k = 0 point: the first b rows
                first = first._map(lambda _n, t: t[:b])
        ln1, qkv, mlp_c, logits_c, z_c = _split(pm, o, gk, b)
        ln_all.append(ln1)
        fwd_qkv = [tuple(t.detach() for t in t3) for t3 in o["qkv"]] if condense else []
        del o, gk  # the logits and the rest of the forward's outputs
        if condense:
            coefs = []
            for l in range(pm.n_layers):
                rg, cf = pm.condense_attn_grads(l, ln1[l], fwd_qkv[l], qkv[l])  # type: ignore[arg-type]
                fwd_qkv[l] = qkv[l] = ()  # freed layer by layer
                rg = tuple(reduce(t, "(point b) ... -> b ...", "sum", b=b) for t in rg)
                if len(rg_sum) <= l:
                    rg_sum.append(rg)  # type: ignore[arg-type]
                else:
                    rg_sum[l] = tuple(x.add_(y) for x, y in zip(rg_sum[l], rg))  # type: ignore[assignment]
                coefs.append(cf)
            coef_all.append(coefs)
        else:
            qkv_all.append(qkv)
        del qkv, fwd_qkv
        mlp, logits, z = add_point_grads((mlp, logits, z), (mlp_c, logits_c, z_c))
        if e_clean.device.type == "cpu":
            # the pass's small temporaries are freed below the points' kept gradients: hand the
            # pages back before the next pass, or the heap grows by a pass's worth per point
            release_freed_memory()
    assert mlp is not None and logits is not None and z is not None
    if condense:
        return CondensedGradPoints(ln_all, [], mlp, logits, z, m, b, first, rg_sum=rg_sum, coef=coef_all)
    return GradPoints(ln_all, qkv_all, mlp, logits, z, m, b, first)


def add_point_grads(acc: tuple[Any, Any, Any], new: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
    """Running sum over gradient points of ``(mlp [per layer], logits, z [per layer])``; ``acc``
    of ``None`` s starts the sum with ``new``."""
    if acc[0] is None:
        return new
    return ([x + y for x, y in zip(acc[0], new[0])], acc[1] + new[1], [x + y for x, y in zip(acc[2], new[2])])


def _head_outputs(pm: PatchableModel, layer: int, z: Tensor) -> Tensor:
    """Head sender outputs ``[b p H d]`` of layer ``layer`` from its head results ``z``, exactly
    as :meth:`PatchableModel.forward` computes them (sandwich / post-norm: shares of the
    normalised sum, :func:`circuits._gemma.head_shares`)."""
    from circuits._gemma import head_shares

    W = pm.layers[layer]
    out = einsum(z, W.W_O, "b query head d_head, head d_head d_model -> b query head d_model")
    if W.post_attn_w is not None:
        out, _ = head_shares(out, W.b_O, W.post_attn_w, pm.eps, pm.norm_offset)
    return out


def layer_senders(pm: PatchableModel, acts: Activations, layer: int,
                  rows: slice = slice(None)) -> tuple[Tensor, Tensor]:
    """(head outputs ``[b r H d]``, MLP output ``[b r d]``) of one layer of a recording at
    positions ``rows``: read off ``senders`` where the run recorded head outputs, else the head
    outputs made from ``z`` (``record_heads=False``: ``senders`` = embed and MLP outputs)."""
    ss = pm.sender_slice(layer)
    if acts.senders.shape[2] == len(pm.senders):
        return acts.senders[:, rows, ss.start: ss.stop - 1], acts.senders[:, rows, ss.stop - 1]
    return _head_outputs(pm, layer, acts.z[:, layer, rows]), acts.senders[:, rows, 1 + layer]


def full_senders(pm: PatchableModel, acts: Activations) -> Tensor:
    """Sender outputs ``[b p S d]`` of activations recorded with ``record_heads=False``
    (``senders`` = embed and MLP outputs): head outputs recomputed from ``z`` layer by layer."""
    S = len(pm.senders)
    if acts.senders.shape[2] == S:
        return acts.senders
    b, p, _, d = acts.senders.shape
    out = acts.senders.new_empty(b, p, S, d)
    out[:, :, 0] = acts.senders[:, :, 0]
    for l in range(pm.n_layers):
        ss = pm.sender_slice(l)
        out[:, :, ss.start: ss.stop - 1], out[:, :, ss.stop - 1] = layer_senders(pm, acts, l)
    return out


class SenderDeltas:
    """Sender deltas ``z*_s − z_s`` (``[b p S d]`` in all; ``abl`` None: zero ablation, ``−z``),
    made one sender layer at a time when the streamed scoring first reads them.

    Receiver layer l reads the senders upstream of it: the embedding, layers < l and (unless
    the block is parallel) layer l's heads. Scoring bottom-up, the deltas of layers ≤ l exist
    while the gradients of layers ≥ l are still held (each layer's are freed once scored), so
    the two are never all live together — at the logits receiver, the last, every delta is
    held but only the final residual's gradient. ``keep=False`` holds none: each receiver
    layer remakes its senders' deltas, one sender layer and position chunk at a time
    (``L²/2`` head-output projections instead of ``L``; for models and lengths whose
    ``[T S d]`` deltas do not fit, :func:`circuits.memory.plan_attribution`). Head outputs come
    from ``z`` where a run recorded none (``record_heads=False``, :func:`_head_outputs`),
    exactly as the forward makes them; chunk 0 is the embedding ``[b p 1 d]``, chunk 1 + l
    layer l's heads and MLP ``[b p H+1 d]`` (the order of ``pm.senders``)."""

    def __init__(self, pm: PatchableModel, clean: Activations, abl: Activations | None,
                 keep: bool = True) -> None:
        self.pm, self.clean, self.abl, self.keep = pm, clean, abl, keep
        self.chunks: list[Tensor] = []
        self.dtype = clean.senders.dtype

    def _make(self, j: int, rows: slice) -> Tensor:
        c, a = self.clean, self.abl
        if j == 0:
            e = c.senders[:, rows, :1]
            return e.neg() if a is None else torch.sub(a.senders[:, rows, :1], e)
        l = j - 1
        hc, mc = layer_senders(self.pm, c, l, rows)
        b, p, H, d = hc.shape
        out = hc.new_empty(b, p, H + 1, d)
        if a is None:
            torch.neg(hc, out=out[:, :, :H])
            torch.neg(mc, out=out[:, :, H])
        else:
            ha, ma = layer_senders(self.pm, a, l, rows)
            out[:, :, :H] = ha - hc  # an ablation of batch 1 (mean) broadcasts
            out[:, :, H] = ma - mc
        return out

    def pieces(self, n_send: int, c0: int, c1: int):
        """``(chunk [b c1−c0 n d], s0, s1)``: the deltas at positions ``c0 … c1`` of the sender
        chunks covering senders ``0 … n_send`` (made as needed), each with the sender range
        it supplies."""
        for j in range(self.pm.n_layers + 1):
            s0 = 0 if j == 0 else self.pm.sender_slice(j - 1).start
            if s0 >= n_send:
                return
            if not self.keep:
                ch = self._make(j, slice(c0, c1))
            else:
                if j == len(self.chunks):
                    self.chunks.append(self._make(j, slice(None)))
                ch = self.chunks[j][:, c0:c1]
            yield ch, s0, min(n_send, s0 + ch.shape[2])
            del ch

    def dot(self, grads: Float[Tensor, "batch pos receiver d_model"], c0: int, c1: int,
            n_send: int) -> Float[Tensor, "batch chunk sender receiver"]:
        """``block[b, t, s, r] = delta[b, c0 + t, s] · grads[b, c0 + t, r]`` for senders ``< n_send``
        (one batched product per sender chunk)."""
        b = grads.shape[0]
        Gr = rearrange(grads[:, c0:c1], "b pos receiver d_model -> (b pos) d_model receiver")
        out = Gr.new_empty(Gr.shape[0], n_send, Gr.shape[2])
        for ch, s0, s1 in self.pieces(n_send, c0, c1):
            Dr = rearrange(ch[:, :, : s1 - s0], "b pos sender d_model -> (b pos) sender d_model")
            out[:, s0:s1] = torch.bmm(Dr, Gr)
        return rearrange(out, "(b pos) sender receiver -> b pos sender receiver", b=b)

    def dense(self, c0: int, c1: int, n_send: int) -> Float[Tensor, "batch chunk sender d_model"]:
        """The deltas of senders ``< n_send`` at positions ``c0 … c1`` as one tensor (a copy)."""
        return torch.cat([ch[:, :, : s1 - s0] for ch, s0, s1 in self.pieces(n_send, c0, c1)], dim=2)


def align_lite(a: Activations, position_map: Tensor) -> Activations:
    """:meth:`Activations.align` for activations recorded without patterns."""
    b, p = position_map.shape
    pmap = position_map.to(a.senders.device).long()
    if a.batch == b and a.n_pos == p and torch.equal(pmap, torch.arange(p, device=pmap.device).expand(b, p)):
        return a  # identity alignment (same-length counterfactuals): nothing to gather
    src = a if a.batch == b else a._map(lambda _n, t: t.expand(b, *t.shape[1:]))

    def g(name: str, t: Tensor) -> Tensor:
        if name == "attention_mask":
            return torch.gather(t, 1, pmap)
        if name == "pattern":
            return t.new_zeros(b, *t.shape[1:3], 0, 0)
        if name == "senders":
            return torch.gather(t, 1, pmap[:, :, None, None].expand(b, p, *t.shape[2:]))
        return torch.gather(t, 2, pmap[:, None, :, None, None].expand(b, t.shape[1], p, *t.shape[3:]))

    return src._map(g)


def _softmax_shift(a: Tensor, delta: Tensor, consume: bool = False) -> Tensor:
    """c = a(e^δ−1)/(1+a(e^δ−1)): the weight moved onto v_{t'} − z_t when one attention score
    moves by δ (re-normalising the softmax row), in the dtype of ``a`` (float64 or float32).
    δ is clamped (±700 in float64, ±80 in float32) so e^δ is
    finite and c is exactly 0 where a = 0; where δ > 30 and a > 0 the stable form
    sigmoid(log a + δ + log(1 − e^−δ)) is used (on those entries only). ``consume=True``
    computes in the buffer of ``delta`` (which is overwritten) — one temporary in all."""
    lim = 700.0 if a.dtype == torch.float64 else 80.0
    d = delta.clamp_(-lim, lim) if consume else delta.clamp(-lim, lim)
    big = d > 30
    fix = None
    if bool(big.any()):
        big &= a > 0
        ab, db = a[big], d[big]
        tiny = 1e-300 if a.dtype == torch.float64 else 1e-38
        fix = torch.sigmoid(torch.log(ab.clamp(min=tiny)) + db + torch.log(-torch.expm1(-db)))
    c = torch.expm1(d, out=d) if consume else torch.expm1(d)
    c = c.mul_(a)  # u = a(e^δ − 1)
    c = c.div_(c + 1)
    if fix is not None:
        c[big] = fix
    return c


def _first_difference(q: Tensor, k: Tensor, v: Tensor, qa: Tensor, ka: Tensor, va: Tensor) -> int:
    """The first position at which the clean and ablated q, k or v of one layer differ in any
    example (``p`` if none does)."""
    diff = None
    for c, a in ((q, qa), (k, ka), (v, va)):
        d = (c != a).flatten(2).any(-1)  # [b p] (an ablation of batch 1 broadcasts)
        diff = d if diff is None else diff | d
    assert diff is not None
    nz = torch.nonzero(diff.any(0))
    return int(nz[0, 0]) if nz.numel() else q.shape[1]


def layer_cross_blocks(pm: PatchableModel, layer: int, q: Tensor, k: Tensor, v: Tensor, z: Tensor,
                       qa: Tensor, ka: Tensor, va: Tensor, gz: Tensor, mask: Tensor,
                       heads: int, dtype: torch.dtype):
    """Crossing-edge scores of one layer, ``heads`` query heads at a time: yields
    ``(h0, h1, block [b h 3 qpos kpos])`` (kinds q, k, v; zero where the key is after the query or
    either is padding). Inputs are one layer's ``[b p n e]`` clean/ablated q/k/v, clean z and the
    gradient at z; the pattern is recomputed (:meth:`PatchableModel.attention_pattern`).

    Shared prefix: before the first position p₀ where the clean and ablated q/k/v differ
    (a counterfactual that shares its first tokens, BOS at least), every kind is exactly 0 in
    rows t < p₀ (every key is ≤ t < p₀: no score or value moves), and the k and v kinds are
    exactly 0 at keys t' < p₀ (the full computation gives exact zeros there too); only rows
    p₀ … and (k, v) keys p₀ … are computed. The yielded block is one buffer reused across head
    chunks (consume it before the next)."""
    H, G = pm.n_heads, pm.n_kv_heads
    rep = H // G
    b, p = q.shape[:2]
    p0 = _first_difference(q, k, v, qa, ka, va)
    out_all = torch.zeros(b, min(heads, H), 3, p, p, dtype=dtype, device=q.device)  # kinds q, k, v
    if p0 >= p:  # clean and ablated agree everywhere in this layer: no crossing edge moves
        for h0 in range(0, H, heads):
            yield h0, min(H, h0 + heads), out_all[:, : min(H, h0 + heads) - h0]
        return
    A_all = pm.attention_pattern(layer, q[:, p0:], k, mask, q_offset=p0)  # [b H p-p0 p]
    m = mask.bool()
    pad_rows = None if bool(m.all()) else m[:, None, None, p0:, None].to(dtype)  # [b 1 1 q 1]

    def kvh(t: Tensor, h0: int, h1: int) -> Tensor:  # [b p G e] -> heads h0..h1 [b p h e]
        idx = torch.arange(h0, h1, device=t.device) // rep
        return t.expand(b, *t.shape[1:])[:, :, idx].to(dtype)

    for h0 in range(0, H, heads):
        h1 = min(H, h0 + heads)
        # query rows p0 … only
        qh, zh, g = (t[:, p0:, h0:h1].to(dtype) for t in (q, z, gz))
        qah = qa.expand(b, *qa.shape[1:])[:, p0:, h0:h1].to(dtype)
        kh, vh, kah, vah = kvh(k, h0, h1), kvh(v, h0, h1), kvh(ka, h0, h1), kvh(va, h0, h1)
        A = A_all[:, h0:h1].to(dtype)  # [b h r p], r = p − p0 rows
        qk = "b query head d_head, b key head d_head -> b head query key"
        out = out_all[:, : h1 - h0]
        Gv = einsum(g, vh, qk)  # [b h r p]
        torch.mul(A[..., p0:], einsum(g, vah[:, p0:], qk).sub_(Gv[..., p0:]), out=out[:, :, 2, p0:, p0:])
        # the weight moved onto v_t' − z_t: g_t·v_t' − g_t·z_t
        move = Gv.sub_(einsum(g, zh, "b query head d_head, b query head d_head -> b head query")[..., None])
        dkey = (kah - kh)[:, p0:]
        if getattr(pm, "attn_softcap", None) is None:
            dk = einsum(qh, dkey, qk).mul_(pm.scale)
            dq = einsum(qah - qh, kh, qk).mul_(pm.scale)
        else:  # soft-capped scores (Gemma 2): the move of the capped score, pm.score(q·k)
            s0 = pm.score(einsum(qh, kh, qk), inplace=True)
            dk = pm.score(einsum(qh, kah[:, p0:], qk), inplace=True).sub_(s0[..., p0:])
            dq = pm.score(einsum(qah, kh, qk), inplace=True).sub_(s0)
            del s0
        torch.mul(_softmax_shift(A[..., p0:], dk, consume=True), move[..., p0:], out=out[:, :, 1, p0:, p0:])
        del dk, dkey
        torch.mul(_softmax_shift(A, dq, consume=True), move, out=out[:, :, 0, p0:, :])
        del dq, move, A
        # the pattern is exactly 0 at keys after the query or at padding keys, and so is every
        # kind there (c = 0 where A = 0); only the rows of padding queries need zeroing
        if pad_rows is not None:
            out[:, :, :, p0:].mul_(pad_rows)
        yield h0, h1, out
