"""Sections ``sinks`` and ``dormant`` (``interp.sinks``).

``sinks``: sink importance α_k = (1/(T−k)) Σ_{t≥k} A[t,k] per head (Gu et al. 2025) and
Sink_k^ε (share of heads with α_k > ε, ε = 0.3), sink discovery by position/token, massive
activations (Sun et al. 2024: |x| > 100 and > 1000 × median), value-state drains ‖v_j W_O‖ and
residual-state peaks (Guo et al. 2024), and the repeated-token check (one token repeated 64 times,
no BOS; the sink vanishes in RoPE/NoPE models).

``dormant`` (opt-in: it ablates every head of the chosen layers on two prompt domains):
active/dormant heads — Δloss from zero-ablating each head, prose versus code (Guo et al. 2024).
"""

from __future__ import annotations

from typing import Any

import torch

from interp.reports._registry import ReportContext, SectionOutput, Table, section
from interp.reports.sections._data import describe as describe_data
from interp.reports.sections._data import draw
from interp.reports.sections._util import CI_COLUMNS, ci_rows, head_map_estimates, head_scan


@section("sinks", "Attention sinks and extreme tokens",
         "Sink importance α_k per head and key (Gu et al. 2025), Sink_k^0.3, which positions/tokens are sinks, "
         "massive activations (Sun et al. 2024), value-state drains and residual peaks (Guo et al. 2024), "
         "and the repeated-token check.", requires=("interp.sinks",), order=30)
def run(ctx: ReportContext) -> SectionOutput:
    from interp import sinks

    top = int(ctx.options.get("top", 10))
    eps = float(ctx.options.get("eps", 0.3))
    res = head_scan(ctx).sinks
    rep = sinks.repeated_token_sink(ctx.model, length=64, prepend_bos=False, eps=eps)
    disc = res.discover()
    figs: list[Any] = [res.plot(), res.plot_sink_curve()]
    if res.massive is not None:
        figs.append(res.massive.plot())
    if res.drain_ratio is not None:
        figs.append(res.plot_drains())
    if res.resid_norm is not None:
        figs.append(res.plot_resid_peaks())
    figs.append(rep.plot())
    rate0 = res.sink_rate(0)
    ests = sink_estimates(res, eps, seed=ctx.seed)
    ests += head_map_estimates(res.alpha[..., res.sink_position], res.top(5), seed=ctx.seed, what="α_0 of ")
    summary = [[f"Sink_0^{eps} (position 0, report prompts, BOS={'yes' if ctx.prepend_bos else 'no'})", rate0],
               [f"Sink_1^{eps} (position 1)", res.sink_rate(1)],
               [f"Sink_0^{eps} on '{rep.token}' × {rep.length}, no BOS (repeated-token check)", rep.sink_rate]]
    if res.resid_peak_ratio is not None:
        summary.append(["max over layers of ‖resid‖ at position 0 / largest elsewhere",
                        float(res.resid_peak_ratio.nan_to_num(nan=0).max())])
    if res.massive is not None:
        summary.append(["layers with massive activations", ", ".join(map(str, res.massive.massive_layers())) or "none"])
    tables = [Table(f"headline numbers with 95% bootstrap intervals over {res.alpha.shape[0]} prompts "
                    "(split halves: the same number on two random halves)", CI_COLUMNS, ci_rows(ests)),
              Table("summary", ["quantity", "value"], summary),
              Table(f"heads with the largest α_{res.sink_position}", ["head", "α"], [[h, v] for h, v in res.top(top)]),
              Table("sink discovery by category (share of heads with α_k > ε)", ["category", "count", "mean share",
                    "max share"], [[c, int(s["count"]), s["mean_share"], s["max_share"]]
                                  for c, s in disc.categories.items()]),
              Table("tokens acting as sinks", ["token", "count", "mean share", "max share"],
                    [[r["token"], r["count"], r["mean_share"], r["max_share"]] for r in disc.top(top)])]
    if res.massive is not None:
        seen: set[tuple[Any, ...]] = set()
        rows = []
        for r in res.massive.top(top * 8):  # one row per (layer, dim, position, token), largest first
            key = (r["layer"], r["dim"], r["position"], r["token"])
            if key not in seen and len(rows) < top:
                seen.add(key)
                rows.append([r["layer"], r["dim"], r["position"], r["token"], r["value"], r["ratio_to_median"],
                             r["massive"]])
        tables.append(Table("largest residual activations (distinct layer, dim, position)",
                            ["layer", "dim", "position", "token", "value", "÷ median", "massive"], rows))
    from interp.stats import describe

    notes = [describe(f"Sink_0^{eps}", ests[0][1]), describe(f"Sink_1^{eps}", ests[1][1]),
             f"On one token repeated {rep.length} times without BOS Sink_0^{eps} is {rep.sink_rate:.3f} "
             "(one synthetic prompt, no interval; theory: the sink vanishes for RoPE/NoPE models)."]
    L = ctx.model.cfg.n_layers
    hooks = ([f"blocks.{l}.attn.hook_pattern" for l in range(L)] + [f"blocks.{l}.attn.hook_v" for l in range(L)]
             + [f"blocks.{l}.hook_resid_post" for l in range(L)])
    data = {"sinks": res.to_json(), "discovery": disc.to_json(), "repeated_token": rep.to_json(),
            "sink_rate_0": rate0, "sink_rate_1": res.sink_rate(1),
            "ci": {name: e.to_json() for name, e in ests}, "data": describe_data(ctx, "scan", draw(ctx, "scan"))}
    return SectionOutput(data=data, figures=figs, tables=tables, notes=notes, hooks=hooks)


def sink_estimates(res: Any, eps: float, *, seed: int) -> list[tuple[str, Any]]:
    """Sink_0^ε and Sink_1^ε with bootstrap intervals over prompts: the per-prompt share of heads
    with α_k > ε, averaged over prompts (what ``SinkResult.sink_rate`` computes)."""
    from interp.stats import estimate

    out = []
    for k in (0, 1):
        a = res.alpha[..., k]  # [prompt layer head]
        ok = ~torch.isnan(a[:, 0, 0])
        share = (a[ok] > eps).double().mean(dim=(1, 2))
        out.append((f"Sink_{k}^{eps}", estimate(share, seed=seed, abs_tol=0.02)))
    return out


@section("dormant", "Active and dormant heads",
         "Δloss from zero-ablating each head on prose and on code prompts (Guo et al. 2024); heads active on one "
         "domain and dormant on the other. Opt-in (one forward pass per layer × head batch × domain): "
         "--only dormant; layers via the 'dormant_layers' option.",
         requires=("interp.sinks",), default=False, order=35)
def run_dormant(ctx: ReportContext) -> SectionOutput:
    from interp import sinks

    domains = {d: ctx.texts_for(d) for d in sorted({p.domain for p in ctx.prompts})}
    domains = {d: v for d, v in domains.items() if v}
    note = []
    if len(domains) < 2:
        domains = sinks.DOMAINS
        note.append("the prompt set has fewer than two domains; used interp.sinks.DOMAINS (prose, code)")
    L = ctx.model.cfg.n_layers
    layers = ctx.options.get("dormant_layers") or sorted({0, L // 2, L - 1})
    res = sinks.active_dormant(ctx.model, domains, layers=list(layers), prepend_bos=ctx.prepend_bos)
    sw = res.switching()
    tables = [Table("heads active on one domain and dormant on another",
                    ["head", "active on", "dormant on", "Δloss by domain", "sink attention by domain"],
                    [[s["head"], ", ".join(s["active_on"]), ", ".join(s["dormant_on"]),
                      ", ".join(f"{k}={v:.3f}" for k, v in s["delta_loss"].items()),
                      ", ".join(f"{k}={v:.2f}" for k, v in s["sink_attention"].items())] for s in sw]),
              Table("largest Δloss (any domain)", ["head", "Δloss (nats)"], [[h, v] for h, v in res.top(10)])]
    notes = note + [f"measured layers {list(layers)}; {len(sw)} heads switch between active and dormant."]
    return SectionOutput(data=res.to_json(), figures=[res.plot()], tables=tables, notes=notes,
                         hooks=[f"blocks.{l}.attn.hook_z" for l in layers])
