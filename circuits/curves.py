"""Faithfulness-versus-size curves, CPR / CMD areas, and positional vs non-positional plots.

MIB circuit track (Mueller et al. 2025): circuits at 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100 % of
the graph's edges; normalised faithfulness f(C) = (m(C) − m(∅)) / (m(N) − m(∅)) at each size;

* CPR = ∫ f  (higher is better), CMD = ∫ |1 − f|  (lower is better, 0 best), trapezoid rule.

Haklay et al. (2025) compare positional and non-positional circuits by the *average number of
concrete edges per example* (a span edge stands for every token-level edge it covers), so that is
our x-axis. Areas are taken over the concrete-edge fraction x = concrete edges / concrete edges of
the full graph ∈ [0, 1], with the empty circuit (x = 0, f = 0 by definition) as first point, so
positional and non-positional curves integrate over the same domain. ``edges_for(0.8)`` gives
the smallest evaluated circuit reaching f ≥ 0.8 (and a log-linear interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from interp.results import Result

from .circuit import Circuit, concrete_edge_counts
from .faithfulness import FaithfulnessEvaluator
from .select import _graph_parts, circuit_from_masks, circuit_from_order, greedy_order, n_valid_edges
from interp.types import Model

__all__ = ["MIB_GRID", "FaithfulnessCurve", "faithfulness_curve", "plot_curves", "area"]

MIB_GRID: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def area(x: Sequence[float | int], y: Sequence[float | int]) -> float:
    """Trapezoid-rule area under ``y(x)`` (points sorted by x)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    o = np.argsort(xs, kind="stable")
    xs, ys = xs[o], ys[o]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


@dataclass
class FaithfulnessCurve(Result):
    """Faithfulness of circuits of increasing size selected from one attribution graph.

    Attributes (one entry per circuit size, increasing):
        fractions: requested share of the graph's abstract edges (``None`` for absolute sizes).
        n_requested, n_edges: abstract edges requested / kept after pruning.
        concrete_edges: average concrete (token-level) edges per example.
        concrete_fraction: ``concrete_edges / total_concrete`` (x of the areas).
        f, f_lo, f_hi: normalised faithfulness and its 95 % bootstrap CI; soft, hard likewise.
        cpr, cmd: areas under f and |1 − f| over the concrete fraction (empty circuit at x = 0).
        total_edges, total_concrete: abstract edges of the graph; concrete edges per example of
            the full graph.
        label: legend name (e.g. ``"span (positional)"``); meta: granularity, selection method,
            ablation, metric, BOS policy, timing …
    """

    label: str
    fractions: list[float | None]
    n_requested: list[int]
    n_edges: list[int]
    concrete_edges: list[float]
    concrete_fraction: list[float]
    f: list[float]
    f_lo: list[float]
    f_hi: list[float]
    soft: list[float]
    hard: list[float]
    cpr: float
    cmd: float
    total_edges: int
    total_concrete: float
    meta: dict[str, Any] = field(default_factory=dict)

    def edges_for(self, target: float = 0.8, *, interpolate: bool = False) -> float | None:
        """Average concrete edges per example of the smallest circuit with f ≥ ``target``
        (``None`` if no evaluated circuit reaches it). ``interpolate=True``: log-linear
        interpolation between the last point below and the first point at/above the target."""
        prev = None
        for x, f in zip(self.concrete_edges, self.f):
            if f >= target:
                if not interpolate or prev is None or prev[0] <= 0:
                    return float(x)
                x0, f0 = prev
                t = (target - f0) / (f - f0) if f != f0 else 1.0
                return float(np.exp(np.log(x0) + t * (np.log(x) - np.log(x0))))
            prev = (x, f)
        return None

    def abstract_edges_for(self, target: float = 0.8) -> int | None:
        """Abstract (graph) edges of the smallest circuit with f ≥ ``target``."""
        for n, f in zip(self.n_edges, self.f):
            if f >= target:
                return int(n)
        return None

    def table(self) -> str:
        """Markdown table of the curve."""
        rows = ["| % edges | abstract edges | concrete edges / example | f [95 % CI] | soft | hard |",
                "| --- | --- | --- | --- | --- | --- |"]
        for i in range(len(self.f)):
            fr = self.fractions[i]
            rows.append(f"| {'' if fr is None else f'{100 * fr:g}'} | {self.n_edges[i]} | "
                        f"{self.concrete_edges[i]:.0f} | {self.f[i]:.3f} [{self.f_lo[i]:.3f}, {self.f_hi[i]:.3f}] | "
                        f"{self.soft[i]:.3f} | {self.hard[i]:.2f} |")
        return "\n".join(rows)

    def plot(self, log_x: bool = True):
        """This curve alone (see :func:`plot_curves`)."""
        return plot_curves([self], log_x=log_x)

    def __repr__(self) -> str:
        e = self.edges_for(0.8)
        return (f"FaithfulnessCurve({self.label!r}: {len(self.f)} sizes, CPR={self.cpr:.3f}, "
                f"CMD={self.cmd:.3f}, f>=0.8 at {'never' if e is None else f'{e:.0f} concrete edges'}, "
                f"{self._bos_model()})")

    def to_frame(self) -> Any:
        """One row per circuit size: ``label``, ``fraction``, ``n_requested``, ``n_edges``,
        ``concrete_edges``, ``concrete_fraction``, ``f``, ``f_lo``, ``f_hi``, ``soft``, ``hard``;
        CPR/CMD in ``df.attrs``."""
        from interp.results import require_pandas

        df = require_pandas().DataFrame({"label": self.label, "fraction": self.fractions, "n_requested": self.n_requested,
                                  "n_edges": self.n_edges, "concrete_edges": self.concrete_edges,
                                  "concrete_fraction": self.concrete_fraction, "f": self.f, "f_lo": self.f_lo,
                                  "f_hi": self.f_hi, "soft": self.soft, "hard": self.hard})
        df.attrs.update(cpr=self.cpr, cmd=self.cmd, total_edges=self.total_edges,
                        total_concrete=self.total_concrete)
        return df


def _full_circuit(graph: Any) -> Circuit:
    _, valid, _, cv = _graph_parts(graph)
    return circuit_from_masks(graph, valid.clone(), cv.clone(), {"method": "full"}, do_prune=False)


def faithfulness_curve(
    model: Model,
    graph: Any,
    clean: Any = None,
    corrupt: Any = None,
    metric: Any = None,
    *,
    sizes: Sequence[float | int] = MIB_GRID,
    method: str = "greedy",
    label: str | None = None,
    evaluator: FaithfulnessEvaluator | None = None,
    progress: bool = False,
    skip_full: bool = True,
    **evaluator_kwargs: Any,
) -> FaithfulnessCurve:
    """Faithfulness at several circuit sizes selected from ``graph``.

    Args:
        model: the TransformerBridge the graph was computed on.
        graph: an :class:`~circuits.graph.AttributionGraph` (any granularity).
        clean, corrupt, metric: the evaluation data (or a :class:`circuits.tasks.Task` as
            ``clean``); ignored when ``evaluator`` is given (share one evaluator between the
            positional and non-positional curves: the full/empty runs are then computed once).
        sizes: fractions of the graph's abstract edges (default the MIB grid 0.1 % … 100 %) or,
            when every entry is an int > 1, absolute edge counts.
        method: ``"greedy"`` (one greedy order, prefixes of it) or ``"topn"``.
        skip_full: at 100 % of edges report the full model (f = 1) without a patched run
            (keeping every edge equals the clean run; ``tests/test_faithfulness.py`` checks it).
        evaluator_kwargs: ablation, ablation_prompts, schema, include_bos, batch_size, n_boot,
            seed … (see :class:`~circuits.faithfulness.FaithfulnessEvaluator`).

    Returns:
        :class:`FaithfulnessCurve` (x in average concrete edges per example; CPR / CMD).
    """
    import time

    from .select import select

    t0 = time.perf_counter()
    ev = evaluator or FaithfulnessEvaluator(model, clean, corrupt, metric, **evaluator_kwargs)
    total = n_valid_edges(graph)
    absolute = all(isinstance(s, (int, np.integer)) and s > 1 for s in sizes)
    if absolute:
        req = sorted(int(s) for s in sizes)
        fracs: list[float | None] = [None] * len(req)
    else:
        if any(not (0 < float(s) <= 1) for s in sizes):
            raise ValueError(f"sizes must be fractions in (0, 1] or absolute edge counts > 1, got {list(sizes)}")
        fr = sorted(float(s) for s in sizes)
        req = [max(1, int(round(f * total))) for f in fr]
        fracs = list(fr)
    full = _full_circuit(graph)
    pi_full = ev.position_index(full)
    total_concrete = float(concrete_edge_counts(full.same_pos, full.cross_index, pi_full).mean())
    order = None
    if method == "greedy":
        need = max(n for n in req if n < total) if any(n < total for n in req) else 0
        order = greedy_order(graph, need) if need else np.zeros(0, dtype=np.int64)
    elif method != "topn":
        raise ValueError(f"method must be 'greedy' or 'topn', got {method!r}")
    t_sel = time.perf_counter() - t0
    cols: dict[str, list[Any]] = {k: [] for k in ("n_edges", "concrete", "f", "f_lo", "f_hi", "soft", "hard")}
    it = list(zip(req, fracs))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"faithfulness curve {label or ''}")
    for n, fr in it:
        if n >= total:
            c = full
        elif method == "greedy":
            c = circuit_from_order(graph, order, n, {"method": "greedy", "n_requested": n})
        else:
            c = select(graph, n, method="topn")
        r = ev.full_model_result(c) if c is full and skip_full else ev(c)
        cols["n_edges"].append(c.n_edges)
        cols["concrete"].append(r.concrete_edges)
        cols["f"].append(r.f)
        cols["f_lo"].append(r.f_ci[0])
        cols["f_hi"].append(r.f_ci[1])
        cols["soft"].append(r.soft)
        cols["hard"].append(r.hard)
    xfrac = [c / total_concrete if total_concrete else 0.0 for c in cols["concrete"]]
    xs, fs = [0.0] + xfrac, [0.0] + cols["f"]
    gmeta = dict(getattr(graph, "meta", {}) or {})
    gran = gmeta.get("granularity", full.granularity)
    return FaithfulnessCurve(
        label=label or f"{gran} ({method})", fractions=fracs, n_requested=req, n_edges=cols["n_edges"],
        concrete_edges=cols["concrete"], concrete_fraction=xfrac, f=cols["f"], f_lo=cols["f_lo"],
        f_hi=cols["f_hi"], soft=cols["soft"], hard=cols["hard"], cpr=area(xs, fs),
        cmd=area(xs, [abs(1 - f) for f in fs]), total_edges=total, total_concrete=total_concrete,
        meta={"granularity": gran, "method": method, "ablation": ev.ablation,
              "ablation_source": ev.ablation_source, "include_bos": ev.include_bos,
              "prepend_bos": ev.prepend_bos, "metric": ev.metric.name, "task": ev.task_name,
              "n_examples": len(ev.tokens), "graph_method": gmeta.get("method"),
              "seconds": time.perf_counter() - t0, "selection_seconds": t_sel,
              "area_x": "concrete-edge fraction, empty circuit at (0, 0)"})


_COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def plot_curves(curves: Sequence[FaithfulnessCurve], *, log_x: bool = True, target: float | None = 0.8,
                title: str | None = None):
    """Positional and non-positional curves on one plotly figure: f (with 95 % CI band) against
    the average number of concrete edges per example; legend shows CPR / CMD."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, c0 in enumerate(curves):
        col = _COLOURS[i % len(_COLOURS)]
        c = _positive_x(c0) if log_x else c0  # an empty (pruned-away) circuit has no log-x place
        hover = [f"{c.label}<br>{n} abstract edges{'' if fr is None else f' ({100 * fr:g} %)'}<br>"
                 f"{x:.0f} concrete edges / example<br>f = {f:.3f} [{lo:.3f}, {hi:.3f}]<br>"
                 f"soft {s:.3f}, hard {h:.2f}"
                 for n, fr, x, f, lo, hi, s, h in zip(c.n_edges, c.fractions, c.concrete_edges, c.f,
                                                      c.f_lo, c.f_hi, c.soft, c.hard)]
        fig.add_trace(go.Scatter(x=list(c.concrete_edges) + list(c.concrete_edges)[::-1],
                                 y=list(c.f_hi) + list(c.f_lo)[::-1], fill="toself", fillcolor=col,
                                 opacity=0.15, line=dict(width=0), hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=c.concrete_edges, y=c.f, mode="lines+markers", line=dict(color=col),
                                 name=f"{c.label} (CPR {c.cpr:.3f}, CMD {c.cmd:.3f})", text=hover,
                                 hoverinfo="text"))
    if target is not None:
        fig.add_hline(y=target, line=dict(dash="dot", color="grey"), annotation_text=f"f = {target}")
    fig.add_hline(y=1.0, line=dict(dash="dash", color="black", width=1))
    meta = curves[0].meta if curves else {}
    fig.update_layout(
        title=title or (f"Faithfulness vs circuit size ({meta.get('task') or 'task'}, "
                        f"{meta.get('ablation')} ablation, metric {meta.get('metric')})"),
        xaxis=dict(title="average concrete edges per example", type="log" if log_x else "linear"),
        yaxis=dict(title="normalised faithfulness f = (M(C) − M(∅)) / (M(N) − M(∅))"),
        hovermode="closest", template="plotly_white", legend=dict(x=0.01, y=0.99), height=550)
    return fig


def _positive_x(c: FaithfulnessCurve) -> FaithfulnessCurve:
    import dataclasses

    keep = [i for i, x in enumerate(c.concrete_edges) if x > 0]
    if len(keep) == len(c.concrete_edges):
        return c
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    return dataclasses.replace(
        c, fractions=pick(c.fractions), n_requested=pick(c.n_requested), n_edges=pick(c.n_edges),
        concrete_edges=pick(c.concrete_edges), concrete_fraction=pick(c.concrete_fraction), f=pick(c.f),
        f_lo=pick(c.f_lo), f_hi=pick(c.f_hi), soft=pick(c.soft), hard=pick(c.hard))
