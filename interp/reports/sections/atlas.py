"""Section ``atlas``: every head's role, sink status and RoPE frequency use on one task, joined
with the task's circuit, with causal checks (:func:`interp.atlas`).

Opt-in (``interp report --only atlas``; ``interp atlas MODEL`` writes the interactive view with
per-head cards). Options: ``task`` (``"ioi"`` default on language models, ``"toy"`` on zoo
models, ``"greater-than"``, ``"induction"``), ``n`` (examples), ``edges`` (circuit size),
``probes`` (default true).
"""

from __future__ import annotations

from typing import Any

from interp.reports._registry import ReportContext, SectionOutput, Table, section


@section("atlas", "Mechanism atlas",
         "Per head of the task's circuit: role (previous-token, offset-k, induction, sink, content; inert when "
         "its output weights are zero), α₀ and active/dormant status, the rotary band carrying its score, "
         "node score and edges (Q/K/V-composition); band-ablation and sink-removal checks, measured against "
         "the atlas's prediction.",
         requires=("circuits", "probes"), default=False, order=75)
def run(ctx: ReportContext) -> SectionOutput:
    from interp.atlas import atlas

    o = ctx.options
    a = atlas(ctx.model, o.get("task"), n=o.get("n"), n_edges=o.get("edges"), probes=bool(o.get("probes", True)),
              seed=ctx.seed, prepend_bos=ctx.prepend_bos)
    from interp.atlas._view import class_map

    tables = [Table("heads of the circuit", ["head", "label", "tags", "node score", "α₀", "high-frequency share"],
                    a.summary())]
    rows = []
    for c in a.checks:
        for k, v in c["measured"].items():
            p = c["predicted"].get(k)
            rows.append([c["head"], c["kind"], c["band"], k, v, "" if p is None else p,
                         "" if p is None else ("yes" if c["agrees"][k] else "no")])
    if rows:
        tables.append(Table(f"causal checks (tolerance {a.params['tolerance']})",
                            ["head", "check", "band", "quantity", "measured", "predicted", "agrees"], rows))
    if a.probes:
        tables.append(Table("position probes per layer", ["hook", a.probes[0]["metric"], "control", "selectivity",
                                                          "decodable"],
                            [[r["hook"], r["score"], r["control"], r["selectivity"], r["decodable"]] for r in a.probes]))
    notes = [f"{a.task['name']}: {a.task['n']} examples, {a.task['method']} at {a.task['granularity']} granularity, "
             f"{a.task['ablation']} ablation; circuit of {a.params['n_edges']} edges, faithfulness f = "
             f"{a.faithfulness:.3f}. Hover a node for its card; `interp atlas` writes the clickable view."]
    data: dict[str, Any] = a.to_json()
    return SectionOutput(data=data, figures=[a.plot(), class_map(a)], tables=tables, notes=notes)
