"""Section ``capture``: per-layer residual norms by position and attention entropy per head.

Residual norm: ‖x_{l,t}‖₂ of ``blocks.{l}.hook_resid_post`` at position t, averaged over the
prompts that have a position t. Attention entropy of head (l, h) at query t:
H_t = −Σ_{k≤t} A_{t,k} log A_{t,k} (nats), averaged over queries t ≥ 1 and prompts (t = 0 is
always 0). Low entropy marks heads that focus (e.g. on a sink); log(t+1) is the uniform maximum.
"""

from __future__ import annotations

import torch

from interp.reports._registry import ReportContext, SectionOutput, Table, section
from interp.reports.sections._util import heatmap_layer_head, token_label


@section("capture", "Capture summary",
         "Per-layer residual-stream norms by token position and the attention entropy of every head, "
         "over the report's prompt set (positions in each prompt's own coordinates, no padding).", order=20)
def run(ctx: ReportContext) -> SectionOutput:
    import plotly.graph_objects as go

    from interp.reports.sections._data import describe, draw

    model = ctx.model
    texts = draw(ctx, "capture")
    norms_all, ents_all, strs_all = [], [], []
    from interp.capture import capture
    from interp.tokens import tokenize

    backend = "interp.capture (batched, padding removed)"
    store = capture(model, texts, ["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"],
                    batch_size=4, prepend_bos=ctx.prepend_bos)
    strs_all = [list(map(str, s)) for s in tokenize(model, texts, prepend_bos=ctx.prepend_bos).str_tokens]
    for i in range(store.n_examples):
        norms_all.append(store.stack("blocks.*.hook_resid_post", i).float().norm(dim=-1))  # [layer pos]
        a = store.stack("blocks.*.attn.hook_pattern", i).float()  # [layer head q k]
        h = -(a * torch.log(a.clamp_min(1e-30))).sum(-1)  # [layer head q]
        ents_all.append(h[..., 1:].mean(-1) if h.shape[-1] > 1 else torch.zeros(h.shape[:2]))
    n_layers = model.cfg.n_layers
    max_len = max(n.shape[1] for n in norms_all)
    padded = torch.full((len(norms_all), n_layers, max_len), float("nan"))
    for i, n in enumerate(norms_all):
        padded[i, :, : n.shape[1]] = n
    mean_norm = torch.nanmean(padded, dim=0)  # [layer pos]
    count = (~torch.isnan(padded[:, 0, :])).sum(0)
    entropy = torch.stack(ents_all).mean(0)  # [layer head]

    figs = []
    labels0 = [token_label(i, t) for i, t in enumerate(strs_all[0])]
    fig = go.Figure(go.Heatmap(
        z=torch.log10(norms_all[0].clamp_min(1e-6)).tolist(), x=labels0, y=list(range(n_layers)),
        customdata=norms_all[0].tolist(), colorscale="Viridis", colorbar={"title": "log10 ‖x‖"},
        hovertemplate="layer %{y}, token %{x}<br>‖resid‖ = %{customdata:.4g}<extra></extra>"))
    fig.update_layout(title="Residual norm ‖resid_post‖ by layer and token (prompt 0, log scale)",
                      xaxis_title="token (position:token)", yaxis_title="layer", height=520,
                      yaxis={"dtick": 1 if n_layers <= 12 else 5})
    figs.append(fig)

    fig2 = go.Figure()
    pick = sorted({0, n_layers // 4, n_layers // 2, (3 * n_layers) // 4, n_layers - 1})
    for l in pick:
        fig2.add_trace(go.Scatter(x=list(range(max_len)), y=mean_norm[l].tolist(), mode="lines+markers",
                                  name=f"layer {l}"))
    fig2.update_layout(title=f"Mean residual norm by position (over {len(norms_all)} prompts)",
                       xaxis_title="position", yaxis_title="mean ‖resid_post‖", yaxis_type="log", height=420)
    figs.append(fig2)
    figs.append(heatmap_layer_head(entropy, title="Mean attention entropy per head (nats, queries t ≥ 1)",
                                   colorbar="entropy"))

    lowest = torch.topk(-entropy.flatten(), k=min(5, entropy.numel()))
    n_heads = entropy.shape[1]
    rows = [[f"L{int(i) // n_heads}H{int(i) % n_heads}", float(entropy.flatten()[i])] for i in lowest.indices]
    hooks = [f"blocks.{l}.hook_resid_post" for l in range(n_layers)] + [
        f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)]
    data = {
        "backend": backend,
        "n_tokens": [len(s) for s in strs_all],
        "resid_norm_mean": mean_norm, "resid_norm_count": count,
        "resid_norm_first_position_over_rest": [
            float(mean_norm[l, 0] / torch.nanmean(mean_norm[l, 1:])) if max_len > 1 else None
            for l in range(n_layers)],
        "attention_entropy": entropy,
        "data": describe(ctx, "capture", texts),
    }
    return SectionOutput(data=data, figures=figs, hooks=hooks,
                         tables=[Table("lowest-entropy heads", ["head", "mean entropy (nats)"], rows)])
