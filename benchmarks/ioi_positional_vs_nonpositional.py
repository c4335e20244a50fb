"""Headline comparison: positional (span) vs non-positional circuits on IOI with SmolLM2.

Haklay et al. (2025) claim positional circuits reach the same faithfulness with far fewer
(concrete) edges than non-positional ones. This script reproduces the comparison on
SmolLM2-135M-Instruct:

1. attribution (EAP by default, or EAP-IG) on an *attribution split* of IOI prompts
   (``circuits.tasks.ioi``: ABBA and BABA, "ABC" counterfactuals, logit difference IO − S) at
   span granularity (the task's schema: one span per template slot / literal, BOS its own) and
   at granularity ``"none"`` (plain EAP summed over positions);
2. greedy circuits at the MIB sizes (0.1 … 100 % of each graph's abstract edges);
3. faithfulness of every circuit by real patching on a held-out *evaluation split*
   (counterfactual "ABC" ablation by default; BOS never ablated), x = average concrete edges per
   example; CPR / CMD; concrete edges needed for f ≥ 0.8.

Writes ``benchmarks/results/ioi_positional_vs_nonpositional.json`` and ``.html`` (curves + the
smallest positional circuit with f ≥ 0.8). Run::

    .venv/bin/python benchmarks/ioi_positional_vs_nonpositional.py [--n-attr 16 --n-eval 16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-attr", type=int, default=16)
    ap.add_argument("--n-eval", type=int, default=16)
    ap.add_argument("--method", default="eap", choices=["eap", "eap-ig"])
    ap.add_argument("--ablation", default="counterfactual", choices=["counterfactual", "mean", "zero"])
    ap.add_argument("--extra-sizes", default="0.0005,0.03,0.3",
                    help="fractions evaluated in addition to the MIB grid (comma separated)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is far faster on a shared, oversubscribed 2-core box)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import circuits
    from circuits.tasks import ioi
    from circuits.circuit import Circuit
    from circuits.curves import MIB_GRID, faithfulness_curve, plot_curves
    from circuits.faithfulness import FaithfulnessEvaluator
    from interp import load_model
    from interp.results import to_jsonable

    t_all = time.perf_counter()
    model = load_model(args.model)
    src = "circuits.tasks.ioi"
    attr_task = ioi(model, n=args.n_attr, seed=0)
    eval_task = ioi(model, n=args.n_eval, seed=1)
    print(f"IOI from {src}: {len(attr_task)} attribution + {len(eval_task)} evaluation prompts", flush=True)
    timings: dict[str, float] = {}
    graphs = {}
    for gran in ("span", "none"):
        t = time.perf_counter()
        graphs[gran] = circuits.attribute(model, attr_task, method=args.method, granularity=gran)
        timings[f"attribute_{gran}_s"] = time.perf_counter() - t
        print(f"attribution ({gran}): {timings[f'attribute_{gran}_s']:.1f}s, {graphs[gran]}", flush=True)
    t = time.perf_counter()
    ev = FaithfulnessEvaluator(model, eval_task, ablation=args.ablation,
                               ablation_prompts=attr_task.clean if args.ablation == "mean" else None)
    timings["evaluator_s"] = time.perf_counter() - t
    print(f"evaluation split: M(N) = {float(ev.m_full.mean()):.3f}, M(∅) = {float(ev.m_empty.mean()):.3f} "
          f"({timings['evaluator_s']:.1f}s)", flush=True)
    sizes = sorted(set(MIB_GRID) | {float(x) for x in args.extra_sizes.split(",") if x})
    curves = {}
    for gran, label in (("span", "positional (span)"), ("none", "non-positional")):
        t = time.perf_counter()
        curves[gran] = faithfulness_curve(model, graphs[gran], evaluator=ev, sizes=sizes, label=label)
        timings[f"curve_{gran}_s"] = time.perf_counter() - t
        c = curves[gran]
        print(f"\n{label}: {timings[f'curve_{gran}_s']:.1f}s  CPR={c.cpr:.3f} CMD={c.cmd:.3f} "
              f"f>=0.8 at {c.edges_for(0.8)} concrete edges (interpolated {c.edges_for(0.8, interpolate=True)})",
              flush=True)
        print(c.table(), flush=True)
    # the smallest positional circuit with f >= 0.8, for the figure
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for gran, c in curves.items():
        summary[gran] = {
            "label": c.label, "cpr": c.cpr, "cmd": c.cmd,
            "concrete_edges_for_f08": c.edges_for(0.8),
            "concrete_edges_for_f08_interpolated": c.edges_for(0.8, interpolate=True),
            "abstract_edges_for_f08": c.abstract_edges_for(0.8),
            "total_abstract_edges": c.total_edges, "total_concrete_edges": c.total_concrete,
        }
    # both curves on the MIB grid only (areas comparable with MIB's definition of the grid)
    fig = plot_curves([curves["span"], curves["none"]],
                      title=f"IOI on {args.model}: positional (span) vs non-positional circuits "
                            f"({args.method.upper()}, {args.ablation} ablation, {len(eval_task)} held-out prompts)")
    html = [fig.to_html(full_html=False, include_plotlyjs=True)]
    n08 = curves["span"].abstract_edges_for(0.8)
    if n08 is not None:
        i = curves["span"].n_edges.index(n08)
        from circuits.select import circuit_from_order, greedy_order

        order = greedy_order(graphs["span"], curves["span"].n_requested[i])
        circ: Circuit = circuit_from_order(graphs["span"], order, len(order), {"method": "greedy"})
        html.append(circ.plot(title=f"Smallest positional IOI circuit with f ≥ 0.8 ({circ.n_edges} span edges)")
                    .to_html(full_html=False, include_plotlyjs=False))
        summary["span"]["circuit_f08_top_edges"] = circ.top(15)
    timings["total_s"] = time.perf_counter() - t_all
    result = {
        "model": args.model, "task_source": src, "n_attr": len(attr_task), "n_eval": len(eval_task),
        "method": args.method, "ablation": args.ablation, "prepend_bos": bool(ev.prepend_bos),
        "bos_ablated": False, "threads": args.threads, "timings": timings, "summary": summary,
        "m_full": float(ev.m_full.mean()), "m_empty": float(ev.m_empty.mean()),
        "curves": {g: c.to_json() for g, c in curves.items()},
        "graphs_meta": {g: to_jsonable(gr.meta) for g, gr in graphs.items()},
    }
    stem = "ioi_positional_vs_nonpositional" + ("" if (args.method, args.ablation) == ("eap", "counterfactual")
                                                else f"_{args.method}_{args.ablation}")
    (out / f"{stem}.json").write_text(json.dumps(to_jsonable(result), indent=1))
    (out / f"{stem}.html").write_text(
        "<html><head><meta charset='utf-8'><title>IOI positional vs non-positional</title></head><body>"
        + "".join(html) + "</body></html>")
    print("\nsummary:", json.dumps(to_jsonable(summary | {"timings": timings}), indent=1))
    print(f"wrote {out / stem}.json and .html")


if __name__ == "__main__":
    main()
