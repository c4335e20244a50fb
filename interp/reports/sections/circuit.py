"""Section ``circuit``: a position-aware IOI circuit and its faithfulness curve (``circuits``).

EAP edge scores (z*_u − z_u)·∂M/∂(input of v) with crossing edges inside each head computed
exactly (Haklay et al. 2025), at schema-span granularity ("positional") and summed over positions
("none", the non-positional baseline); circuits grown greedily from the logits; faithfulness by
real patching with counterfactual (ABC) ablation, BOS never ablated, normalised
f = (M(C) − M(∅)) / (M(N) − M(∅)) (MIB), plotted against average concrete edges per example,
with CPR (area under f) and CMD (area under |1 − f|).
"""

from __future__ import annotations

from typing import Any

from interp.reports._core import ReportContext, SectionOutput, SectionSkipped, Table, section

# a short grid (fractions of abstract edges) keeps the default report fast; the full MIB grid is
# circuits.curves.MIB_GRID
REPORT_GRID = (0.002, 0.01, 0.05, 0.2, 1.0)


@section("circuit", "Position-aware IOI circuit",
         "EAP attribution on IOI (ABBA and BABA, ABC counterfactuals, logit difference IO − S) over schema "
         "spans versus the non-positional baseline; faithfulness curves by real patching, CPR/CMD, and the "
         "selected positional circuit as a graph.", requires=("circuits",), order=70)
def run(ctx: ReportContext) -> SectionOutput:
    import circuits
    from circuits import tasks
    from circuits.faithfulness import FaithfulnessEvaluator

    if ctx.model_name.startswith("toy-"):
        raise SectionSkipped(f"IOI needs a natural-language model; {ctx.model_name} is a toy model (its planted "
                             "circuits are tested in tests/test_attribution.py and the circuits notebook)")
    n = int(ctx.options.get("ioi_n", 6))
    method = str(ctx.options.get("method", "eap"))
    grid = tuple(ctx.options.get("grid", REPORT_GRID))
    task = tasks.ioi(ctx.model, n=n, seed=ctx.seed, prepend_bos=ctx.prepend_bos)
    g_span = circuits.attribute(ctx.model, task, granularity="span", method=method, batch_size=4)
    g_none = circuits.attribute(ctx.model, task, granularity="none", method=method, batch_size=4)
    ev = FaithfulnessEvaluator(ctx.model, task, batch_size=4, seed=ctx.seed, n_boot=200)
    c_span = circuits.faithfulness_curve(ctx.model, g_span, sizes=grid, evaluator=ev, label="span (positional)")
    c_none = circuits.faithfulness_curve(ctx.model, g_none, sizes=grid, evaluator=ev, label="none (non-positional)")
    figs: list[Any] = [circuits.plot_curves([c_span, c_none], title="IOI faithfulness vs circuit size — "
                                                                   f"{ctx.model_name}")]
    k = c_span.abstract_edges_for(0.8) or max(c_span.n_edges)
    circ = circuits.select(g_span, n_edges=int(min(k, 200)))
    figs.append(circ.plot(title=f"IOI positional circuit ({circ.n_edges} span edges) — {ctx.model_name}"))
    figs.append(g_span.plot("nodes"))
    curve_rows = []
    for c in (c_span, c_none):
        for i in range(len(c.f)):
            curve_rows.append([c.label, c.n_edges[i], c.concrete_edges[i], c.f[i], c.f_lo[i], c.f_hi[i], c.hard[i]])
    summary = []
    for c in (c_span, c_none):
        e = c.edges_for(0.8)
        summary.append([c.label, c.cpr, c.cmd, "never" if e is None else round(e, 1), c.total_edges])
    top_edges = [[e.kind, f"{e.sender} @ {e.kpos if e.kind != 'same' else e.pos}", f"{e.receiver} @ {e.pos}", e.score]
                 for e in g_span.top_edges(10)]
    tables = [Table("positional versus non-positional circuits", ["granularity", "CPR (↑)", "CMD (↓)",
                                                                  "concrete edges / example for f ≥ 0.8",
                                                                  "abstract edges in graph"], summary),
              Table("faithfulness curve points", ["curve", "abstract edges", "concrete edges / example", "f",
                                                  "f 95% lo", "f 95% hi", "hard"], curve_rows),
              Table("top span edges by |EAP score|", ["kind", "sender @ span", "receiver @ span", "score"], top_edges)]
    notes = [f"IOI: {len(task)} examples (ABBA/BABA alternating), counterfactual ablation, method {method}, "
             f"BOS {'prepended' if task.prepend_bos else 'not prepended'}; curve grid {list(grid)} of abstract edges."]
    data = {"task": {"name": task.name, "n": len(task), "meta": task.meta},
            "curve_span": c_span.to_json(), "curve_none": c_none.to_json(), "circuit": circ.to_json(),
            "graph_span_top_edges": top_edges}
    return SectionOutput(data=data, figures=figs, tables=tables, notes=notes)
