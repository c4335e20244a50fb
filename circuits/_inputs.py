"""The inputs of attribution and patching: the cached :class:`PatchableModel` of a bridge,
tokenised and canonicalised clean/counterfactual batches, counterfactual position alignment
through schema spans, RoPE re-rotation of aligned q/k, and the mean/zero/counterfactual ablation
sources.

Shared by :mod:`circuits.attribution`, :mod:`circuits._methods`, :mod:`circuits._exact`,
:mod:`circuits.memory`, :mod:`circuits.faithfulness` and :mod:`circuits.stability` (it sits below
all of them, so none of them imports another to get its inputs). Definitions: see the
:mod:`circuits.attribution` module docstring (Haklay et al. 2025, arXiv:2502.04577).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from einops import rearrange
from jaxtyping import Int
from torch import Tensor

from circuits._forward import Activations, PatchableModel
from circuits.metrics import Metric, as_metric
from circuits.registry import GRANULARITIES
from interp.types import Model

__all__ = ["patchable", "prepare", "AlignedData", "Method", "Ablation", "Granularity"]

Method = Literal["eap", "eap-ig", "eap-ig-activations", "atp*", "atp*-ig", "clean-corrupted", "exact"]
Ablation = Literal["counterfactual", "mean", "zero"]
Granularity = Literal["none", "position", "span"]


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def patchable(model: Model) -> PatchableModel:
    """The (cached) :class:`PatchableModel` of a bridge; a PatchableModel is returned as is."""
    if isinstance(model, PatchableModel):
        return model
    pm = getattr(model, "_circuits_patchable", None)
    if pm is None:
        pm = PatchableModel(model)
        try:
            object.__setattr__(model, "_circuits_patchable", pm)
        except Exception:  # pragma: no cover - exotic wrappers
            pass
    return pm


@dataclass
class _Batch:
    tokens: Tensor  # [n p] right-padded
    mask: Tensor  # [n p]
    lengths: list[int]
    prepend_bos: bool | None
    str_tokens: list[list[str]] | None
    source: Any  # TokenBatch or None


def _as_batch(pm: PatchableModel, x: Any, what: str) -> _Batch:
    from interp.tokens import TokenBatch, tokenize

    if isinstance(x, (list, tuple)) and x and all(isinstance(s, str) for s in x):
        x = tokenize(pm.bridge, list(x), prepend_bos=True, padding_side="right")
    if isinstance(x, str):
        raise TypeError(f"{what} must be a list of prompts, a TokenBatch or a token tensor, not one string")
    if isinstance(x, TokenBatch):
        toks, mask = x.tokens.clone(), x.attention_mask.clone()
        if x.padding_side == "left":  # canonicalise to right padding (own coordinates = columns)
            for i, n in enumerate(x.lengths):
                s = x.start(i)
                toks[i, :n] = x.tokens[i, s: s + n]
                mask[i] = 0
                mask[i, :n] = 1
                toks[i, n:] = x.tokens[i, :s] if s else toks[i, n:]
        return _Batch(toks, mask, list(x.lengths), x.prepend_bos, [list(s) for s in x.str_tokens], x)
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], Tensor):
        toks, mask = x[0], x[1].long()
        lengths = mask.sum(1).tolist()
        for i, n in enumerate(lengths):
            if not bool(mask[i, :n].all()):
                raise ValueError(f"{what}: (tokens, attention_mask) must be right-padded; pass a "
                                 f"TokenBatch from interp.tokenize for left padding")
        return _Batch(toks, mask, [int(n) for n in lengths], None, None, None)
    if isinstance(x, Tensor):
        if x.dim() != 2:
            raise ValueError(f"{what} tokens must be [batch pos], got {tuple(x.shape)}")
        return _Batch(x, torch.ones_like(x), [x.shape[1]] * x.shape[0], None, None, None)
    raise TypeError(f"{what} must be a list of prompts, a TokenBatch, a [batch pos] token tensor or "
                    f"a (tokens, attention_mask) pair; got {type(x).__name__}")


def _spans_of(schema: Any, batch: _Batch, pm: PatchableModel, what: str) -> Any:
    """SchemaSpans of a batch (schema may be a Schema or an already applied SchemaSpans)."""
    from interp.schema import Schema, SchemaSpans

    if isinstance(schema, SchemaSpans):
        spans = schema
    elif isinstance(schema, Schema):
        if batch.source is None:
            raise ValueError(f"to apply a Schema, give {what} as prompts or a TokenBatch (not raw "
                             f"token ids), or pass already applied SchemaSpans")
        spans = schema.apply(batch.source)
    else:
        raise TypeError(f"schema must be an interp.Schema or SchemaSpans, got {type(schema).__name__}")
    spans.raise_for_failures()
    if len(spans) != batch.tokens.shape[0] or list(spans.lengths) != list(batch.lengths):
        raise ValueError(f"the schema spans do not describe the {what} batch (lengths differ)")
    return spans


@dataclass
class AlignedData:
    """Clean/ablation data prepared for attribution (right-padded, own coordinates).

    ``position_map[i, t]``: column of the counterfactual example i that clean token t takes its
    ablated value from; ``group[i, t]``: abstract position (token index, span id or 0) of clean
    token t, −1 on padding.
    """

    clean: _Batch
    corrupt: _Batch | None
    position_map: Int[Tensor, "example pos"] | None
    group: Int[Tensor, "example pos"]
    positions: list[str]
    granularity: str
    span_names: list[str] | None


def prepare(
    pm: PatchableModel,
    clean: Any,
    corrupt: Any,
    *,
    ablation: Ablation | str,
    granularity: Granularity | str,
    schema: Any = None,
) -> AlignedData:
    """Tokenise/canonicalise the inputs, align counterfactual positions and build the position
    groups of the requested granularity (see the module docstring)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be 'none', 'position' or 'span', got {granularity!r}")
    if ablation not in ("counterfactual", "mean", "zero"):
        raise ValueError(f"ablation must be 'counterfactual', 'mean' or 'zero', got {ablation!r}")
    cb = _as_batch(pm, clean, "clean")
    n, P = cb.tokens.shape
    if n == 0:
        raise ValueError("no clean examples were given: attribution needs at least one prompt")
    xb = None
    if ablation == "counterfactual":
        if corrupt is None:
            raise ValueError("ablation='counterfactual' needs `corrupt` prompts (one per clean prompt)")
        xb = _as_batch(pm, corrupt, "corrupt")
        if xb.tokens.shape[0] != n:
            raise ValueError(f"{n} clean but {xb.tokens.shape[0]} corrupt examples: give one "
                             f"counterfactual per clean prompt")
    elif ablation == "mean" and corrupt is not None:
        xb = _as_batch(pm, corrupt, "ablation split")
    spans_c = spans_x = None
    if schema is not None:
        if isinstance(schema, tuple):
            spans_c = _spans_of(schema[0], cb, pm, "clean")
            spans_x = _spans_of(schema[1], xb, pm, "corrupt") if xb is not None else None
        else:
            spans_c = _spans_of(schema, cb, pm, "clean")
            if xb is not None and ablation == "counterfactual":
                spans_x = _spans_of(schema, xb, pm, "corrupt")
    elif granularity == "span":
        raise ValueError("granularity='span' needs a schema (interp.Schema.from_template(...))")
    # counterfactual position map
    pmap = None
    if ablation == "counterfactual":
        assert xb is not None
        if spans_x is not None and spans_c is not None:
            pmap = torch.zeros(n, P, dtype=torch.long)
            for i in range(n):
                for j, ((s, e), (s2, e2)) in enumerate(zip(spans_c.spans[i], spans_x.spans[i])):
                    off = torch.arange(e - s).clamp(max=e2 - s2 - 1)
                    pmap[i, s:e] = s2 + off
        else:
            if cb.lengths != xb.lengths:
                bad = [i for i, (a, b) in enumerate(zip(cb.lengths, xb.lengths)) if a != b][:5]
                raise ValueError(
                    f"clean and corrupt prompts differ in token length (examples {bad}: "
                    f"{[cb.lengths[i] for i in bad]} vs {[xb.lengths[i] for i in bad]}). Pass "
                    f"schema=interp.Schema.from_template(...) to align them span by span, or use "
                    f"counterfactuals of equal length.")
            pmap = torch.arange(P).expand(n, P).clone()
            Px = xb.tokens.shape[1]
            pmap = pmap.clamp(max=Px - 1)
    # groups
    real = cb.mask.bool()
    if granularity == "none":
        group = torch.where(real, 0, -1)
        positions = ["all"]
    elif granularity == "position":
        group = torch.where(real, torch.arange(P).expand(n, P), -1)
        positions = []
        for t in range(P):
            toks = {cb.str_tokens[i][t] for i in range(n) if cb.str_tokens and t < cb.lengths[i]}
            positions.append(f"{t}:{next(iter(toks))}" if len(toks) == 1 else f"{t}")
    else:
        assert spans_c is not None
        group = spans_c.span_index("right", width=P)
        positions = list(spans_c.names)
    return AlignedData(cb, xb, pmap, group.long(), positions, granularity,
                       list(spans_c.names) if spans_c is not None else None)


def _realign_rope(pm: PatchableModel, acts: Activations, source_pos: Tensor) -> Activations:
    """Re-rotate aligned counterfactual q/k from their own RoPE positions to the clean ones.

    After :meth:`Activations.align` the q/k at clean position t come from counterfactual
    position ``source_pos[b, t]``; RoPE rotations compose (R(a)R(b) = R(a+b)), so rotating by
    ``t − source_pos`` gives the q/k the counterfactual token would have had at position t.
    """
    if not (getattr(pm, "use_rope", False) and getattr(pm, "rotary", None) is not None):
        return acts
    b, p = source_pos.shape
    shift = torch.arange(p, device=source_pos.device)[None] - source_pos
    if not bool(shift.any()):
        return acts
    # per layer: Gemma's sliding and global layers have different RoPE tables
    return Activations(acts.senders, pm.rerotate(acts.q, shift), pm.rerotate(acts.k, shift),
                       acts.v, acts.z, acts.pattern, acts.attention_mask)


# ----------------------------------------------------------------------------------------------
# ablation sources
# ----------------------------------------------------------------------------------------------
def _mean_activations(pm: PatchableModel, xb: _Batch, batch_size: int) -> Activations:
    n = xb.tokens.shape[0]
    tot: Activations | None = None
    cnt = torch.zeros(xb.tokens.shape[1], device=pm.device)
    for s in range(0, n, batch_size):
        with torch.no_grad():  # the ablation source needs no attention patterns
            a = pm.forward(xb.tokens[s: s + batch_size].to(pm.device),
                           xb.mask[s: s + batch_size].to(pm.device), record=True,
                           record_pattern=False, need_logits=False)["activations"]
        m = a.attention_mask.to(a.senders.dtype)
        c = m.sum(0)
        mu = a.mean()
        w = c.clamp(min=0)

        def scale(name: str, t: Tensor) -> Tensor:
            if name == "attention_mask":
                return t
            if name == "pattern":
                return t * m.shape[0]
            if name == "senders":
                return t * rearrange(w, "pos -> 1 pos 1 1")
            return t * rearrange(w, "pos -> 1 1 pos 1 1")

        part = mu._map(scale)
        if tot is None:
            tot = part
        else:
            tot = tot._map(lambda name, t: torch.maximum(t, getattr(part, name))
                           if name == "attention_mask" else t + getattr(part, name))
        cnt += c
    assert tot is not None
    cc = cnt.clamp(min=1)

    def div(name: str, t: Tensor) -> Tensor:
        if name == "attention_mask":
            return t
        if name == "pattern":
            return t / n
        if name == "senders":
            return t / rearrange(cc, "pos -> 1 pos 1 1")
        return t / rearrange(cc, "pos -> 1 1 pos 1 1")

    return tot._map(div)


def _fit_width(a: Activations, p: int) -> Activations:
    """Slice a batch-1 (mean) activation set to width p."""
    if a.n_pos < p:
        raise ValueError(f"the mean-ablation split has {a.n_pos} positions but clean prompts have "
                         f"{p}: use an ablation split with prompts at least as long")
    if a.n_pos == p:
        return a

    def sl(name: str, t: Tensor) -> Tensor:
        if name in ("attention_mask",):
            return t[:, :p]
        if name == "senders":
            return t[:, :p]
        if name == "pattern":
            return t[..., :p, :p]
        return t[:, :, :p]

    return a._map(sl)


# ----------------------------------------------------------------------------------------------
# exact patching setup
# ----------------------------------------------------------------------------------------------
def _setup_exact(model: Any, clean: Any, corrupt: Any, metric: Any, ablation: Ablation,
                 schema: Any) -> tuple[PatchableModel, AlignedData, Metric, Activations, Tensor]:
    met = as_metric(metric)
    pm = patchable(model)
    data = prepare(pm, clean, corrupt, ablation=ablation, granularity="position", schema=schema)
    cb = data.clean
    toks, mask = cb.tokens.to(pm.device), cb.mask.to(pm.device)
    acts = pm.activations(toks, mask)
    if ablation == "counterfactual":
        xb = data.corrupt
        assert xb is not None and data.position_map is not None
        src = data.position_map.to(pm.device)
        abl = _realign_rope(pm, pm.activations(xb.tokens.to(pm.device), xb.mask.to(pm.device)).align(src), src)
    elif ablation == "mean":
        abl = _fit_width(_mean_activations(pm, data.corrupt or cb, 64), toks.shape[1])
    else:
        abl = acts.zeros_like()
    return pm, data, met, abl, toks
