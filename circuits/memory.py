"""Memory estimate of streamed attribution, and the plan (batch size, store) that fits a budget.

:func:`estimate_memory` counts, from the model's shapes alone, the bytes each part of one batch
of :func:`circuits.attribute` holds at its peak (beyond the model's weights):

* ``forward_backward``: what autograd saves in one forward + backward of the patchable model
  (per layer and token: the q/k/v/rotary/z activations and the MLP activations, plus the
  attention row ``H·T`` where the attention runs eagerly; EAP-IG: times the interpolation points
  run together);
* ``activations``: the recorded clean run (embedding and MLP outputs ``(1+L)·d`` plus per-layer
  q/k/v/z; head outputs are recomputed from z) and ``ablation``: the counterfactual ablation
  source, recorded the same way (no patterns);
* ``gradients``: the compact gradients (per layer: the residual and q/k/v gradients — EAP-IG:
  per point the residual and one scalar per attention receiver, the scaled q/k/v gradients
  summed over the points —; MLP-input and head-result gradients);
* ``layer_work``: one layer's receiver gradients ``[b T H+2G+1 d]``, its recomputed attention
  pattern and the chunked score blocks;
* ``output``: the scores (dense ``[P S R]`` + ``[L H 3 P P]`` at position granularity, k
  edges for top-k, ...); ``graph``: a dense position graph's own float32 tensors (0 otherwise);
* ``passes``: the phase with the forward/backward live (plus the gradients kept so far and
  what is recorded during it); ``scoring``: the phase scoring layer by layer (both recordings,
  the sender deltas made so far and the gradients not yet freed, one layer's work).

``peak`` = max(passes, scoring) + output.
Constants were calibrated against measured peak RSS on SmolLM2-135M (BENCHMARKS.md,
``benchmarks/bench_attribution_scaling.py``).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from circuits._stream import acc_dtype_for
from interp.types import Model

__all__ = ["estimate_memory", "estimate_faithfulness_memory", "fit_faithfulness_batch", "plan_attribution", "default_ig_chunk", "ig_records_first", "parse_bytes", "format_bytes", "shapes_from_config"]

WORK_BYTES = 256 * 2**20  # chunk budget of the per-layer score blocks


def parse_bytes(x: int | float | str | None) -> int | None:
    """``8e9``, ``"8GB"``, ``"8GiB"``, ``"512MiB"`` → bytes (None stays None)."""
    if x is None:
        return None
    if isinstance(x, (int, float)):
        return int(x)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?)B?\s*", str(x), flags=re.I)
    if not m:
        raise ValueError(f"cannot read a memory size from {x!r}: use bytes or e.g. '8GiB', '512MB'")
    mult = {"": 1, "K": 1, "M": 2, "G": 3, "T": 4}[m.group(2).upper()]
    base = 1024 if (m.group(3) or not m.group(2)) else 1000
    if not m.group(3) and m.group(2):
        base = 1000
    return int(float(m.group(1)) * base ** mult)


def format_bytes(n: int | float) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def shapes_from_config(cfg: dict[str, Any], *, dtype_bytes: int = 2, device: str = "cuda") -> dict[str, Any]:
    """Shape dict for :func:`estimate_memory` from an HF-style config (``num_hidden_layers``,
    ``num_attention_heads``, ``num_key_value_heads``, ``hidden_size``, ``head_dim``,
    ``intermediate_size``, ``vocab_size``; ``n_params``) — for models not loaded here."""
    L, H = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    G = int(cfg.get("num_key_value_heads") or H)
    d = int(cfg["hidden_size"])
    e = int(cfg.get("head_dim") or d // H)
    return dict(L=L, H=H, G=G, d=d, e=e, m=int(cfg["intermediate_size"]), S=1 + L * (H + 1),
                R=L * (H + 2 * G + 1) + 1, elem=dtype_bytes, vocab=int(cfg["vocab_size"]),
                weights=int(cfg.get("n_params", 0)) * dtype_bytes,
                acc=acc_dtype_for(torch.device(device), torch.float64 if dtype_bytes == 8 else torch.float32).itemsize,
                softcap=cfg.get("attn_logit_softcapping") is not None)


def _shapes(model: Any) -> dict[str, Any]:
    if isinstance(model, dict):
        return model
    from circuits._inputs import patchable

    pm = patchable(model)
    W = pm.layers[0]
    d_mlp = int(W.W_in.shape[1])
    elem = pm.dtype.itemsize if hasattr(pm.dtype, "itemsize") else 4
    n_params = sum(p.numel() for p in pm.hf.parameters())
    return dict(L=pm.n_layers, H=pm.n_heads, G=pm.n_kv_heads, d=pm.d_model, e=pm.d_head,
                m=d_mlp, S=len(pm.senders), R=len(pm.receivers), elem=elem,
                vocab=int(pm.W_U.shape[1]), weights=n_params * elem,
                acc=acc_dtype_for(pm.device, pm.dtype).itemsize, softcap=pm.attn_softcap is not None)


def estimate_memory(model: Model, n_tokens: int, batch_size: int = 1, *,
                    granularity: str = "position", method: str = "eap", ig_steps: int = 5,
                    ig_chunk: int | None = None, store: str = "dense", k: int | None = None,
                    n_positions: int | None = None, attention: str = "auto",
                    deltas: str = "keep") -> dict[str, int]:
    """Bytes per part of one attribution batch (see the module docstring); ``"peak"`` is the
    predicted peak beyond the weights, ``"weights"`` the model's own. ``model``: a bridge, a
    PatchableModel, or a shape dict (:func:`shapes_from_config`).

    ``n_positions``: abstract positions of the output (default ``n_tokens`` at position
    granularity, 8 spans at span granularity, 1 for none). ``attention``: ``"sdpa"`` — the
    attributed forward runs fused attention whose backward keeps no ``[H T T]`` patterns (what
    :meth:`PatchableModel.forward` does when no pattern is recorded), ``"eager"`` — it keeps
    them (soft-capped scores, Gemma 2), ``"auto"`` (default) — whichever the model gets.
    ``deltas``: ``"keep"`` (default) — the sender deltas, once made, are kept for the later
    receiver layers; ``"recompute"`` — each receiver layer remakes them one sender layer at a
    time (:class:`circuits._stream.SenderDeltas`, ``keep=False``)."""
    s = _shapes(model)
    L, H, G, d, e, m, S, R = (s[x] for x in ("L", "H", "G", "d", "e", "m", "S", "R"))
    el, acc = s["elem"], s["acc"]
    b, T = int(batch_size), int(n_tokens)
    bt = b * T
    if ig_chunk is None:  # the default of plan_attribution
        ig_chunk = default_ig_chunk(model, n_tokens, batch_size, granularity=granularity,
                                    ig_steps=ig_steps, store=store, k=k, n_positions=n_positions,
                                    attention=attention) if method != "eap" else 1
    pts = 1 if method == "eap" else max(1, min(int(ig_chunk), int(ig_steps)))
    # autograd-saved activations per token and layer (linear) + the attention rows
    lin = 2 * d + 2 * (H + 2 * G) * e + 3 * m  # calibrated on SmolLM2 (fused attention), BENCHMARKS.md
    if attention == "auto":
        attention = "eager" if s.get("softcap") else "sdpa"
    rows = H * T * el if attention == "eager" else 0
    fwd_bwd = pts * (bt * L * (lin * el + rows) + bt * s["vocab"] * el)
    acts = bt * ((1 + L) * d + L * (2 * H + 2 * G) * e) * el  # q, k, v, z; no per-head sender outputs (made from z)
    # the ablation source likewise (a counterfactual's; a mean ablation's has head outputs)
    abl = acts
    if method == "eap":  # per layer: the q/k/v gradients and the residual they normalise
        g_layer = bt * ((d + (H + 2 * G) * e) + d + H * e) * el
    else:  # EAP-IG condensed (_stream.CondensedGradPoints): per point the residual and one scalar per receiver
        g_layer = bt * (int(ig_steps) * (d + H + 2 * G) + (H + 2 * G) * e + d + H * e) * el
    grads = L * g_layer
    # sender deltas are made a layer at a time as the bottom-up scoring reaches them, while each
    # layer's gradients are freed once scored (_stream.SenderDeltas): at receiver layer l the
    # deltas of layers ≤ l and the gradients of layers ≥ l are live — linear in l, so the most
    # is at the first layer or at the logits receiver (every delta, the final gradient only)
    # (recomputed: one sender layer's deltas at a time beside the gradients)
    if deltas == "recompute":
        deltas_grads = bt * (H + 1) * d * el + grads
    elif deltas == "keep":
        deltas_grads = max(bt * (1 + (H + 1)) * d * el + grads, bt * (S + 1) * d * el)
    else:
        raise ValueError(f"deltas must be 'keep' or 'recompute', got {deltas!r}")
    n_r = H + 2 * G + 1
    same_chunk = min(WORK_BYTES, bt * S * (n_r + (d if b > 1 else 0)) * el)
    cross_chunk = min(WORK_BYTES, b * H * T * T * max(el, 4) * 8)  # ~8 block temporaries per head
    layer_work = bt * n_r * d * el * 4 + b * H * T * T * el + same_chunk + cross_chunk
    P = n_positions if n_positions is not None else (T if granularity == "position" else 8 if granularity == "span" else 1)
    graph = 4 * (P * S * R + L * H * 3 * P * P) if granularity == "position" and store == "dense" else 0
    if granularity != "position":
        output = P * S * R * acc + L * H * 3 * P * P * acc
    elif store == "dense":
        output = graph + graph // 2  # the graph and the temporaries of its final conversion
    elif store == "topk":
        output = 3 * 12 * int(k or 0) + 8 * P * (S + R)
    else:  # threshold: unknown count; disk: one piece at a time
        output = 8 * P * (S + R) + WORK_BYTES
    # the ablation source is made after the backward (EAP-IG interpolates towards the ablated
    # input embedding alone); EAP records the clean activations in its gradient pass, EAP-IG
    # records them after its passes — and a same-position counterfactual's run at its k = 0
    # point (as large as the clean recording) where that does not raise the peak
    # (ig_records_first)
    scoring = acts + abl + deltas_grads + layer_work
    # EAP's one pass peaks at the end of its forward: the saved activations and the clean
    # recording, its gradients made only as the backward frees the saved activations; EAP-IG's
    # later passes run beside the gradients of the points before
    passes = fwd_bwd + (acts if method == "eap" else grads)
    if method != "eap" and _first_fits(passes, acts, scoring):
        passes += acts
    peak = max(passes, scoring) + output
    return {"forward_backward": int(fwd_bwd), "activations": int(acts), "ablation": int(abl),
            "gradients": int(grads), "layer_work": int(layer_work), "output": int(output),
            "passes": int(passes), "scoring": int(scoring), "peak": int(peak), "weights": int(s["weights"]),
            "graph": int(graph)}


def ig_records_first(model: Model, n_tokens: int, batch_size: int = 1, **kw: Any) -> bool:
    """Whether EAP-IG records a same-position counterfactual's run at its k = 0 point (saving
    the ablation source's own forward): only where holding that recording through the passes
    does not raise the peak (:func:`estimate_memory`'s ``passes`` plus it within ``scoring``)."""
    e = estimate_memory(model, n_tokens, batch_size, method="eap-ig", **kw)
    passes = e["forward_backward"] + e["gradients"]
    return _first_fits(passes, e["activations"], e["scoring"])


def _first_fits(passes: int, recording: int, scoring: int) -> bool:
    """The k = 0 recording (as large as the clean one) held through the passes stays within the
    scoring phase: passes + it ≤ scoring."""
    return passes + recording <= scoring


def default_ig_chunk(model: Model, n_tokens: int, batch_size: int = 1, *, ig_steps: int = 5,
                     **kw: Any) -> int:
    """EAP-IG's interpolation points per forward/backward without a budget: as many as run
    together without raising the peak — while the passes' memory (``c`` points' forward/backward
    plus the gradients) stays within the scoring phase's (recorded runs, deltas, gradients,
    one layer's blocks). Short prompts of small models batch their points; long prompts, or
    models whose logits dominate a pass, run one point per pass."""
    best = 1
    for c in range(2, int(ig_steps) + 1):
        e = estimate_memory(model, n_tokens, batch_size, method="eap-ig", ig_steps=ig_steps,
                            ig_chunk=c, **kw)
        if e["forward_backward"] + e["gradients"] > e["scoring"]:
            break
        best = c
    return best


def plan_attribution(pm: Any, *, n_tokens: int, n_examples: int, batch_size: int, granularity: str,
                     method: str, ig_steps: int, store: str, k: int | None,
                     max_memory: int | str | None) -> dict[str, Any]:
    """Batch size, store and EAP-IG points per pass for :func:`circuits.attribute`.

    Without a budget: the requested batch size and store (``"auto"`` → dense), EAP-IG runs as
    many points per pass as do not raise the peak (:func:`default_ig_chunk`). With
    ``max_memory``: the largest batch size ≤ the requested one (and the most IG points per pass)
    whose :func:`estimate_memory` peak fits; ``store="auto"`` becomes ``"disk"`` when a dense
    position graph does not fit; where nothing fits with the sender deltas kept, they are
    recomputed per receiver layer (``"deltas": "recompute"``; slower, see
    :class:`circuits._stream.SenderDeltas`). Raises ``MemoryError`` (before any model run) when
    even one example does not fit, saying what would."""
    budget = parse_bytes(max_memory)
    bs = max(1, min(int(batch_size), int(n_examples)))
    m = int(ig_steps) if method == "eap-ig" else 1
    chunk = 1 if m == 1 else default_ig_chunk(pm, n_tokens, bs, granularity=granularity,
                                              ig_steps=m, store="dense" if store == "auto" else store, k=k)
    st = "dense" if store == "auto" else store
    out = {"batch_size": bs, "store": st, "ig_chunk": chunk, "work_bytes": WORK_BYTES, "deltas": "keep"}
    out["ig_record_first"] = m > 1 and ig_records_first(pm, n_tokens, bs, granularity=granularity,
                                                        ig_steps=m, ig_chunk=chunk, store=st, k=k)
    if budget is None:
        return out

    def est(b: int, c: int, s_: str, dl: str) -> int:
        return estimate_memory(pm, n_tokens, b, granularity=granularity, method=method,
                               ig_steps=ig_steps, ig_chunk=c, store=s_, k=k, deltas=dl)["peak"]

    stores = [st] if store != "auto" else ["dense", "disk"]
    for dl in ("keep", "recompute"):  # recomputing costs time: only where keeping cannot fit
        for s_ in stores:
            for b in range(bs, 0, -1):
                for c in range(m, 0, -1):
                    if est(b, c, s_, dl) <= budget:
                        rf = m > 1 and ig_records_first(pm, n_tokens, b, granularity=granularity,
                                                        ig_steps=m, ig_chunk=c, store=s_, k=k, deltas=dl)
                        return {**out, "batch_size": b, "store": s_, "ig_chunk": c, "ig_record_first": rf,
                                "deltas": dl}
    best = min(est(1, 1, s_, "recompute") for s_ in stores)
    # what would fit: the longest prompt at batch 1 with these settings
    lo, hi = 1, int(n_tokens)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        ok = estimate_memory(pm, mid, 1, granularity=granularity, method=method, ig_steps=ig_steps,
                             ig_chunk=1, store=stores[-1], k=k, deltas="recompute")["peak"] <= budget
        lo, hi = (mid, hi) if ok else (lo, mid - 1)
    ok1 = estimate_memory(pm, 1, 1, granularity=granularity, method=method, ig_steps=ig_steps,
                          ig_chunk=1, store=stores[-1], k=k, deltas="recompute")["peak"] <= budget
    hint = (f" At batch 1 with these settings up to ~{lo} tokens fit" if ok1
            else " Not even a 1-token prompt fits")
    alt = "" if granularity != "position" or stores[-1] != "dense" else \
        "; a position graph could use store='topk' (k=...) or store='disk' (path=...)"
    raise MemoryError(f"attribution of {n_tokens}-token prompts needs about {format_bytes(best)} "
                      f"beyond the weights at batch size 1 ({method}, granularity {granularity!r}, "
                      f"store {stores[-1]!r}) but max_memory is {format_bytes(budget)}.{hint}{alt}; "
                      f"or raise max_memory (see circuits.estimate_memory for the parts).")


def estimate_faithfulness_memory(model: Model, n_tokens: int, batch_size: int = 1) -> dict[str, int]:
    """Bytes of one patched forward of :class:`circuits.FaithfulnessEvaluator` with sparse masks
    (:class:`circuits._sparse.SparseMasks`), upper bounds for any circuit: ``masks`` (one layer's
    concrete crossing masks when every head's mask varies over position pairs, ``[b H 3 T T]``
    bools), ``ablation`` (sender outputs and q/k/v/z of the ablation source, held by the
    evaluator), ``forward`` (the stored sender deltas ``[b T S d]`` when every sender is needed,
    one layer's score / pattern temporaries and receiver inputs, the logits), ``peak`` their
    sum."""
    s = _shapes(model)
    L, H, G, d, e, S, R, el = (s[x] for x in ("L", "H", "G", "d", "e", "S", "R", "elem"))
    b, T = int(batch_size), int(n_tokens)
    masks = b * H * 3 * T * T
    abl = b * T * (S * d + L * 4 * H * e) * el
    fwd = b * T * S * d * el + 6 * b * H * T * T * el + b * T * (H + 2 * G + 1) * d * el * 3 \
        + b * T * s["vocab"] * el
    return {"masks": int(masks), "ablation": int(abl), "forward": int(fwd),
            "peak": int(masks + abl + fwd), "weights": int(s["weights"])}


def fit_faithfulness_batch(model: Model, n_tokens: int, batch_size: int, max_memory: int | str) -> int:
    """Largest batch size ≤ ``batch_size`` whose :func:`estimate_faithfulness_memory` fits the
    budget; ``MemoryError`` naming the need when one example does not."""
    budget = parse_bytes(max_memory)
    assert budget is not None
    for b in range(int(batch_size), 0, -1):
        if estimate_faithfulness_memory(model, n_tokens, b)["peak"] <= budget:
            return b
    need = estimate_faithfulness_memory(model, n_tokens, 1)["peak"]
    raise MemoryError(f"one patched forward of a {n_tokens}-token example needs about "
                      f"{format_bytes(need)} beyond the weights but max_memory is "
                      f"{format_bytes(budget)}: use shorter prompts or raise max_memory")
