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
    """``[1, pos]`` token ids and their strings for one prompt under the BOS policy (``interp.tokenize``)."""
    from interp.tokens import tokenize

    batch = tokenize(model, [text], prepend_bos=prepend_bos)
    return batch.tokens, [str(s) for s in batch.str_tokens[0]]


def layer_head_labels(n_heads: int) -> list[str]:
    return [f"H{h}" for h in range(n_heads)]


def heatmap_layer_head(z: Any, *, title: str, colorbar: str, diverging: bool | None = None) -> Any:
    """Layer × head heatmap with ``L{l}H{h}`` labels (``interp.plots.layer_head_heatmap``)."""
    from interp.plots import layer_head_heatmap

    fig = layer_head_heatmap(torch.as_tensor(z, dtype=torch.float32), title=title, colorbar_title=colorbar,
                             diverging=diverging)
    fig.update_layout(height=max(320, 16 * int(torch.as_tensor(z).shape[0]) + 140))
    return fig


def as_list(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    return x


def mean_ignore_nan(rows: Sequence[Sequence[float]]) -> list[float]:
    t = torch.tensor(rows, dtype=torch.float64)
    return torch.nanmean(t, dim=0).tolist()


def head_scan(ctx: Any) -> Any:
    """``interp.heads.scan`` of the report prompts (head scores + sink statistics in one streaming
    pass, with the random-token and repeated-sequence controls), computed once per report and
    shared by the ``sinks`` and ``heads`` sections through ``ctx.cache``."""
    key = "heads.scan"
    if key not in ctx.cache:
        from interp.heads import scan

        ctx.cache[key] = scan(ctx.model, ctx.texts, max_offset=int(ctx.options.get("max_offset", 8)),
                              eps=float(ctx.options.get("eps", 0.3)), prepend_bos=ctx.prepend_bos, batch_size=4,
                              random_control=True, induction_control=True, seed=ctx.seed)
    return ctx.cache[key]
