"""Result of a probe sweep: per-fold metrics, controls, intervals; JSON and plotly figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.results import Result, to_jsonable

__all__ = ["SweepResult"]


def _nanmean(x: Tensor, dim: int = -1) -> Tensor:
    ok = ~torch.isnan(x)
    s = torch.where(ok, x, torch.zeros_like(x)).sum(dim)
    n = ok.sum(dim)
    return torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, float("nan")))


@dataclass(repr=False)
class SweepResult(Result):
    """Probe scores per hook (and per position/span cell) over grouped CV folds.

    Attributes:
        scores: ``{metric: [hook fold]}`` (``by="layer"``).
        grid: ``{metric: [hook cell fold]}`` (``by="position"`` / ``"span"``).
        controls: ``{control: {metric: [hook fold]}}`` -- control task, shuffled labels, random
            directions, scored on the same folds.
        selectivity: ``[hook fold]`` = primary metric of the task minus that of the control task.
        ci: ``{name: [hook 2]}`` lower/upper bounds (``meta["ci"]`` says how) for each metric,
            each control's primary metric (``"control_task.accuracy"``) and ``"selectivity"``.
        confusion: ``[hook true pred]`` out-of-fold counts (classification, ``by="layer"``).
        l2_chosen: the penalty each task fit used (chosen by inner CV when several were given).
    """

    target: str
    kind: str
    by: str
    hooks: list[str]
    labels: list[str]
    layers: list[int | None]
    cells: list[str]
    primary: str
    scores: dict[str, Float[Tensor, "hook fold"]]
    grid: dict[str, Float[Tensor, "hook cell fold"]]
    controls: dict[str, dict[str, Float[Tensor, "hook fold"]]]
    selectivity: Float[Tensor, "hook fold"] | None
    ci: dict[str, Float[Tensor, "hook 2"]]
    confusion: Int[Tensor, "hook true pred"] | None
    class_names: list[str] | None
    meta: dict[str, Any] = field(default_factory=dict)
    l2_chosen: Tensor | None = None  # [hook fold] (by="layer") or [hook cell fold]: penalty used per fit

    def __repr__(self) -> str:
        best = ", ".join(f"{k}={v:.3f}" for k, v in self.top(3))
        return (f"SweepResult(target={self.target!r}, {self.meta.get('probe')} probe, by={self.by!r}, "
                f"{len(self.hooks)} hooks, {self.meta.get('folds')}-fold grouped CV, "
                f"{self.meta.get('n_rows')} rows / {self.meta.get('n_prompts')} prompts, "
                f"prepend_bos={self.meta.get('prepend_bos')}; best {self.primary}: {best})")

    # ---- summaries ---------------------------------------------------------------------
    def mean(self, metric: str | None = None) -> Float[Tensor, " hook"]:
        """Mean over folds of ``metric`` (default: the primary metric) per hook; also accepts
        ``"selectivity"`` and ``"<control>.<metric>"``."""
        metric = metric or self.primary
        if metric == "selectivity":
            if self.selectivity is None:
                raise KeyError("no control task was run, so there is no selectivity")
            return _nanmean(self.selectivity)
        if "." in metric:
            c, m = metric.split(".", 1)
            return _nanmean(self.controls[c][m])
        if self.by == "layer":
            return _nanmean(self.scores[metric])
        raise KeyError("for by='position'/'span' use .grid_mean(metric)")

    def grid_mean(self, metric: str | None = None) -> Float[Tensor, "hook cell"]:
        metric = metric or self.primary
        if self.by == "layer":
            return _nanmean(self.scores[metric]).unsqueeze(1)
        return _nanmean(self.grid[metric])

    def top(self, n: int = 5, metric: str | None = None) -> list[tuple[str, float]]:
        """The ``n`` hooks with the highest mean metric (lowest for MAE)."""
        metric = metric or self.primary
        m = self.mean(metric) if self.by == "layer" else self.grid_mean(metric).nanmean(1)
        key = (lambda v: v) if metric.endswith("mae") else (lambda v: -v)
        order = sorted(range(len(self.hooks)), key=lambda i: key(float(m[i])) if not math.isnan(float(m[i])) else math.inf)
        return [(self.labels[i], float(m[i])) for i in order[:n]]

    def to_frame(self) -> Any:
        """Tidy scores: one row per (hook, [cell,] metric, fold) with ``hook``, ``label``, ``layer``,
        ``cell`` (position/span sweeps), ``metric`` (controls as ``"control.metric"``), ``fold``,
        ``value``."""
        from interp.results import require_pandas

        rows = []
        src: dict[str, Tensor] = {}
        if self.by == "layer":
            src.update(self.scores)
            for c, d in self.controls.items():
                src.update({f"{c}.{m}": v for m, v in d.items()})
            if self.selectivity is not None:
                src["selectivity"] = self.selectivity
        else:
            src.update(self.grid)
        for m, t in src.items():
            t = t.detach().float()
            for i, h in enumerate(self.hooks):
                if t.ndim == 2:
                    rows += [dict(hook=h, label=self.labels[i], layer=self.layers[i], cell=None, metric=m,
                                  fold=k, value=float(t[i, k])) for k in range(t.shape[1])]
                else:
                    rows += [dict(hook=h, label=self.labels[i], layer=self.layers[i], cell=self.cells[c],
                                  metric=m, fold=k, value=float(t[i, c, k]))
                             for c in range(t.shape[1]) for k in range(t.shape[2])]
        df = require_pandas().DataFrame(rows, columns=["hook", "label", "layer", "cell", "metric", "fold", "value"])
        df["target"], df["prepend_bos"] = self.target, self.meta.get("prepend_bos")
        return df

    def table(self) -> list[dict[str, Any]]:
        """One dict per hook: mean of each metric and control, with CI bounds."""
        rows = []
        for i, h in enumerate(self.hooks):
            r: dict[str, Any] = {"hook": h, "label": self.labels[i], "layer": self.layers[i]}
            if self.by == "layer":
                for m in self.scores:
                    r[m] = float(self.mean(m)[i])
                for c in self.controls:
                    r[f"{c}.{self.primary}"] = float(self.mean(f"{c}.{self.primary}")[i])
                if self.selectivity is not None:
                    r["selectivity"] = float(self.mean("selectivity")[i])
                for k, v in self.ci.items():
                    r[f"{k}.ci"] = [float(v[i, 0]), float(v[i, 1])]
            rows.append(r)
        return rows

    # ---- serialisation -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = {
            "type": "probes.SweepResult",
            "target": self.target,
            "kind": self.kind,
            "by": self.by,
            "hooks": self.hooks,
            "labels": self.labels,
            "layers": self.layers,
            "cells": self.cells,
            "primary": self.primary,
            "scores": self.scores,
            "grid": self.grid,
            "controls": self.controls,
            "selectivity": self.selectivity,
            "ci": self.ci,
            "confusion": self.confusion,
            "class_names": self.class_names,
            "summary": self.table(),
            "meta": self.meta,
            "l2_chosen": self.l2_chosen,
            "prepend_bos": self.meta.get("prepend_bos"),
            "model": self.meta.get("model"),
        }
        return to_jsonable(d, float_digits=None)

    # ---- plots -------------------------------------------------------------------------
    def plot(self, metric: str | None = None):
        """Per-layer curve of ``metric`` with CI error bars, the controls' curves beside it and
        selectivity (``by="layer"``); a layer x cell heatmap otherwise."""
        import plotly.graph_objects as go

        metric = metric or self.primary
        if self.by != "layer":
            return self.plot_heatmap(metric)
        x = self.labels
        fig = go.Figure()

        def _trace(name: str, key: str, y: Tensor, dash: str | None = None):
            err = None
            if key in self.ci:
                lo, hi = self.ci[key][:, 0], self.ci[key][:, 1]
                err = dict(type="data", symmetric=False, array=(hi - y).tolist(), arrayminus=(y - lo).tolist())
            fig.add_trace(go.Scatter(x=x, y=y.tolist(), name=name, mode="lines+markers", error_y=err,
                                     line=dict(dash=dash) if dash else None))

        _trace(f"task ({metric})", metric, self.mean(metric))
        if metric == self.primary:
            for c in self.controls:
                _trace(c.replace("_", " "), f"{c}.{metric}", self.mean(f"{c}.{metric}"), dash="dot")
            if self.selectivity is not None:
                _trace("selectivity", "selectivity", self.mean("selectivity"), dash="dash")
        fig.update_layout(
            title=f"Probe for {self.target} ({self.meta.get('probe')}, {self.meta.get('folds')}-fold grouped CV, "
            f"{self.meta.get('ci')} {int(100 * self.meta.get('level', 0.95))}% CI) — {self.meta.get('model')}",
            xaxis_title="hook (layer)",
            yaxis_title=metric,
            legend_title="series",
        )
        return fig

    def plot_heatmap(self, metric: str | None = None):
        """Layer x position (or span) heatmap of the mean metric over folds."""
        import plotly.graph_objects as go

        metric = metric or self.primary
        z = self.grid_mean(metric)
        fig = go.Figure(go.Heatmap(z=[[None if math.isnan(v) else v for v in row] for row in z.tolist()],
                                   x=self.cells, y=self.labels, colorscale="Viridis", colorbar=dict(title=metric)))
        fig.update_layout(title=f"Probe {metric} for {self.target} by layer x {self.by} — {self.meta.get('model')}",
                          xaxis_title=self.by if self.by != "layer" else "", yaxis_title="hook (layer)")
        return fig

    def plot_confusion(self, hook: str | int | None = None, *, normalize: bool = True):
        """Out-of-fold confusion matrix at ``hook`` (label, name or index; default: best hook)."""
        import plotly.graph_objects as go

        if self.confusion is None:
            raise KeyError("no confusion matrix: needs a classification target and by='layer'")
        if hook is None:
            i = self.labels.index(self.top(1)[0][0])
        elif isinstance(hook, int):
            i = hook
        else:
            i = self.labels.index(hook) if hook in self.labels else self.hooks.index(hook)
        cm = self.confusion[i].double()
        if normalize:
            cm = cm / cm.sum(1, keepdim=True).clamp_min(1)
        names = self.class_names or [str(k) for k in range(cm.shape[0])]
        fig = go.Figure(go.Heatmap(z=cm.tolist(), x=names, y=names, colorscale="Blues",
                                   colorbar=dict(title="share of row" if normalize else "count")))
        fig.update_layout(title=f"Confusion matrix of {self.target} at {self.labels[i]} (out-of-fold)",
                          xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed")
        return fig
