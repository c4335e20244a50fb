"""Helpers shared by report sections: tokenising with the report's BOS policy, readable token labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from interp.types import Model


def token_label(i: int, tok: str) -> str:
    """Unique, readable axis label for position ``i`` (plotly merges duplicate category labels)."""
    tok = tok.replace("\n", "⏎").replace("\t", "⇥")
    if tok.startswith(" "):
        tok = "·" + tok[1:]
    if len(tok) > 12:
        tok = tok[:11] + "…"
    return f"{i}:{tok}"


def tokens_for(model: Model, text: str, prepend_bos: bool) -> tuple[torch.Tensor, list[str]]:
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


def toy_segment_length(name: str) -> int:
    """In-distribution repeated-segment length for a toy's induction control (see :func:`head_scan`)."""
    from interp import zoo

    man = zoo.manifest(name)
    params = man.get("task", {}).get("params", {})
    n_ctx = int(man.get("model", {}).get("n_ctx", 64))
    seg = int(params.get("max_segment", 20))
    length = int(params.get("length", n_ctx))
    return max(2, min(seg, (min(length, n_ctx) - 1) // 2))


def head_scan(ctx: Any) -> Any:
    """``interp.scan.scan`` of the section's sample of the report prompts (``_data.draw(ctx, "scan")``:
    head scores + sink statistics in one streaming pass, with the random-token and
    repeated-sequence controls), computed once per report and shared by the ``sinks`` and
    ``heads`` sections through ``ctx.cache``.

    On a toy zoo model the controls stay inside what the toy was trained on: the repeated random
    segment of the induction control is as long as the toy's longest training segment
    (``task.params.max_segment`` of its manifest), or fits twice in its context, instead of the
    default 20 tokens (41 with BOS: past a 40-token toy's training length).
    """
    key = "heads.scan"
    if key not in ctx.cache:
        from interp.heads import positional_heads
        from interp.scan import ScanResult, scan
        from interp.reports.sections._data import draw, is_toy

        texts = draw(ctx, "scan")
        mo = int(ctx.options.get("max_offset", 8))
        eps = float(ctx.options.get("eps", 0.3))
        toy = is_toy(ctx)
        res = scan(ctx.model, texts, max_offset=mo, eps=eps, prepend_bos=ctx.prepend_bos, batch_size=4,
                   random_control=not toy, induction_control=not toy, seed=ctx.seed)
        if toy:
            heads = positional_heads(ctx.model, texts, max_offset=mo, prepend_bos=ctx.prepend_bos, batch_size=16,
                                     random_control=True, induction_control=True,
                                     induction_seg_len=toy_segment_length(ctx.model_name), seed=ctx.seed)
            res = ScanResult(heads=heads, sinks=res.sinks)
        ctx.cache[key] = res
    return ctx.cache[key]


def ci_rows(named: Sequence[tuple[str, Any]], fmt: str = ".3f") -> list[list[Any]]:
    """Table rows ``[quantity, value, 95% CI, split halves, n, readable]`` for ``(name, Estimate)`` pairs;
    the value cell says "too noisy to read" when :func:`interp.stats.too_noisy` holds."""
    rows = []
    for name, e in named:
        rows.append([name, "too noisy to read" if e.noisy else float(f"{e.value:{fmt}}"),
                     f"[{e.lo:{fmt}}, {e.hi:{fmt}}]",
                     "" if e.halves is None else f"{e.halves[0]:{fmt}} / {e.halves[1]:{fmt}}",
                     f"{e.n} {e.unit}", "no" if e.noisy else "yes"])
    return rows


CI_COLUMNS = ["quantity", "value", "95% bootstrap CI", "split halves", "over", "readable"]


def head_map_estimates(per_prompt: Any, top: list[tuple[str, float]], *, seed: int, abs_tol: float = 0.05,
                       what: str = "") -> list[tuple[str, Any]]:
    """Bootstrap estimates (over prompts) of the per-head means ``per_prompt[:, l, h]`` of the heads in ``top``."""
    from interp.stats import estimate

    out = []
    for name, _ in top:
        l, h = (int(x) for x in name.lstrip("L").split("H"))
        out.append((f"{what}{name}", estimate(per_prompt[:, l, h], seed=seed, abs_tol=abs_tol)))
    return out
