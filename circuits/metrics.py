"""Differentiable task metrics on logits, for attribution and faithfulness.

A metric maps the logits of a batch to one value per example: ``metric(logits, batch) ->
Float[Tensor, "batch"]``, where ``batch`` is a :class:`MetricBatch` (attention mask, last real
position, which dataset examples the chunk holds, clean logits when needed). Attribution
differentiates the *sum* over examples and divides by the number of examples (scores are means
over examples). Built-ins read the last real token unless ``position`` is given:

* :func:`logit_diff` — :math:`\\ell_{correct} - \\ell_{wrong}` (IOI: IO − S; Wang et al. 2022);
* :func:`prob_diff` — :math:`p_{correct} - p_{wrong}` (softmax over the vocabulary);
* :func:`kl_to_clean` — :math:`-\\mathrm{KL}(p_{clean}\\,\\|\\,p)` (negated so that higher is
  better, like the others; its gradient is 0 at the clean run, so EAP scores vanish with it:
  use EAP-IG);
* :func:`logprob` — mean log-probability of per-position targets (e.g. induction);
* :func:`token_logit_diff` — mean over positions of :math:`\\ell_{correct}(t) - \\ell_{wrong}(t)`
  for per-position targets (logit difference for sequence tasks: unlike log-probabilities it does
  not saturate on a confident model, so EAP's linearisation stays informative);
* any callable ``f(logits, batch) -> [batch]`` (or ``f(logits) -> [batch]``), wrapped by
  :func:`as_metric`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["Metric", "MetricBatch", "logit_diff", "prob_diff", "kl_to_clean", "logprob",
           "token_logit_diff", "as_metric"]


@dataclass
class MetricBatch:
    """What a metric may need besides the logits, for one chunk of the dataset.

    ``index``: dataset indices of the chunk's examples; ``last``: column of each example's last
    real token; ``clean_logits``: logits of the clean run (only for metrics with
    ``needs_clean``).
    """

    attention_mask: Int[Tensor, "batch pos"]
    index: Int[Tensor, " batch"]
    last: Int[Tensor, " batch"]
    clean_logits: Float[Tensor, "batch pos vocab"] | None = None

    @staticmethod
    def from_mask(attention_mask: Tensor, index: Tensor | None = None,
                  clean_logits: Tensor | None = None) -> MetricBatch:
        m = attention_mask.long()
        b, p = m.shape
        cols = torch.arange(p, device=m.device).expand(b, p)
        last = torch.where(m.bool(), cols, torch.full_like(cols, -1)).max(1).values
        idx = torch.arange(b, device=m.device) if index is None else index.to(m.device).long()
        return MetricBatch(m, idx, last, clean_logits)


class Metric:
    """A named metric: ``metric(logits, batch) -> [batch]`` (see module docstring)."""

    needs_clean: bool = False

    def __init__(self, fn: Callable[[Tensor, MetricBatch], Tensor], name: str,
                 needs_clean: bool = False) -> None:
        self.fn = fn
        self.name = name
        self.needs_clean = needs_clean

    def __call__(self, logits: Float[Tensor, "batch pos vocab"], batch: MetricBatch) -> Float[Tensor, " batch"]:
        out = self.fn(logits, batch)
        if out.dim() == 0:
            raise ValueError(f"metric {self.name!r} returned a scalar; return one value per "
                             f"example ([batch]) so attribution can average over examples")
        return out

    def __repr__(self) -> str:
        return f"Metric({self.name})"


def as_metric(metric: Metric | Callable[..., Tensor]) -> Metric:
    """Wrap a user callable ``f(logits, batch)`` or ``f(logits)`` as a :class:`Metric`."""
    if isinstance(metric, Metric):
        return metric
    if not callable(metric):
        raise TypeError(f"metric must be a Metric or a callable on logits, got {type(metric).__name__}")
    try:
        n = len([p for p in inspect.signature(metric).parameters.values()
                 if p.default is inspect.Parameter.empty
                 and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):
        n = 2
    fn = metric if n >= 2 else (lambda logits, batch: metric(logits))
    return Metric(fn, getattr(metric, "__name__", "custom"))


def _pos(batch: MetricBatch, position: Tensor | None) -> Tensor:
    if position is None:
        return batch.last
    return position.to(batch.index.device)[batch.index]


def _gather_last(logits: Tensor, pos: Tensor) -> Tensor:
    return logits[torch.arange(logits.shape[0], device=logits.device), pos.to(logits.device)]


def _tok(x: Tensor | list[int], name: str) -> Tensor:
    t = torch.as_tensor(x).long()
    if t.dim() not in (1, 2):
        raise ValueError(f"{name} must be [example] or [example k] token ids, got shape {tuple(t.shape)}")
    return t


def logit_diff(
    correct: Int[Tensor, " example"] | list[int],
    wrong: Int[Tensor, " example"] | Int[Tensor, "example k"] | list[int],
    *,
    position: Int[Tensor, " example"] | None = None,
) -> Metric:
    """:math:`\\ell_{correct} - \\ell_{wrong}` at the last real token (or ``position``, in the
    clean batch's own token coordinates); several wrong tokens per example are averaged."""
    c, w = _tok(correct, "correct"), _tok(wrong, "wrong")

    def fn(logits: Tensor, batch: MetricBatch) -> Tensor:
        lg = _gather_last(logits, _pos(batch, position))  # [b vocab]
        ci, wi = c.to(lg.device)[batch.index], w.to(lg.device)[batch.index]
        lc = lg.gather(1, ci[:, None])[:, 0]
        lw = lg.gather(1, wi.view(len(wi), -1)).mean(1)
        return lc - lw

    return Metric(fn, "logit_diff")


def prob_diff(
    correct: Int[Tensor, " example"] | list[int],
    wrong: Int[Tensor, " example"] | Int[Tensor, "example k"] | list[int],
    *,
    position: Int[Tensor, " example"] | None = None,
) -> Metric:
    """:math:`p_{correct} - p_{wrong}` (softmax over the vocabulary) at the read position."""
    c, w = _tok(correct, "correct"), _tok(wrong, "wrong")

    def fn(logits: Tensor, batch: MetricBatch) -> Tensor:
        pr = torch.softmax(_gather_last(logits, _pos(batch, position)), -1)
        ci, wi = c.to(pr.device)[batch.index], w.to(pr.device)[batch.index]
        return pr.gather(1, ci[:, None])[:, 0] - pr.gather(1, wi.view(len(wi), -1)).mean(1)

    return Metric(fn, "prob_diff")


def kl_to_clean(*, position: Int[Tensor, " example"] | None = None) -> Metric:
    """:math:`-\\mathrm{KL}(p_{clean} \\| p)` at the read position (0 on the clean run)."""

    def fn(logits: Tensor, batch: MetricBatch) -> Tensor:
        if batch.clean_logits is None:
            raise ValueError("kl_to_clean needs batch.clean_logits")
        pos = _pos(batch, position)
        lp = torch.log_softmax(_gather_last(logits, pos), -1)
        lq = torch.log_softmax(_gather_last(batch.clean_logits.to(logits.device), pos), -1)
        return -(lq.exp() * (lq - lp)).sum(-1)

    return Metric(fn, "kl_to_clean", needs_clean=True)


def _own_columns(x: Tensor, batch: MetricBatch, p: int, device: torch.device) -> Tensor:
    """Rows ``batch.index`` of a per-position ``[example pos]`` tensor cut or zero-padded to
    ``p`` columns (clean batch's own token coordinates), on ``device``."""
    x = x.to(device)[batch.index]
    if x.shape[1] < p:
        x = torch.nn.functional.pad(x, (0, p - x.shape[1]))
    return x[:, :p]


def logprob(
    targets: Int[Tensor, "example pos"],
    weights: Bool[Tensor, "example pos"] | Float[Tensor, "example pos"],
) -> Metric:
    """Weighted mean over positions of :math:`\\log p(\\text{target}_t)` predicted at t (own
    token coordinates of the clean batch, right-aligned to its columns)."""
    tg, wt = targets.long(), weights.float()

    def fn(logits: Tensor, batch: MetricBatch) -> Tensor:
        p = logits.shape[1]
        t = _own_columns(tg, batch, p, logits.device)
        w = _own_columns(wt, batch, p, logits.device) * batch.attention_mask.float()
        lp = torch.log_softmax(logits, -1).gather(2, t[..., None])[..., 0]
        return (lp * w).sum(1) / w.sum(1).clamp(min=1e-9)

    return Metric(fn, "logprob")




def token_logit_diff(
    correct: Int[Tensor, "example pos"],
    wrong: Int[Tensor, "example pos"],
    weights: Bool[Tensor, "example pos"] | Float[Tensor, "example pos"],
) -> Metric:
    """Weighted mean over positions of :math:`\\ell_{correct}(t) - \\ell_{wrong}(t)` (logits
    predicted at t), e.g. the true next token vs the one the counterfactual run predicts.

    The per-position form of the logit difference of Wang et al. (2022); EAP (Syed et al. 2023)
    is a first-order expansion of the metric, and logits are the last linear read-out before the
    softmax saturates, so on confident models EAP tracks exact patching far better with this
    metric than with :func:`logprob` (Hanna et al. 2024 discuss metric choice for EAP/EAP-IG)."""
    if correct.shape != wrong.shape or correct.shape != weights.shape:
        raise ValueError(f"correct, wrong and weights must have one shape [example pos]; got "
                         f"{tuple(correct.shape)}, {tuple(wrong.shape)}, {tuple(weights.shape)}")
    c, w, wt = correct.long(), wrong.long(), weights.float()

    def fn(logits: Tensor, batch: MetricBatch) -> Tensor:
        p = logits.shape[1]
        ci, wi = _own_columns(c, batch, p, logits.device), _own_columns(w, batch, p, logits.device)
        ww = _own_columns(wt, batch, p, logits.device) * batch.attention_mask.float()
        d = logits.gather(2, ci[..., None])[..., 0] - logits.gather(2, wi[..., None])[..., 0]
        return (d * ww).sum(1) / ww.sum(1).clamp(min=1e-9)

    return Metric(fn, "token_logit_diff")
