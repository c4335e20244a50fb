"""Section ``longctx``: what happens to sinks, relative attention and massive activations far from
the start of a prompt.

On the longest report prompts cut to 1,024 tokens (``_data.SIZES["long"]``), one prompt per forward
pass:

* attention to the first token by query position, A[t, 0] per layer and head, and
  Sink_0^ε(t) = share of heads with A[t, 0] > ε (ε = 0.3) at query t — the per-query form of
  Gu et al. 2025's Sink_k^ε (arXiv:2410.10781), averaged over prompts in log-spaced bins of t
  with bootstrap intervals over prompts;
* A(Δ) = mean over queries t ≥ Δ of A[t, t − Δ] out to Δ = 1,023 (the relative-distance
  profile of ``interp.heads``), per layer and for the heads with the most attention beyond
  Δ = 64;
* massive activations beyond the first token: per layer, the largest |x| of ``hook_resid_post``
  at position 0, at the first delimiter token (the first "." "," ";" ":" or newline after
  position 0; Sun et al. 2024, arXiv:2402.17762, found them at the first token and the first
  "." or "\\n" in Llama 2) and the median over all other positions.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from interp.capture import stream
from interp.reports._registry import ReportContext, SectionOutput, SectionSkipped, Table, section
from interp.types import Model

_DELIM = re.compile(r"^\s*[.,;:]\s*$|\n")


def first_delimiter(str_tokens: list[str], start: int = 1) -> int | None:
    """Position of the first delimiter token (".", ",", ";", ":" alone, or any token with a newline)."""
    for i in range(start, len(str_tokens)):
        if _DELIM.search(str_tokens[i] or ""):
            return i
    return None


def _bins(T: int) -> list[tuple[int, int]]:
    """Log-spaced query-position bins [lo, hi) covering 1 … T−1."""
    edges = [1]
    while edges[-1] < T:
        edges.append(min(T, edges[-1] * 2))
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def measure_prompt(model: Model, tokens: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """One prompt ``[1, T]``: attention to token 0 per query ``[layer head T]``, pooled A(Δ) sums
    ``[layer head T]`` and max |resid_post| per position ``[layer T]``."""
    L = int(model.cfg.n_layers)
    T = int(tokens.shape[1])
    a0 = torch.zeros(L, int(model.cfg.n_heads), T)
    rel = torch.zeros(L, int(model.cfg.n_heads), T, dtype=torch.float64)
    amax = torch.zeros(L, T)
    pos = torch.arange(T)
    src = pos[:, None] - pos[None, :]  # [t, Δ]
    ok = (src >= 0).float()
    idx = src.clamp(min=0)

    def pat(p: torch.Tensor, hook: Any) -> None:
        l = int(hook.name.split(".")[1])
        A = p[0].detach().float()  # [h t s]
        a0[l] = A[:, :, 0].cpu()
        g = torch.gather(A, -1, idx[None].expand(A.shape[0], T, T).to(A.device)) * ok.to(A.device)
        rel[l] = g.sum(1).double().cpu()

    def res(x: torch.Tensor, hook: Any) -> None:
        l = int(hook.name.split(".")[1])
        amax[l] = x[0].detach().float().abs().amax(-1).cpu()

    hooks = [(f"blocks.{l}.attn.hook_pattern", pat) for l in range(L)]
    hooks += [(f"blocks.{l}.hook_resid_post", res) for l in range(L)]
    # one prompt, no padding: the engine runs exactly ``tokens`` (no attention mask)
    stream(model, [tokens[0]], lambda sb: hooks, batch_size=1, pad="repeat_last")
    return {"a0": a0, "rel": rel, "amax": amax}


@section("longctx", "Long contexts",
         "Attention to the first token and Sink_0^0.3 as a function of query position up to 1,024 tokens, "
         "relative attention A(Δ) out to long distances, and massive activations beyond the first token "
         "(first delimiter / newline; Sun et al. 2024), with bootstrap intervals over prompts.",
         requires=("interp.sinks",), order=38)
def run(ctx: ReportContext) -> SectionOutput:
    import plotly.graph_objects as go

    from interp.reports.sections._data import describe, draw, is_toy
    from interp.reports.sections._util import CI_COLUMNS, ci_rows
    from interp.stats import bootstrap_ci, estimate
    from interp.stats import describe as say
    from interp.tokens import tokenize

    eps = float(ctx.options.get("eps", 0.3))
    texts = draw(ctx, "long", longest=True)
    if is_toy(ctx):
        texts = texts[:32]
    if len(texts) < 2:
        raise SectionSkipped("long-context views need at least 2 prompts")
    model = ctx.model
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    per: list[dict[str, torch.Tensor]] = []
    delims: list[int | None] = []
    lengths: list[int] = []
    for t in texts:
        b = tokenize(model, [t], prepend_bos=ctx.prepend_bos)
        per.append(measure_prompt(model, b.tokens, eps))
        strs = [str(s) for s in b.str_tokens[0]]
        delims.append(first_delimiter(strs))
        lengths.append(int(b.lengths[0]))
    T = min(lengths)
    n = len(per)
    # Sink_0^eps(t) per prompt [n T] and mean attention to token 0 per layer [n L T]
    sink_t = torch.stack([(p["a0"][:, :, :T] > eps).double().mean(dim=(0, 1)) for p in per])
    a0_layer = torch.stack([p["a0"][:, :, :T].double().mean(1) for p in per])
    bins = _bins(T)
    sink_bins = torch.stack([sink_t[:, a:b].mean(1) for a, b in bins], dim=1)  # [n bin]
    a0_bins = torch.stack([a0_layer[:, :, a:b].mean(2) for a, b in bins], dim=2)  # [n L bin]
    pt, lo, hi = bootstrap_ci(sink_bins, seed=ctx.seed)
    ests = []
    for j in sorted({0, len(bins) // 2, len(bins) - 1}):
        a, b = bins[j]
        ests.append((f"Sink_0^{eps} at query positions {a}–{b - 1}", estimate(sink_bins[:, j], seed=ctx.seed,
                                                                                abs_tol=0.02)))
    # A(Δ): per prompt mean over queries, pooled over prompts with counts T_i − Δ
    rel_sum = torch.zeros(L, H, T, dtype=torch.float64)
    cnt = torch.zeros(T, dtype=torch.float64)
    for p, m in zip(per, lengths):
        rel_sum += p["rel"][:, :, :T]
        cnt += (m - torch.arange(T)).clamp(min=0).double()
    A = (rel_sum / cnt.clamp(min=1)).float()  # [L H Δ]
    far = A[:, :, 64:].mean(-1) if T > 65 else A[:, :, 1:].mean(-1)
    top_far = far.flatten().topk(min(6, far.numel())).indices.tolist()
    # massive activations
    rows_m = []
    pos0 = torch.stack([p["amax"][:, 0] for p in per])  # [n L]
    dl = [d for d in delims if d is not None]
    dvals = torch.stack([p["amax"][:, d] for p, d in zip(per, delims) if d is not None]) if dl else None
    med = torch.stack([p["amax"][:, 1:].median(-1).values for p in per])  # [n L]
    for l in range(L):
        rows_m.append([l, float(pos0[:, l].mean()), None if dvals is None else float(dvals[:, l].mean()),
                       float(med[:, l].mean()),
                       None if dvals is None else float((dvals[:, l] / med[:, l]).mean())])
    if dvals is not None and dvals.shape[0] >= 2:
        lmax = int((dvals / med).mean(0).argmax())
        ests.append((f"layer {lmax}: max |resid| at the first delimiter ÷ median elsewhere",
                     estimate((dvals[:, lmax] / med[:, lmax]).double(), seed=ctx.seed, rel_tol=0.5)))
        ests.append((f"layer {lmax}: max |resid| at position 0 ÷ median elsewhere",
                     estimate((pos0[:, lmax] / med[:, lmax]).double(), seed=ctx.seed, rel_tol=0.5)))

    figs = []
    centers = [math.sqrt(a * max(a, b - 1)) for a, b in bins]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=centers + centers[::-1], y=hi.tolist() + lo.tolist()[::-1], fill="toself",
                             line={"width": 0}, fillcolor="rgba(31,119,180,0.2)", name="95% CI over prompts",
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=centers, y=pt.tolist(), mode="lines+markers", name=f"Sink_0^{eps}(t)",
                             line={"color": "#1f77b4"}))
    fig.update_layout(title=f"Share of heads with attention to the first token > {eps} by query position "
                            f"({n} prompts of ≥ {T} tokens)", xaxis_title="query position t (log bins)",
                      yaxis_title=f"Sink_0^{eps}(t)", xaxis_type="log", height=420)
    figs.append(fig)
    z = a0_bins.mean(0)  # [L bin]
    figs.append(go.Figure(go.Heatmap(z=z.tolist(), x=[f"{a}–{b - 1}" for a, b in bins], y=list(range(L)),
                                     colorscale="Viridis", colorbar={"title": "mean A[t,0]"},
                                     hovertemplate="layer %{y}, queries %{x}<br>mean attention to token 0 = "
                                                   "%{z:.3f}<extra></extra>")))
    figs[-1].update_layout(title="Mean attention to the first token per layer by query position (heads averaged)",
                           xaxis_title="query positions", yaxis_title="layer", height=max(360, 14 * L + 140))
    fig = go.Figure()
    d = list(range(1, T))
    for i in top_far:
        l, h = divmod(int(i), H)
        fig.add_trace(go.Scatter(x=d, y=A[l, h, 1:].tolist(), mode="lines", name=f"L{l}H{h}"))
    for l in sorted({0, L // 2, L - 1}):
        fig.add_trace(go.Scatter(x=d, y=A[l, :, 1:].mean(0).tolist(), mode="lines", line={"dash": "dot"},
                                 name=f"layer {l} mean"))
    fig.update_layout(title=f"A(Δ) out to Δ = {T - 1}: heads with the most attention beyond Δ = 64, and layer means",
                      xaxis_title="relative distance Δ", yaxis_title="A(Δ)", xaxis_type="log", yaxis_type="log",
                      height=420)
    figs.append(fig)
    fig = go.Figure()
    ls = list(range(L))
    fig.add_trace(go.Scatter(x=ls, y=[r[1] for r in rows_m], mode="lines+markers", name="position 0"))
    if dvals is not None:
        fig.add_trace(go.Scatter(x=ls, y=[r[2] for r in rows_m], mode="lines+markers", name="first delimiter"))
    fig.add_trace(go.Scatter(x=ls, y=[r[3] for r in rows_m], mode="lines+markers", name="median elsewhere"))
    fig.update_layout(title="Largest |residual| per layer: first token, first delimiter, elsewhere",
                      xaxis_title="layer", yaxis_title="max |resid_post| (mean over prompts)", yaxis_type="log",
                      height=420)
    figs.append(fig)

    tables = [Table(f"headline numbers with 95% bootstrap intervals over {n} long prompts", CI_COLUMNS, ci_rows(ests)),
              Table("Sink_0^ε by query position", ["query positions", f"Sink_0^{eps}", "95% lo", "95% hi"],
                    [[f"{a}–{b - 1}", float(pt[j]), float(lo[j]), float(hi[j])] for j, (a, b) in enumerate(bins)]),
              Table("heads with the most attention beyond Δ = 64", ["head", "mean A(Δ), Δ ≥ 64", "A(1)", f"A({T - 1})"],
                    [[f"L{int(i) // H}H{int(i) % H}", float(far.flatten()[i]), float(A.flatten(0, 1)[i, 1]),
                      float(A.flatten(0, 1)[i, T - 1])] for i in top_far]),
              Table("massive activations beyond the first token (max |resid_post|, mean over prompts)",
                    ["layer", "position 0", "first delimiter", "median elsewhere", "first delimiter ÷ median"], rows_m)]
    notes = [say(k, e) for k, e in ests]
    notes.append(f"first delimiter found in {len(dl)} of {n} prompts (positions {dl[:8]}).")
    data = {"eps": eps, "bins": bins, "sink_by_query": {"value": pt, "lo": lo, "hi": hi},
            "attention_to_first_by_layer": z, "A_delta_layer_mean": A.mean(1), "top_far_heads": tables[2].rows,
            "massive": rows_m, "first_delimiter_positions": delims, "lengths": lengths,
            "ci": {k: e.to_json() for k, e in ests}, "data": describe(ctx, "long", texts)}
    hooks = [f"blocks.{l}.attn.hook_pattern" for l in range(L)] + [f"blocks.{l}.hook_resid_post" for l in range(L)]
    return SectionOutput(data=data, figures=figs, tables=tables, notes=notes, hooks=hooks)
