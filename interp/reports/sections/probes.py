"""Section ``probes``: linear probes for absolute position at every layer (``probes`` package).

Ridge regression of the token index t from ``hook_embed`` and each ``blocks.{l}.hook_resid_post``
(BOS excluded), standardised on the training folds, grouped k-fold CV by prompt (no prompt on
both sides); R² and MAE (positions) with t-intervals over folds, beside the controls (Hewitt &
Liang 2019 control task, shuffled labels, random directions). Haviv et al. 2022: position is
decodable even without positional encodings; in RoPE models position is not added to the
residual stream, so what the probe finds was computed by the model.
"""

from __future__ import annotations

from interp.reports._registry import ReportContext, SectionOutput, SectionSkipped, Table, section


@section("probes", "Position probes",
         "Ridge probes decoding the absolute token position from the embeddings and every layer's residual "
         "stream; grouped-by-prompt cross-validation, R² and MAE with 95% intervals, and control baselines.",
         requires=("probes",), order=60)
def run(ctx: ReportContext) -> SectionOutput:
    import probes

    texts = ctx.texts
    if len(texts) < 3:
        raise SectionSkipped(f"position probes need at least 3 prompts for grouped cross-validation, got {len(texts)}")
    folds = min(5, len(texts))
    data = probes.collect(ctx.model, texts, prepend_bos=ctx.prepend_bos, batch_size=4)
    target = probes.absolute_position(data, kind="regression", exclude_bos=True)
    res = probes.probe_sweep(data, target, folds=folds, seed=ctx.seed)
    figs = [res.plot()]
    metrics = [m for m in ("mae",) if m in res.scores]
    figs += [res.plot(m) for m in metrics]
    rows = []
    for r in res.table():
        row = [r["label"], r.get(res.primary)]
        row += [r.get("mae"), r.get(f"control_task.{res.primary}"), r.get("selectivity")]
        rows.append(row)
    best = res.top(1)[0]
    notes = [f"{len(texts)} prompts, {folds}-fold CV grouped by prompt; best layer {best[0]} "
             f"({res.primary} = {best[1]:.3f})."]
    tables = [Table(f"probe for absolute position ({res.primary} is the primary metric)",
                    ["hook", res.primary, "MAE (positions)", f"control task {res.primary}", "selectivity"], rows)]
    return SectionOutput(data=res.to_json(), figures=figs, tables=tables, notes=notes, hooks=list(res.hooks))
