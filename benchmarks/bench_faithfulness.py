"""Benchmark: faithfulness evaluation by real patching vs a bare forward pass (SmolLM2, IOI).

Measured in one process on the same IOI batch (timings interleaved, best of ``--repeats``):

* baseline: one bare forward pass of the TransformerBridge (``model(tokens, attention_mask)``);
* one faithfulness evaluation of a circuit with a ready :class:`FaithfulnessEvaluator` (mask
  expansion + one patched forward with same-position *and* crossing edges; goal ≤ 3×);
* a standalone ``circuits.faithfulness(...)`` call (ablation run + full run + empty run + circuit
  run, i.e. everything from scratch);
* a full 10-point MIB curve (0.1 … 100 % of the span graph's edges, greedy selection included;
  goal < 2 minutes on the 2-core CPU).

Run: ``.venv/bin/python benchmarks/bench_faithfulness.py [--n 16 --threads 1]``. The machine is
shared: ``--threads 1`` avoids oversubscription (with 2 threads on a busy box a forward pass was
~15× slower); the thread count is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description="faithfulness benchmark")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import circuits
    from circuits.tasks import ioi
    from circuits.curves import MIB_GRID, faithfulness_curve
    from circuits.faithfulness import FaithfulnessEvaluator
    from interp import load_model

    model = load_model(args.model)
    task, src = ioi(model, n=args.n, seed=0), "circuits.tasks.ioi"
    tok, mask = task.clean.tokens, task.clean.attention_mask
    print(f"IOI ({src}): {tuple(tok.shape)} tokens, torch threads = {torch.get_num_threads()}", flush=True)
    graph = circuits.attribute(model, task, granularity="span")
    graph_none = circuits.attribute(model, task, granularity="none")
    c_span = circuits.select(graph, max(1, graph.n_edges() // 100))  # 1 % of edges
    c_none = circuits.select(graph_none, max(1, graph_none.n_edges() // 100))
    t = time.perf_counter()
    ev = FaithfulnessEvaluator(model, task)
    t_ev = time.perf_counter() - t

    fwd, one_span, one_none, alone = [], [], [], []
    for _ in range(args.repeats):
        with torch.no_grad():
            t = time.perf_counter()
            model(tok, attention_mask=mask)
            fwd.append(time.perf_counter() - t)
        t = time.perf_counter()
        r_span = ev(c_span)
        one_span.append(time.perf_counter() - t)
        t = time.perf_counter()
        r_none = ev(c_none)
        one_none.append(time.perf_counter() - t)
    t = time.perf_counter()
    circuits.faithfulness(model, c_span, task)
    alone.append(time.perf_counter() - t)
    t = time.perf_counter()
    curve = faithfulness_curve(model, graph, evaluator=ev, sizes=MIB_GRID)
    t_curve = time.perf_counter() - t
    t = time.perf_counter()
    faithfulness_curve(model, graph, task, sizes=MIB_GRID)
    t_curve_scratch = time.perf_counter() - t
    base = min(fwd)
    rows = [
        ("bare forward pass (baseline)", base),
        ("one evaluation, span circuit (1 % edges, evaluator ready)", min(one_span)),
        ("one evaluation, non-positional circuit (1 % edges)", min(one_none)),
        ("evaluator setup (ablation run + full run + empty run)", t_ev),
        ("standalone circuits.faithfulness() call", min(alone)),
        ("10-point MIB curve, span graph (evaluator ready)", t_curve),
        ("10-point MIB curve from scratch (incl. setup)", t_curve_scratch),
    ]
    print(f"\nSmolLM2-135M, IOI batch {tuple(tok.shape)}, {torch.get_num_threads()} torch thread(s), "
          f"best of {args.repeats}\n")
    print("| operation | seconds | × forward |")
    print("| --- | --- | --- |")
    for name, s in rows:
        print(f"| {name} | {s:.2f} | {s / base:.1f} |")
    print(f"\nspan circuit: {r_span}\nnon-positional circuit: {r_none}\ncurve: {curve}")


if __name__ == "__main__":
    main()
