"""Section ``probes``: linear probes for absolute position at every layer (``probes`` package).

Ridge regression of the token index t from ``hook_embed`` and each ``blocks.{l}.hook_resid_post``
(BOS excluded), standardised on the training folds, grouped k-fold CV by prompt (no prompt on
both sides); R² and MAE (positions) with 95 % bootstrap intervals over prompts (out-of-fold
predictions resampled by prompt), beside the controls (Hewitt & Liang 2019 control task,
shuffled labels, random directions). Split-half stability: the best layer's probe refitted on
each of two random halves of the prompts. Haviv et al. 2022: position is decodable even without
positional encodings; in RoPE models position is not added to the residual stream, so what the
probe finds was computed by the model.
"""

from __future__ import annotations

import torch

from interp.reports._registry import ReportContext, SectionOutput, SectionSkipped, Table, section


@section("probes", "Position probes",
         "Ridge probes decoding the absolute token position from the embeddings and every layer's residual "
         "stream; grouped-by-prompt cross-validation, R² and MAE with 95% bootstrap intervals over prompts, "
         "split-half stability, and control baselines.",
         requires=("probes",), order=60)
def run(ctx: ReportContext) -> SectionOutput:
    import probes

    from interp.reports.sections._data import describe, draw
    from interp.reports.sections._util import CI_COLUMNS, ci_rows
    from interp.stats import Estimate
    from interp.stats import describe as say

    texts = draw(ctx, "probes")
    if len(texts) < 3:
        raise SectionSkipped(f"position probes need at least 3 prompts for grouped cross-validation, got {len(texts)}")
    folds = min(5, len(texts))
    n_boot = int(ctx.options.get("probe_n_boot", 200))
    data = probes.collect(ctx.model, texts, prepend_bos=ctx.prepend_bos, batch_size=8)
    target = probes.absolute_position(data, kind="regression", exclude_bos=True)
    res = probes.probe_sweep(data, target, folds=folds, seed=ctx.seed, ci="bootstrap", n_boot=n_boot)
    figs = [res.plot()]
    metrics = [m for m in ("mae",) if m in res.scores]
    figs += [res.plot(m) for m in metrics]
    prim = res.primary
    # split halves of the prompts: refit the probe at the best hook on each half
    best_label, best_val = res.top(1)[0]
    bi = res.labels.index(best_label)
    best_hook = res.hooks[bi]
    n = data.n_prompts
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(ctx.seed + 13))
    halves = []
    for part in (perm[: n // 2], perm[n // 2:]):
        keep = torch.zeros(n, dtype=torch.bool)
        keep[part] = True
        sub = data.select(keep[data.groups])
        st = probes.absolute_position(sub, kind="regression", exclude_bos=True)
        hr = probes.probe_sweep(sub, st, hooks=[best_hook], folds=min(5, len(part)), seed=ctx.seed)
        halves.append(float(hr.mean()[0]))
    ests = []
    rows = []
    mean = res.mean()
    for i, r in enumerate(res.table()):
        lo, hi = (float(x) for x in res.ci[prim][i])
        e = Estimate(float(mean[i]), lo, hi, n, halves=tuple(halves) if i == bi else None, n_boot=n_boot,
                     abs_tol=0.05, rel_tol=0.5)
        ests.append((f"{prim} at {r['label']}", e))
        rows.append([r["label"], r.get(prim), f"[{lo:.3f}, {hi:.3f}]", r.get("mae"), r.get(f"control_task.{prim}"),
                     r.get("selectivity"), "no" if e.noisy else "yes"])
    best = dict(ests)[f"{prim} at {best_label}"]
    notes = [f"{n} prompts of ≤ {int(data.lengths.max())} tokens, {folds}-fold CV grouped by prompt, "
             f"intervals from {n_boot} bootstrap resamples of prompts.",
             say(f"best-layer probe {prim} ({best_label})", best)]
    noisy = [name for name, e in ests if e.noisy]
    if noisy:
        notes.append("too noisy to read (95% CI half-width > 0.05, or the split halves disagree by more than "
                     f"2·half-width + 0.05): {', '.join(noisy)}.")
    tables = [Table(f"best layer: probe {prim} with its interval and split halves", CI_COLUMNS,
                    ci_rows([(f"{prim} at {best_label}", best)])),
              Table(f"probe for absolute position ({prim} is the primary metric)",
                    ["hook", prim, "95% CI", "MAE (positions)", f"control task {prim}", "selectivity", "readable"],
                    rows)]
    out = res.to_json()
    out["ci_best"] = {"hook": best_label, **best.to_json()}
    out["data"] = describe(ctx, "probes", texts)
    return SectionOutput(data=out, figures=figs, tables=tables, notes=notes, hooks=list(res.hooks))
