"""One streaming pass for every head score and every sink statistic of the same prompts:
:func:`scan` runs :func:`interp.sinks.sink_analysis`'s pass and feeds its attention accumulator to
:func:`interp.heads.positional_heads`' scoring (Gu et al. 2025, arXiv:2410.10781; TransformerLens
``head_detector`` scores; Olsson et al. 2022, arXiv:2209.11895).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from interp._attnstats import PatternAccumulator, PromptBatch, source_of
from interp.capture import ActivationStore, stream
from interp.heads import PositionalHeadsResult, _check_fraction, _controls, _finish
from interp.results import Result
from interp.sinks import _sink_pass
from interp.types import Model

__all__ = ["scan", "ScanResult"]


@dataclass
class ScanResult(Result):
    """Positional-head scores and sink statistics of the same prompts, from one forward pass."""

    heads: PositionalHeadsResult
    sinks: Any  # interp.sinks.SinkResult

    def plot(self) -> dict[str, go.Figure]:
        return {"previous_token": self.heads.plot("previous_token"), "classes": self.heads.plot_classes(),
                "sink": self.sinks.plot()}

    def to_frame(self) -> Any:
        """The heads table (:meth:`PositionalHeadsResult.to_frame`) with each head's mean sink
        attention ``alpha_sink`` (α at the sink position) beside it."""
        df = self.heads.to_frame()
        a = self.sinks.alpha_mean[:, :, self.sinks.sink_position]
        df["alpha_sink"] = [float(a[l, h]) for l, h in zip(df["layer"], df["head"])]
        return df

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        """The heads' top previous-token scores (see :meth:`PositionalHeadsResult.top`)."""
        return self.heads.top(n)


def scan(
    model: Model | ActivationStore,
    prompts: Any = None,
    *,
    max_offset: int = 8,
    eps: float = 0.3,
    prepend_bos: bool = True,
    batch_size: int = 8,
    random_control: bool = False,
    induction_control: bool = False,
    drains: bool | None = None,
    peaks: bool = True,
    massive: bool = True,
    seed: int = 0,
    **classify: float,
) -> ScanResult:
    """Every head score (:func:`positional_heads`) and every sink statistic
    (:func:`interp.sinks.sink_analysis`) of ``prompts`` in a single streaming pass.

    The controls (random tokens, repeated random sequences) are off by default: each costs one more
    pass over inputs of the same size. ``classify`` takes ``threshold``, ``induction_threshold``,
    ``keep_ratio``.

    ``model`` may be an :class:`~interp.capture.ActivationStore` holding
    ``blocks.*.attn.hook_pattern`` (and ``blocks.*.hook_resid_post`` unless ``peaks=False,
    massive=False``) with ``prompts=None``: the same single pass is replayed from the stored
    activations (bit-identical to the live run for a store captured from the same prompts with the
    same ``batch_size`` and right padding). A store cannot give the controls (they run the model on
    new random-token prompts: ``random_control``/``induction_control=True`` with a store raise a
    ValueError) nor the value drains (they need ``W_O``: ``drains`` defaults to on for a model and
    off for a store, see :func:`interp.sinks.sink_analysis`). Both results record the store in
    ``params["source"]``.
    """
    if max_offset < 1:
        raise ValueError(f"max_offset must be >= 1, got {max_offset}.")
    for nm, v in classify.items():
        if nm not in ("threshold", "induction_threshold", "keep_ratio"):
            raise TypeError(f"Unknown classification option {nm!r}.")
        _check_fraction(nm, v)
    src = source_of(model)
    random_control, induction_control, _ = _controls(src, random_control, induction_control)
    sres, acc, batch = _sink_pass(model, prompts, eps=eps, prepend_bos=prepend_bos, sink_position=0,
                                  batch_size=batch_size, drains=drains, peaks=peaks, massive=massive,
                                  massive_threshold=100.0, massive_ratio=1000.0, top_k=5,
                                  min_len=max_offset + 1, analysis="scan")
    L, H = src.n_layers, src.n_heads

    def measure(b: PromptBatch) -> PatternAccumulator:
        a = PatternAccumulator(len(b), L, H, max(b.lengths), keep_alpha=False)
        stream(model, b, a.hooks, batch_size=batch_size)
        return a

    hres = _finish(src, batch, acc, measure, max_offset=max_offset, random_control=random_control,
                   induction_control=induction_control, induction_seg_len=None,
                   threshold=float(classify.get("threshold", 0.4)),
                   induction_threshold=float(classify.get("induction_threshold", 0.3)),
                   keep_ratio=float(classify.get("keep_ratio", 0.7)), seed=seed, batch_size=batch_size)
    return ScanResult(heads=hres, sinks=sres)
