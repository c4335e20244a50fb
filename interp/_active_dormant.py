"""Active/dormant heads (Guo et al. 2024): loss change from ablating each head across prompt
domains. Public API re-exported by :mod:`interp.sinks` (``sinks.active_dormant``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import plotly.graph_objects as go
import torch
from einops import rearrange, repeat
from jaxtyping import Float
from torch import Tensor

from interp._attnstats import (
    PatternAccumulator,
    PromptBatch,
    as_batch,
    check_attention_model,
    check_eps,
)
from interp.provenance import model_name
from interp.capture import stream
from interp.plots import layer_head_heatmap
from interp.prompts import DOMAINS
from interp.results import Result, head_label
from interp.types import Model

__all__ = ["ActiveDormantResult", "active_dormant"]


def _domains() -> dict[str, Any]:
    return DOMAINS


# ----------------------------------------------------------------------- active / dormant


@dataclass
class ActiveDormantResult(Result):
    """Loss change from ablating each head, per prompt domain (Guo et al. 2024).

    ``delta_loss[d, l, h]`` = loss(head ablated) − loss(clean) on domain ``domains[d]`` (mean
    next-token cross-entropy in nats); ``sink_attention[d, l, h]`` = mean attention of the head to
    ``sink_position`` (the first-token score); ``base_loss[d]``. A head is *active* on a domain
    when ``Δloss ≥ active_threshold`` and *dormant* when ``|Δloss| < dormant_threshold`` and its
    sink attention is ``> eps`` (a head whose ablation *lowers* the loss a lot is not dormant). NaN where a layer was not measured.
    """

    model: str
    prepend_bos: bool
    method: str
    domains: list[str]
    base_loss: list[float]
    delta_loss: Float[Tensor, "domain layer head"]
    sink_attention: Float[Tensor, "domain layer head"]
    active_threshold: float
    dormant_threshold: float
    eps: float
    sink_position: int = 0

    def active(self) -> Float[Tensor, "domain layer head"]:
        return (self.delta_loss >= self.active_threshold).float()

    def dormant(self) -> Float[Tensor, "domain layer head"]:
        return ((self.delta_loss.abs() < self.dormant_threshold) & (self.sink_attention > self.eps)).float()

    def switching(self) -> list[dict[str, Any]]:
        """Heads dormant on one domain and active on another, with the numbers."""
        act, dor = self.active().bool(), self.dormant().bool()
        out = []
        L, H = self.delta_loss.shape[1:]
        for l in range(L):
            for h in range(H):
                a = [self.domains[d] for d in range(len(self.domains)) if act[d, l, h]]
                z = [self.domains[d] for d in range(len(self.domains)) if dor[d, l, h]]
                if a and z:
                    out.append(dict(head=head_label(l, h), active_on=a, dormant_on=z,
                                    delta_loss={self.domains[d]: float(self.delta_loss[d, l, h]) for d in range(len(self.domains))},
                                    sink_attention={self.domains[d]: float(self.sink_attention[d, l, h]) for d in range(len(self.domains))}))
        out.sort(key=lambda r: -(max(r["delta_loss"].values()) - min(r["delta_loss"].values())))
        return out

    def top(self, n: int = 10, domain: str | None = None) -> list[tuple[str, float]]:
        """Heads with the largest loss change (on ``domain``, default the max over domains)."""
        s = self.delta_loss[self.domains.index(domain)] if domain else torch.nan_to_num(self.delta_loss, nan=-math.inf).amax(0)
        s = torch.nan_to_num(s, nan=-math.inf)
        vals, idx = s.flatten().topk(min(n, s.numel()))
        return [(head_label(int(i) // s.shape[1], int(i) % s.shape[1]), float(v)) for v, i in zip(vals, idx)]

    def plot(self, domain: str | None = None) -> go.Figure:
        """Heatmap of Δloss for one domain, or of the difference between the first two domains."""
        if domain is not None:
            z, title = self.delta_loss[self.domains.index(domain)], f"Δloss ({self.method}-ablation) on {domain}"
        elif len(self.domains) >= 2:
            z = self.delta_loss[1] - self.delta_loss[0]
            title = f"Δloss({self.domains[1]}) − Δloss({self.domains[0]}) ({self.method}-ablation)"
        else:
            z, title = self.delta_loss[0], f"Δloss ({self.method}-ablation) on {self.domains[0]}"
        return layer_head_heatmap(z, title=f"{title} — {self.model}", colorbar_title="Δloss (nats)")


def _token_loss(logits: Tensor, toks: Tensor, lengths: list[int]) -> Tensor:
    """Mean next-token cross-entropy per prompt over its real positions: ``[b]``."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -lp.gather(-1, toks[:, 1:, None]).squeeze(-1)
    valid = torch.arange(toks.shape[1] - 1, device=toks.device)[None, :] < (torch.tensor(lengths, device=toks.device)[:, None] - 1)
    return (nll * valid).sum(1) / valid.sum(1).clamp(min=1)


def active_dormant(
    model: Model,
    domains: dict[str, Any] | None = None,
    *,
    method: str = "zero",
    layers: Sequence[int] | None = None,
    prepend_bos: bool = True,
    sink_position: int = 0,
    active_threshold: float = 0.02,
    dormant_threshold: float = 0.005,
    eps: float = 0.3,
    batch_size: int = 4,
) -> ActiveDormantResult:
    """Δloss of ablating each head on each domain (zero ``hook_z`` of the head, or ``method="sink"``:
    every query row of the head's pattern replaced by the one-hot at ``sink_position``).

    All heads of one layer are ablated in one forward pass (the batch is replicated per head).
    Cost: ``len(layers)`` forwards of ``n_heads ×`` the batch per domain.

    Args:
        domains: ``{"name": prompts}`` with ≥ 2 domains (default :data:`DOMAINS`: prose, code).
        layers: layers to measure (default all); unmeasured layers are NaN.
    """
    check_attention_model(model)
    check_eps(eps)
    if method not in ("zero", "sink"):
        raise ValueError(f"method must be 'zero' or 'sink', got {method!r}.")
    if dormant_threshold < 0 or active_threshold < dormant_threshold:
        raise ValueError("Need 0 <= dormant_threshold <= active_threshold "
                         f"(got {dormant_threshold}, {active_threshold}).")
    domains = _domains() if domains is None else domains
    if len(domains) < 2:
        raise ValueError("Give at least two prompt domains to compare, e.g. {'prose': [...], 'code': [...]}.")
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    layers = list(range(L)) if layers is None else list(layers)
    if any(not 0 <= l < L for l in layers):
        raise ValueError(f"layers must be within 0..{L - 1}, got {layers}.")
    names = list(domains)
    delta = torch.full((len(names), L, H), float("nan"))
    sinkatt = torch.zeros(len(names), L, H)
    base: list[float] = []
    for d, name in enumerate(names):
        batch = as_batch(model, domains[name], prepend_bos=prepend_bos, min_len=max(2, sink_position + 2))
        acc = PatternAccumulator(len(batch), L, H, max(batch.lengths), keep_alpha=True)
        losses: list[Tensor] = []
        stream(model, batch, acc.hooks, batch_size=batch_size,
               on_logits=lambda sb, lg: losses.append(_token_loss(lg, sb.tokens, sb.lengths)))
        clean = torch.cat(losses)
        base.append(float(clean.mean()))
        assert acc.alpha is not None
        sinkatt[d] = torch.nanmean(acc.alpha[..., sink_position], dim=0)
        for l in layers:
            abl = _ablated_losses(model, batch, l, H, method, sink_position, batch_size)  # [H, n]
            delta[d, l] = (abl - clean[None]).mean(1)
    return ActiveDormantResult(
        model=model_name(model), prepend_bos=prepend_bos, method=method, domains=names, base_loss=base,
        delta_loss=delta, sink_attention=sinkatt, active_threshold=active_threshold,
        dormant_threshold=dormant_threshold, eps=eps, sink_position=sink_position)


def _ablated_losses(model: Any, batch: PromptBatch, layer: int, H: int, method: str, sink_pos: int,
                    batch_size: int) -> Tensor:
    n = len(batch)
    out = torch.zeros(H, n)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        lengths = batch.lengths[start:stop]
        width = max(lengths)
        b = stop - start
        toks = batch.tokens[start:stop, :width].repeat(H, 1)  # replica h = rows h*b .. h*b+b
        mask = batch.attention_mask[start:stop, :width].repeat(H, 1)
        head_of_row = repeat(torch.arange(H), "head -> (head batch)", batch=b)

        if method == "zero":
            def hook(z: Tensor, hook: Any) -> Tensor:
                z = z.clone()
                z[torch.arange(z.shape[0]), :, head_of_row.to(z.device)] = 0.0
                return z
            name = f"blocks.{layer}.attn.hook_z"
        else:
            def hook(p: Tensor, hook: Any) -> Tensor:
                p = p.clone()
                rows = torch.arange(p.shape[0], device=p.device)
                hr = head_of_row.to(p.device)
                new = torch.zeros_like(p[rows, hr])
                new[:, :, sink_pos] = 1.0
                new[:, :sink_pos] = p[rows, hr][:, :sink_pos]  # queries before the sink keep theirs
                p[rows, hr] = new
                return p
            name = f"blocks.{layer}.attn.hook_pattern"
        # one pass over the H replicas (the engine masks the padding; hooks see right-padded rows)
        rep = PromptBatch(toks, mask, lengths * H, [], batch.prepend_bos)
        got: list[Tensor] = []
        stream(model, rep, lambda sb, nm=name, fn=hook: [(nm, fn)], batch_size=H * b,
               on_logits=lambda sb, lg: got.append(_token_loss(lg, sb.tokens, sb.lengths)))
        out[:, start:stop] = rearrange(got[0], "(head batch) -> head batch", head=H)
    return out
