"""Section ``heads``: positional heads (``interp.heads``): previous-token, self, first-token,
offset-k, duplicate-token and induction scores (TransformerLens ``head_detector`` "mul" scores
Σ(A ⊙ P)/ΣA), relative-distance profiles A(Δ), the position-versus-content control on random
tokens, and a rule-based classification with its evidence (Olsson et al. 2022)."""

from __future__ import annotations

from interp.reports._registry import ReportContext, SectionOutput, Table, section
from interp.reports.sections._util import CI_COLUMNS, ci_rows, head_map_estimates, head_scan


@section("heads", "Positional heads",
         "Per-head previous-token, self, first-token, offset-k, duplicate-token and induction scores "
         "(mean Σ(A⊙P)/ΣA over prompts), A(Δ) curves with the random-token control, head classes.",
         requires=("interp.heads",), order=40)
def run(ctx: ReportContext) -> SectionOutput:
    from interp.heads import attention_viewer

    top = int(ctx.options.get("top", 10))
    res = head_scan(ctx).heads
    figs = [res.plot("previous_token"), res.plot("induction", control="repeated")
            if res.repeated_scores is not None else res.plot("induction"),
            res.plot("first_token") if "first_token" in res.score_names else res.plot_classes(),
            res.plot_offsets(), res.plot_classes()]
    from interp.reports.sections._data import describe, draw, is_toy
    from interp.stats import split_half_map

    ests = []
    reliability = {}
    for score in ("previous_token", "first_token", "duplicate_token", "induction"):
        if score not in res.score_names:
            continue
        i = res.score_names.index(score)
        pp = res.per_prompt[..., i]
        ests += head_map_estimates(pp, res.top(3, score), seed=ctx.seed, what=f"{score} of ")
        reliability[score] = split_half_map(pp, seed=ctx.seed)
    ind_note = None
    if not is_toy(ctx) and ctx.options.get("induction_words", True):
        from interp import datasets
        from interp.heads import positional_heads

        words = [p.text for p in datasets.prompts("induction")]
        ind = positional_heads(ctx.model, words, max_offset=1, prepend_bos=ctx.prepend_bos, batch_size=8,
                               random_control=False, induction_control=False, seed=ctx.seed)
        j = ind.score_names.index("induction")
        ests += head_map_estimates(ind.per_prompt[..., j], ind.top(3, "induction"), seed=ctx.seed,
                                   what="induction on repeated words, ")
        reliability["induction (repeated words)"] = split_half_map(ind.per_prompt[..., j], seed=ctx.seed)
        ind_note = (f"induction on {len(words)} bundled repeated-word prompts (natural text, "
                    f"interp.datasets 'induction'): top head {ind.top(1, 'induction')[0][0]}.")
    tables = [Table(f"top head scores with 95% bootstrap intervals over prompts", CI_COLUMNS, ci_rows(ests)),
              Table("split-half reliability of each score map (Pearson r of the per-head means of two random "
                    "halves of the prompts; Spearman–Brown 2r/(1+r))", ["score", "r", "Spearman–Brown", "heads"],
                    [[k, v["r"], v["spearman_brown"], v["n_entries"]] for k, v in reliability.items()])]
    for score in res.score_names:
        control = "repeated" if score == "induction" and res.repeated_scores is not None else "text"
        rows = [[name, v] for name, v in res.top(min(top, 5), score, control=control)]
        tables.append(Table(f"top heads by {score} ({control})", ["head", score], rows))
    roles = [c for c in res.classes if c.label != "other"]
    inert: set[str] = set()
    if is_toy(ctx):
        from interp.reports.sections.planted import inert_heads

        inert = inert_heads(ctx.model)
        roles = [c for c in roles if c.name not in inert]
    tables.append(Table("head classes (heads with a role)", ["head", "class", "roles", "positional", "evidence"],
                        [[c.name, c.label, ", ".join(c.roles), c.positional,
                          ", ".join(f"{k}={v:.2f}" for k, v in c.evidence.items())] for c in roles[:60]]))
    # attention viewer with token labels on the first prompt for the strongest positional heads
    view = [res.top(1, "previous_token")[0][0]]
    ind = res.top(1, "induction", control="repeated" if res.repeated_scores is not None else "text")[0][0]
    if ind not in view:
        view.append(ind)
    figs.append(attention_viewer(ctx.model, draw(ctx, "scan")[0][:400], view, prepend_bos=ctx.prepend_bos))
    hooks = [f"blocks.{l}.attn.hook_pattern" for l in range(ctx.model.cfg.n_layers)]
    notes = ([f"inert heads (‖W_V W_O‖ < 2% of the largest; they write ~nothing) get no role: "
              f"{', '.join(sorted(inert))}."] if inert else [])
    notes += [f"{len(roles)} of {len(res.classes)} heads have a positional or copying role "
             f"(threshold {res.params.get('threshold')}); scores from {res.n_prompts} prompts."]
    from interp.stats import describe as say

    notes += [say(name, e) for name, e in ests if e.noisy]
    if ind_note:
        notes.append(ind_note)
    data = res.to_json()
    data["ci"] = {name: e.to_json() for name, e in ests}
    data["split_half"] = reliability
    data["data"] = describe(ctx, "scan", draw(ctx, "scan"))
    return SectionOutput(data=data, figures=figs, tables=tables, notes=notes, hooks=hooks)
