"""Helpers shared by report sections: tokenising with the report's BOS policy, readable token labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def token_label(i: int, tok: str) -> str:
    """Unique, readable axis label for position ``i`` (plotly merges duplicate category labels)."""
    tok = tok.replace("\n", "⏎").replace("\t", "⇥")
    if tok.startswith(" "):
        tok = "·" + tok[1:]
    if len(tok) > 12:
        tok = tok[:11] + "…"
    return f"{i}:{tok}"


def tokens_for(model: Any, text: str, prepend_bos: bool) -> tuple[torch.Tensor, list[str]]:
    """``[1, pos]`` token ids and their strings for one prompt under the BOS policy."""
    tokens = model.to_tokens(text, prepend_bos=prepend_bos)
    strs = [str(s) for s in model.to_str_tokens(tokens[0])]
    return tokens, strs


def layer_head_labels(n_heads: int) -> list[str]:
    return [f"H{h}" for h in range(n_heads)]


def heatmap_layer_head(z: Any, *, title: str, colorbar: str, diverging: bool = False) -> Any:
    """Layer × head heatmap with ``L{l}H{h}`` hover labels."""
    import plotly.graph_objects as go

    zt = torch.as_tensor(z, dtype=torch.float32)
    n_layers, n_heads = zt.shape
    text = [[f"L{l}H{h}" for h in range(n_heads)] for l in range(n_layers)]
    kw: dict[str, Any] = {"colorscale": "RdBu", "zmid": 0} if diverging else {"colorscale": "Viridis"}
    fig = go.Figure(go.Heatmap(
        z=zt.tolist(), x=layer_head_labels(n_heads), y=list(range(n_layers)), text=text,
        hovertemplate="%{text}: %{z:.3g}<extra></extra>", colorbar={"title": colorbar}, **kw,
    ))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", height=max(300, 18 * n_layers + 120))
    return fig


def as_list(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    return x


def mean_ignore_nan(rows: Sequence[Sequence[float]]) -> list[float]:
    t = torch.tensor(rows, dtype=torch.float64)
    return torch.nanmean(t, dim=0).tolist()
