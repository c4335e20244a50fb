"""Section ``rope``: RoPE frequency usage (``interp.rope``).

Chunk k is the 2-D pair rotated at θ_k = base^(−2k/d_rot) (chunk 0 = highest frequency). Usage
(Barbero et al. 2025): mean ‖q^(k)‖, ‖k^(k)‖ per layer and head, and the bound
|q^(k)·k^(k)| ≤ ‖q^(k)‖‖k^(k)‖; the exact per-chunk decomposition of the attention logits (sums to
``hook_attn_scores``); p-RoPE-style band ablation (rotation removed from, or zeroing of, the
highest / lowest quarter of chunks) with the loss and positional-score changes; positional score
against high-frequency share; Men et al. 2024's B(m) ≥ 0 check and Liu et al. 2023's critical
dimension.
"""

from __future__ import annotations

from typing import Any

from interp.reports._registry import ReportContext, SectionOutput, SectionSkipped, Table, section


@section("rope", "RoPE frequency usage",
         "Query/key norm per rotary chunk, layer and head (Barbero et al. 2025), the exact frequency "
         "decomposition of attention logits, band ablation of the highest/lowest quarter of frequencies, "
         "positional heads by frequency, and the base bounds B(m) (Men et al. 2024).",
         requires=("interp.rope",), order=50)
def run(ctx: ReportContext) -> SectionOutput:
    from interp import rope
    from interp.spec import NoRotaryError

    fraction = float(ctx.options.get("rope_fraction", 0.25))
    try:
        usage = rope.frequency_usage(ctx.model, ctx.texts, prepend_bos=ctx.prepend_bos, batch_size=4, decompose=True)
    except NoRotaryError as e:
        raise SectionSkipped(str(e)) from None
    abl = rope.band_ablation(ctx.model, ctx.texts, fraction=fraction, prepend_bos=ctx.prepend_bos, batch_size=4)
    pfh = rope.positional_frequency_heads(ctx.model, ctx.texts, fraction=fraction, prepend_bos=ctx.prepend_bos,
                                          batch_size=4)
    bounds = rope.base_bounds(ctx.model)
    figs: list[Any] = [usage.plot("q"), usage.plot("k")]
    top_heads = usage.top(3, fraction)
    if top_heads:
        name = top_heads[0][0]
        l, h = (int(x) for x in name.lstrip("L").split("H"))
        figs.append(usage.plot_profile(l, h))
    if usage.decomposition is not None:
        figs.append(usage.decomposition.plot())
    figs += [abl.plot(), abl.plot_heads(), pfh.plot(), bounds.plot()]

    summ = usage.summary(fraction)
    tables = [Table(f"share of query/key norm in the lowest and highest {fraction:g} of chunks, per layer type",
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
    notes = []
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
            "base_bounds": bounds.to_json()}
    return SectionOutput(data=data, figures=figs, tables=tables, notes=notes, hooks=hooks)
