"""Shared plotly helpers: layer × head heatmaps, token-labelled attention views, line panels.

House style: heads are labelled ``L{l}H{h}`` (0-indexed); diverging scores use ``RdBu`` centred
at 0 (``zmid=0``, red = negative ... blue = positive, reversed so positive is red); sequential
scores use ``Viridis``. Every figure has a title and axis labels. Functions return figures and
never show them.
"""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from interp.results import head_label

__all__ = ["layer_head_heatmap", "attention_heatmap", "lines", "DIVERGING", "SEQUENTIAL"]

DIVERGING = "RdBu_r"  # RdBu, reversed so that positive scores are red; always with zmid=0
SEQUENTIAL = "Viridis"


def _np(x: Tensor):
    return x.detach().float().cpu().numpy()


def layer_head_heatmap(
    values: Float[Tensor, "layer head"],
    *,
    title: str,
    colorbar_title: str = "score",
    diverging: bool | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    hover_extra: Sequence[Sequence[str]] | None = None,
) -> go.Figure:
    """Heatmap of one score per head: rows are layers (0 at the top), columns heads.

    ``diverging=None`` picks the diverging RdBu scale centred at 0 when values have both signs.
    """
    v = values.detach().float().cpu()
    n_layers, n_heads = v.shape
    if diverging is None:
        finite = v[torch.isfinite(v)]
        diverging = bool(finite.numel()) and bool((finite.min() < 0) & (finite.max() > 0))
    text = [[head_label(l, h) for h in range(n_heads)] for l in range(n_layers)]
    if hover_extra is not None:
        text = [[f"{text[l][h]}<br>{hover_extra[l][h]}" for h in range(n_heads)] for l in range(n_layers)]
    kw = dict(colorscale=DIVERGING, zmid=0.0) if diverging else dict(colorscale=SEQUENTIAL)
    if zmin is not None:
        kw["zmin"] = zmin
    if zmax is not None:
        kw["zmax"] = zmax
    fig = go.Figure(
        go.Heatmap(
            z=_np(v),
            x=[f"H{h}" for h in range(n_heads)],
            y=[f"L{l}" for l in range(n_layers)],
            text=text,
            hovertemplate="%{text}<br>" + colorbar_title + "=%{z:.4g}<extra></extra>",
            colorbar=dict(title=colorbar_title),
            **kw,
        )
    )
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", yaxis_autorange="reversed")
    return fig


def attention_heatmap(
    pattern: Float[Tensor, "query key"],
    tokens: Sequence[str],
    *,
    title: str,
) -> go.Figure:
    """One head's attention pattern with token labels on both axes (query rows, key columns)."""
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(
        go.Heatmap(
            z=_np(pattern),
            x=labels,
            y=labels,
            colorscale="Blues",
            zmin=0.0,
            zmax=1.0,
            hovertemplate="query %{y}<br>key %{x}<br>attention=%{z:.3f}<extra></extra>",
            colorbar=dict(title="attention"),
        )
    )
    fig.update_layout(title=title, xaxis_title="key token", yaxis_title="query token",
                      yaxis_autorange="reversed")
    return fig


def lines(
    x: Sequence[float] | Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    title: str,
    xaxis_title: str,
    yaxis_title: str,
    errors: dict[str, Sequence[float]] | None = None,
) -> go.Figure:
    """Several named curves over a shared x axis, with optional symmetric error bars."""
    fig = go.Figure()
    for name, ys in series.items():
        err = None
        if errors and name in errors:
            err = dict(type="data", array=list(errors[name]), visible=True)
        fig.add_trace(go.Scatter(x=list(x), y=list(ys), mode="lines+markers", name=name, error_y=err))
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title)
    return fig
