"""Section ``heads``: positional heads (``interp.heads``): previous-token, self, first-token,
offset-k, duplicate-token and induction scores (TransformerLens ``head_detector`` "mul" scores
Σ(A ⊙ P)/ΣA), relative-distance profiles A(Δ), the position-versus-content control on random
tokens, and a rule-based classification with its evidence (Olsson et al. 2022)."""

from __future__ import annotations

from interp.reports._registry import ReportContext, SectionOutput, Table, section
from interp.reports.sections._util import head_scan


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
    tables = []
    for score in res.score_names:
        control = "repeated" if score == "induction" and res.repeated_scores is not None else "text"
        rows = [[name, v] for name, v in res.top(min(top, 5), score, control=control)]
        tables.append(Table(f"top heads by {score} ({control})", ["head", score], rows))
    roles = [c for c in res.classes if c.label != "other"]
    tables.append(Table("head classes (heads with a role)", ["head", "class", "roles", "positional", "evidence"],
                        [[c.name, c.label, ", ".join(c.roles), c.positional,
                          ", ".join(f"{k}={v:.2f}" for k, v in c.evidence.items())] for c in roles[:60]]))
    # attention viewer with token labels on the first prompt for the strongest positional heads
    view = [res.top(1, "previous_token")[0][0]]
    ind = res.top(1, "induction", control="repeated" if res.repeated_scores is not None else "text")[0][0]
    if ind not in view:
        view.append(ind)
    figs.append(attention_viewer(ctx.model, ctx.texts[0][:400], view, prepend_bos=ctx.prepend_bos))
    hooks = [f"blocks.{l}.attn.hook_pattern" for l in range(ctx.model.cfg.n_layers)]
    notes = [f"{len(roles)} of {len(res.classes)} heads have a positional or copying role "
             f"(threshold {res.params.get('threshold')})."]
    return SectionOutput(data=res.to_json(), figures=figs, tables=tables, notes=notes, hooks=hooks)
