"""Section ``rope``: RoPE frequency usage (``interp.rope``).

Chunk k is the 2-D pair rotated at θ_k = base^(−2k/d_rot) (chunk 0 = highest frequency). Usage
(Barbero et al. 2025): mean ‖q^(k)‖, ‖k^(k)‖ per layer and head, and the bound
|q^(k)·k^(k)| ≤ ‖q^(k)‖‖k^(k)‖; the exact per-chunk decomposition of the attention logits (sums to
``hook_attn_scores``); p-RoPE-style band ablation (rotation removed from, or zeroing of, the
highest / lowest quarter of chunks) with the loss and positional-score changes; positional score
against high-frequency share; Men et al. 2024's B(m) ≥ 0 check and Liu et al. 2023's critical
dimension.

Uncertainty: usage shares and band-ablation losses are means over prompts that the analyses pool
inside their pass, so they are also measured on disjoint groups of prompts (``ROPE_GROUPS``
groups of the short sample; every long prompt is its own group) and the interval is the
bootstrap over groups (``interp.stats.group_estimate``). Long inputs: the same usage shares and
band ablation on the longest prompts cut to 1,024 tokens, next to B(m) up to that length.
"""

from __future__ import annotations

from typing import Any

from interp.reports._registry import ReportContext, SectionOutput, SectionSkipped, Table, section

ROPE_GROUPS = 6


def _groups(n: int, k: int) -> list[list[int]]:
    """``k`` disjoint groups of the prompt indices ``0..n-1`` (every k-th prompt)."""
    k = max(2, min(k, n))
    return [list(range(i, n, k)) for i in range(k)]


def _group_estimates(model: Any, texts: list[str], groups: list[list[int]], abl: Any, *, fraction: float,
                     prepend_bos: bool, seed: int, tag: str) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """Per-group q-norm shares (lowest/highest ``fraction`` of chunks, per layer type; one usage pass
    per group) and band-ablation Δloss per condition (from the per-prompt losses of ``abl``, the
    band ablation of all of ``texts``), with bootstrap intervals over the groups."""
    from interp import rope
    from interp.stats import group_estimate

    shares: dict[str, list[float]] = {}
    dloss: dict[str, list[float]] = {}
    for g in groups:
        u = rope.frequency_usage(model, [texts[i] for i in g], prepend_bos=prepend_bos, batch_size=4)
        for t, row in u.summary(fraction).items():
            for band in ("lowest", "highest"):
                shares.setdefault(f"{tag}{t}: query-norm share in the {band} {fraction:g} of chunks", []).append(
                    float(row[f"q_{band}_{fraction}"]))
    per_group = abl.group_loss_change(groups)  # [group condition]
    for i, c in enumerate(abl.conditions[1:], start=1):
        dloss[f"{tag}Δloss, {c} (nats/token)"] = [float(v) for v in per_group[:, i]]
    ests = [(k, group_estimate(v, seed=seed, abs_tol=0.01)) for k, v in shares.items()]
    ests += [(k, group_estimate(v, seed=seed, abs_tol=0.01)) for k, v in dloss.items()]
    return ests, {"shares": shares, "loss_change": dloss}


@section("rope", "RoPE frequency usage",
         "Query/key norm per rotary chunk, layer and head (Barbero et al. 2025), the exact frequency "
         "decomposition of attention logits, band ablation of the highest/lowest quarter of frequencies, "
         "positional heads by frequency, and the base bounds B(m) (Men et al. 2024).",
         requires=("interp.rope",), order=50)
def run(ctx: ReportContext) -> SectionOutput:
    from interp import rope
    from interp.spec import NoRotaryError

    from interp.reports.sections._data import describe, draw, is_toy
    from interp.reports.sections._util import CI_COLUMNS, ci_rows
    from interp.stats import describe as say

    fraction = float(ctx.options.get("rope_fraction", 0.25))
    texts = draw(ctx, "rope")
    try:
        usage = rope.frequency_usage(ctx.model, texts, prepend_bos=ctx.prepend_bos, batch_size=4, decompose=True)
    except NoRotaryError as e:
        raise SectionSkipped(str(e)) from None
    abl = rope.band_ablation(ctx.model, texts, fraction=fraction, prepend_bos=ctx.prepend_bos, batch_size=4)
    pfh = rope.positional_frequency_heads(ctx.model, texts, fraction=fraction, prepend_bos=ctx.prepend_bos,
                                          batch_size=4)
    bounds = rope.base_bounds(ctx.model)
    ests, groups_data = _group_estimates(ctx.model, texts, _groups(len(texts), ROPE_GROUPS), abl, fraction=fraction,
                                         prepend_bos=ctx.prepend_bos, seed=ctx.seed, tag="")
    long_texts = [] if is_toy(ctx) else draw(ctx, "rope_long", longest=True)
    long_ests: list[tuple[str, Any]] = []
    long_data: dict[str, Any] = {}
    long_bounds = None
    long_abl = None
    if len(long_texts) >= 2:
        long_abl = rope.band_ablation(ctx.model, long_texts, fraction=fraction, modes=("unrotate",),
                                      prepend_bos=ctx.prepend_bos, batch_size=1)
        long_ests, long_data = _group_estimates(ctx.model, long_texts, [[i] for i in range(len(long_texts))],
                                                long_abl, fraction=fraction, prepend_bos=ctx.prepend_bos,
                                                seed=ctx.seed, tag="long inputs, ")
        long_len = max(describe(ctx, "rope_long", long_texts)["tokens_max"], 2)
        long_bounds = rope.base_bounds(ctx.model, length=long_len, compute_min_base=True)
    figs: list[Any] = [usage.plot("q"), usage.plot("k")]
    top_heads = usage.top(3, fraction)
    if top_heads:
        name = top_heads[0][0]
        l, h = (int(x) for x in name.lstrip("L").split("H"))
        figs.append(usage.plot_profile(l, h))
    if usage.decomposition is not None:
        figs.append(usage.decomposition.plot())
    figs += [abl.plot(), abl.plot_heads(), pfh.plot(), bounds.plot()]
    if long_bounds is not None:
        fig = long_bounds.plot()
        fig.update_layout(title=f"B(m) up to the long inputs' length {long_bounds.length} (Men et al. 2024), "
                                "beside the band ablation on those inputs (table)")
        figs.append(fig)

    summ = usage.summary(fraction)
    n_groups = len(_groups(len(texts), ROPE_GROUPS))
    tables = [Table(f"headline numbers with 95% bootstrap intervals over {n_groups} disjoint prompt groups "
                    f"({len(texts)} prompts of ≤ {usage.context} tokens)", CI_COLUMNS, ci_rows(ests))]
    if long_ests:
        tables.append(Table(f"long inputs: {len(long_texts)} prompts of ~{long_bounds.length} tokens (interval over "
                            "prompts); B(m) at this length: " + ", ".join(
                                f"{t} base {b:g} {'satisfies B(m) ≥ 0' if ok else f'first B(m) < 0 at m = {fn}'}"
                                for t, b, ok, fn in zip(long_bounds.layer_types, long_bounds.bases,
                                                        long_bounds.satisfied, long_bounds.first_negative)),
                            CI_COLUMNS, ci_rows(long_ests)))
    tables += [Table(f"share of query/key norm in the lowest and highest {fraction:g} of chunks, per layer type",
                    ["layer type", *next(iter(summ.values())).keys()], [[t, *row.values()] for t, row in summ.items()])]
    tables.append(Table(f"heads with the largest high-frequency share (highest {fraction:g} of chunks)",
                        ["head", "share"], [[h, v] for h, v in usage.top(10, fraction)]))
    lc = abl.loss_change
    tables.append(Table("band ablation: loss change (nats / token) per condition", ["condition", "loss", "Δloss"],
                        [[c, float(abl.loss[i]), float(lc[i])] for i, c in enumerate(abl.conditions)]))
    tables.append(Table("positional heads by frequency (positional score, high-frequency share)",
                        ["head", "max_Δ A(Δ)", "high-frequency share"], [list(r) for r in pfh.top(10)]))
    tables.append(Table("base bounds (Men et al. 2024; Liu et al. 2023)",
                        ["layer type", "base", "B(m) ≥ 0 for m < L", "first m with B(m) < 0", "critical dim"],
                        [[t, b, s, fn, cd] for t, b, s, fn, cd in zip(bounds.layer_types, bounds.bases,
                                                                       bounds.satisfied, bounds.first_negative,
                                                                       bounds.critical_dim)]))
    notes = [say(k, e) for k, e in ests + long_ests if e.noisy]
    for t, row in summ.items():
        lo, hi = row.get(f"q_lowest_{fraction}"), row.get(f"q_highest_{fraction}")
        if lo is not None and hi is not None:
            notes.append(f"{t}: {100 * lo:.1f}% of query norm in the lowest {fraction:g} of frequencies, "
                         f"{100 * hi:.1f}% in the highest {fraction:g} (Barbero et al. found most norm in the "
                         "lowest frequencies in Gemma 7B and Llama 3.1 8B).")
    if usage.decomposition is not None:
        notes.append(f"frequency decomposition reproduces the attention scores to max |error| = "
                     f"{usage.decomposition.max_abs_error:.2e}.")
    notes.append(f"bounds checked up to length {bounds.length}; minimum base for that length and d_rot = "
                 f"{bounds.rotary_dim}: {bounds.min_base if bounds.min_base is None else f'{bounds.min_base:.3g}'}.")
    L = ctx.model.cfg.n_layers
    hooks = ([f"blocks.{l}.attn.hook_rot_q" for l in range(L)] + [f"blocks.{l}.attn.hook_rot_k" for l in range(L)]
             + [f"blocks.{l}.attn.hook_attn_scores" for l in range(L)])
    data = {"usage": usage.to_json(), "band_ablation": abl.to_json(), "positional_frequency_heads": pfh.to_json(),
            "base_bounds": bounds.to_json(),
            "ci": {k: e.to_json() for k, e in ests + long_ests}, "groups": groups_data, "long": long_data,
            "band_ablation_long": None if long_abl is None else long_abl.to_json(),
            "long_base_bounds": None if long_bounds is None else {
                "length": long_bounds.length, "bases": long_bounds.bases, "satisfied": long_bounds.satisfied,
                "first_negative": long_bounds.first_negative, "min_base": long_bounds.min_base},
            "data": describe(ctx, "rope", texts),
            "data_long": describe(ctx, "rope_long", long_texts) if long_texts else None}
    return SectionOutput(data=data, figures=figs, tables=tables, notes=notes, hooks=hooks)
