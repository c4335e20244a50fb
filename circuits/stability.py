"""Circuit stability under resampling of the examples: bootstrap selection frequencies and score CIs.

A circuit found from one data sample shifts when the sample changes (Nikankin et al. 2025 gain
faithfulness by bootstrapping edges). :func:`resample` draws ``n`` bootstrap samples of the
examples (with replacement, each the size of the data), scores the graph of each sample with
any attribution method, selects a circuit from each, and reports per abstract edge

* the **selection frequency** :math:`f(e) = \\frac1n\\sum_r [e \\in C_r]`;
* the **score CI**: percentile interval of the edge's score over the resamples (level ``ci``),
  and the mean.

Every method here scores a data set by the *mean over examples* of per-example scores, so the
graph of a bootstrap sample is the count-weighted mean of per-example graphs: each example is
attributed once and the resamples cost only selections (exact patching too: the metric is a
mean over examples, so is M(ablated) − M(clean)).

``select(stability, method="stable", min_freq=0.9)`` keeps the edges selected in at least
``min_freq`` of the resamples; :meth:`Stability.plot` shows the frequencies and
``circuit.plot(stability=...)`` draws edge opacity by frequency.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from einops import einsum
from jaxtyping import Float
from torch import Tensor

from circuits.metrics import Metric, MetricBatch, as_metric
from circuits.select import select_stable  # re-exported (it lives with select, below resample)
from interp.results import Result
from interp.types import Model

__all__ = ["Stability", "resample", "select_stable"]


@dataclass
class Stability(Result):
    """Bootstrap stability of a circuit selection (see module docstring).

    Attributes:
        same_freq, cross_freq: selection frequency of each abstract edge (shapes of the graph's
            ``same_pos`` ``[pos sender receiver]`` and ``cross`` ``[layer head kind qpos kpos]``).
        same_mean, same_lo, same_hi / cross_mean, cross_lo, cross_hi: mean score over resamples
            and the percentile CI.
        senders, receivers, positions: the graph's axis labels.
        meta: method, selection (method, n_edges / threshold), resamples, ci level, seed,
            examples, the graph's metadata (BOS policy …).
    """

    same_freq: Float[Tensor, "pos sender receiver"]
    cross_freq: Float[Tensor, "layer head kind qpos kpos"]
    same_mean: Float[Tensor, "pos sender receiver"]
    same_lo: Float[Tensor, "pos sender receiver"]
    same_hi: Float[Tensor, "pos sender receiver"]
    cross_mean: Float[Tensor, "layer head kind qpos kpos"]
    cross_lo: Float[Tensor, "layer head kind qpos kpos"]
    cross_hi: Float[Tensor, "layer head kind qpos kpos"]
    senders: list[str]
    receivers: list[str]
    positions: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    graph: Any = field(default=None, compare=False, metadata={"json": False})  # the full-data graph (not in JSON)

    def edges(self, min_freq: float = 0.0) -> list[dict[str, Any]]:
        """Edges with frequency ≥ ``min_freq`` (and > 0), most frequent first, then by |mean|."""
        out: list[dict[str, Any]] = []
        for (p, s, r) in torch.nonzero(self.same_freq >= max(min_freq, 1e-12)).tolist():
            out.append({"kind": "same", "sender": self.senders[s], "receiver": self.receivers[r],
                        "pos": self.positions[p], "kpos": self.positions[p],
                        "freq": float(self.same_freq[p, s, r]), "mean": float(self.same_mean[p, s, r]),
                        "ci": (float(self.same_lo[p, s, r]), float(self.same_hi[p, s, r]))})
        for (l, h, k, q, kp) in torch.nonzero(self.cross_freq >= max(min_freq, 1e-12)).tolist():
            out.append({"kind": "qkv"[k], "sender": f"L{l}H{h}", "receiver": f"L{l}H{h}",
                        "pos": self.positions[q], "kpos": self.positions[kp],
                        "freq": float(self.cross_freq[l, h, k, q, kp]),
                        "mean": float(self.cross_mean[l, h, k, q, kp]),
                        "ci": (float(self.cross_lo[l, h, k, q, kp]), float(self.cross_hi[l, h, k, q, kp]))})
        out.sort(key=lambda e: (-e["freq"], -abs(e["mean"])))
        return out

    def freq_of(self, kind: str, sender: str, receiver: str, pos: Any, kpos: Any = None) -> float:
        """Selection frequency of one edge (positions as labels or indices)."""
        def pi(x: Any) -> int:
            return x if isinstance(x, int) else self.positions.index(x)

        if kind == "same":
            return float(self.same_freq[pi(pos), self.senders.index(sender), self.receivers.index(receiver)])
        l, h = (int(v) for v in sender[1:].split("H"))
        return float(self.cross_freq[l, h, "qkv".index(kind), pi(pos), pi(kpos if kpos is not None else pos)])

    def to_json(self) -> dict[str, Any]:
        """Every field (so :meth:`from_json` rebuilds it) plus ``edges``: every edge selected at
        least once, with frequency, mean and CI."""
        return {**Result.to_json(self), "edges": [{**e, "ci": list(e["ci"])} for e in self.edges()]}

    def plot(self, max_edges: int = 40) -> Any:
        """Bar chart of the most frequently selected edges: frequency (bars) and the score's CI
        (error bars on a second axis, RdBu sign colour)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        es = self.edges()[:max_edges]
        lab = [f"{e['sender']}→{e['receiver']} ({e['kind']}) @{e['pos']}" + (f"←{e['kpos']}" if e["kind"] != "same" else "")
               for e in es]
        fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.4, 0.6],
                            subplot_titles=("selection frequency", f"score ({int(100 * self.meta.get('ci', 0.95))}% CI)"))
        fig.add_trace(go.Bar(x=[e["freq"] for e in es], y=lab, orientation="h", marker_color="#555",
                             name="frequency"), 1, 1)
        fig.add_trace(go.Scatter(
            x=[e["mean"] for e in es], y=lab, mode="markers",
            error_x=dict(type="data", symmetric=False, array=[e["ci"][1] - e["mean"] for e in es],
                         arrayminus=[e["mean"] - e["ci"][0] for e in es]),
            marker=dict(color=[e["mean"] for e in es], colorscale="RdBu", cmid=0), name="score"), 1, 2)
        fig.update_yaxes(autorange="reversed")
        fig.update_layout(title=f"Circuit stability: {self.meta.get('method')} × {self.meta.get('n')} bootstrap "
                                f"resamples ({self.meta.get('selection')})", height=300 + 18 * len(es),
                          showlegend=False)
        return fig

    def __repr__(self) -> str:
        n_all = int((self.same_freq > 0).sum() + (self.cross_freq > 0).sum())
        n_one = int((self.same_freq >= 1).sum() + (self.cross_freq >= 1).sum())
        return (f"Stability({self.meta.get('method')}, {self.meta.get('n')} resamples: {n_all} edges "
                f"selected at least once, {n_one} always, {self._bos_model()})")


def _subset_batch(tb: Any, idx: Sequence[int]) -> Any:
    from interp.tokens import TokenBatch

    if isinstance(tb, TokenBatch):
        it = torch.as_tensor(list(idx), dtype=torch.long)
        return dataclasses.replace(
            tb, tokens=tb.tokens[it], attention_mask=tb.attention_mask[it],
            position_ids=tb.position_ids[it], lengths=[tb.lengths[i] for i in idx],
            offsets=[tb.offsets[i] for i in idx], prompts=[tb.prompts[i] for i in idx],
            str_tokens=[tb.str_tokens[i] for i in idx], meta=dict(tb.meta))
    if isinstance(tb, Tensor):
        return tb[torch.as_tensor(list(idx), dtype=torch.long)]
    if isinstance(tb, tuple) and len(tb) == 2 and isinstance(tb[0], Tensor):
        it = torch.as_tensor(list(idx), dtype=torch.long)
        return tb[0][it], tb[1][it]
    if isinstance(tb, list):
        return [tb[i] for i in idx]
    raise TypeError(f"cannot take examples of {type(tb).__name__}: give a Task, a TokenBatch, "
                    f"prompts or a [batch pos] token tensor")


def _remapped(met: Metric, idx: Sequence[int]) -> Metric:
    """The metric on a sub-batch: example indices map back to the full data set."""
    full = torch.as_tensor(list(idx), dtype=torch.long)

    def fn(logits: Tensor, b: MetricBatch) -> Tensor:
        return met(logits, MetricBatch(b.attention_mask, full.to(b.index.device)[b.index], b.last,
                                       b.clean_logits))

    return Metric(fn, met.name, needs_clean=met.needs_clean)


def _len(x: Any) -> int:
    if isinstance(x, tuple):
        return int(x[0].shape[0])
    return int(x.shape[0]) if isinstance(x, Tensor) else len(x)


def resample(
    model: Model,
    task: Any,
    method: str = "eap",
    n: int = 20,
    *,
    n_edges: int | None = None,
    threshold: float | None = None,
    select_method: str = "topn",
    corrupt: Any = None,
    metric: Any = None,
    schema: Any = None,
    ci: float = 0.95,
    seed: int = 0,
    progress: bool = False,
    **attribute_kwargs: Any,
) -> Stability:
    """Bootstrap the examples ``n`` times, attribute with ``method`` and select a circuit each
    time (:func:`circuits.select` with ``n_edges`` / ``threshold`` / ``select_method``).

    Args:
        task: a :class:`circuits.tasks.Task`, or clean prompts/tokens (then ``corrupt``,
            ``metric``, ``schema`` as for :func:`circuits.attribute`).
        method: any :func:`circuits.attribute` method.
        n: number of bootstrap resamples.
        ci: level of the percentile score interval.
        attribute_kwargs: passed to :func:`circuits.attribute` (granularity, ablation, ig_steps …;
            the dense store only).

    Returns:
        :class:`Stability`; ``.graph`` is the full-data graph (the mean of the per-example graphs).
    """
    from circuits.attribution import attribute
    from circuits.select import select
    from circuits.tasks import Task

    if n < 1:
        raise ValueError(f"n (resamples) must be >= 1, got {n}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if n_edges is None and threshold is None:
        raise ValueError("resample() needs n_edges=... or threshold=... for the per-resample selection")
    if attribute_kwargs.get("store", "dense") != "dense":
        raise ValueError("resample() needs dense graphs: drop store=")
    name = None
    if isinstance(task, Task):
        clean, corrupt = task.clean, task.corrupt if corrupt is None else corrupt
        metric = task.metric if metric is None else metric
        schema = task.schema if schema is None else schema
        name = task.name
    else:
        clean = task
    if metric is None:
        raise ValueError("resample needs a metric (or a Task)")
    met = as_metric(metric)
    N = _len(clean)
    if N < 2:
        raise ValueError("resampling needs at least 2 examples")
    ablation = attribute_kwargs.get("ablation", "counterfactual")
    # one graph per example (scores are means over examples: a resample is a weighted mean)
    per: list[Any] = []
    it: Any = range(N)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"{method} per example")
    for i in it:
        sub_c = _subset_batch(clean, [i])
        sub_x = None
        if corrupt is not None:
            sub_x = _subset_batch(corrupt, [i]) if ablation == "counterfactual" else corrupt
        per.append(attribute(model, sub_c, sub_x, _remapped(met, [i]), method=method, schema=schema,
                             task=name, **attribute_kwargs))
    g0 = per[0]
    shapes = {(tuple(g.same_pos.shape), tuple(g.cross.shape), tuple(g.positions) if g0.meta.get("granularity") != "position" else None) for g in per}
    if len(shapes) != 1:
        raise ValueError("per-example graphs differ in shape (positions/spans): give a schema with "
                         "the same spans for every example, or equal-length prompts")
    S = torch.stack([g.same_pos.double() for g in per])  # [N K S R]
    C = torch.stack([g.cross.double() for g in per])
    sizes = torch.stack([g.span_sizes.double() for g in per])
    pairs = torch.stack([g.cross_pairs.double() for g in per])
    full = dataclasses.replace(g0, same_pos=S.mean(0).to(g0.same_pos.dtype), cross=C.mean(0).to(g0.cross.dtype),
                               span_sizes=sizes.mean(0).to(g0.span_sizes.dtype),
                               cross_pairs=pairs.mean(0).to(g0.cross_pairs.dtype),
                               meta={**g0.meta, "n_examples": N, "seconds": sum(g.meta.get("seconds", 0) for g in per)})
    if g0.meta.get("granularity") == "position":
        from circuits.attribution import patchable, prepare

        data = prepare(patchable(model), clean, corrupt, ablation=ablation, granularity="position",
                       schema=schema)
        full = dataclasses.replace(full, positions=list(data.positions))
    gen = torch.Generator().manual_seed(seed)
    fs = torch.zeros(S.shape[1:], dtype=torch.float64)
    fc = torch.zeros(C.shape[1:], dtype=torch.float64)
    rs, rc = [], []
    sel = {"method": select_method, "n_edges": n_edges, "threshold": threshold}
    for _ in range(n):
        w = torch.bincount(torch.randint(0, N, (N,), generator=gen), minlength=N).double() / N
        gs = einsum(w, S, "sample, sample ... -> ...")
        gc = einsum(w, C, "sample, sample ... -> ...")
        g = dataclasses.replace(full, same_pos=gs.to(g0.same_pos.dtype), cross=gc.to(g0.cross.dtype))
        circ = select(g, n_edges, threshold=threshold, method=select_method)
        fs += circ.same_pos.double()
        fc.view(-1)[circ.cross_flat_ids()] += 1.0
        rs.append(gs.float())
        rc.append(gc.float())
    RS, RC = torch.stack(rs), torch.stack(rc)
    lo_i = int(round((1 - ci) / 2 * (n - 1)))
    hi_i = int(round((1 + ci) / 2 * (n - 1)))
    RSs, RCs = RS.sort(0).values, RC.sort(0).values
    meta = {"method": method, "n": n, "selection": sel, "ci": ci, "seed": seed, "n_examples": N,
            "task": name, "graph_meta": dict(full.meta), "prepend_bos": full.meta.get("prepend_bos"),
            "resampling": "bootstrap over examples (with replacement, size N)"}
    return Stability((fs / n).float(), (fc / n).float(), RS.mean(0), RSs[lo_i], RSs[hi_i],
                     RC.mean(0), RCs[lo_i], RCs[hi_i], list(full.senders), list(full.receivers),
                     list(full.positions), meta, full)
