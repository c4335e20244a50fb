"""Benchmark: faithfulness evaluation by real patching vs a bare forward pass (SmolLM2, IOI).

Measured in one process on the same IOI batch (timings interleaved, best of ``--repeats``):

* baseline: one bare forward pass of the TransformerBridge (``model(tokens, attention_mask)``);
* one faithfulness evaluation of a circuit with a ready :class:`FaithfulnessEvaluator` (mask
  expansion + one patched forward with same-position *and* crossing edges; goal ≤ 3×);
* a standalone ``circuits.faithfulness(...)`` call (ablation run + full run + empty run + circuit
  run, i.e. everything from scratch);
* a full 10-point MIB curve (0.1 … 100 % of the span graph's edges, greedy selection included;
  goal < 2 minutes on the 2-core CPU).

Run: ``.venv/bin/python benchmarks/bench_faithfulness.py [--n 16 --threads 1]``; long context
(issue 13): ``--long-tokens 512 2048`` (see :func:`long_context`); a position-granularity circuit
from a top-k graph at long context: ``--long-tokens 512 --position`` (see :func:`long_position`). The machine is
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


def _long_prompt(V: int, bos: int, T: int, seed: int):
    """Random tokens with BOS (batch 1) and its counterfactual: the second half resampled."""
    import torch

    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(100, V, (1, T), generator=g)
    clean[:, 0] = bos
    corrupt = clean.clone()
    corrupt[:, T // 2:] = torch.randint(100, V, (1, T - T // 2), generator=g)
    return clean, corrupt


def long_context(args) -> None:
    """One evaluation of a 1 %-of-edges circuit at long context vs one bare forward pass.

    SmolLM2, batch 1, random tokens with BOS, counterfactual = second half resampled, metric =
    one logit at the last position (as ``bench_attribution_scaling.py``). The circuits are the
    top 1 % of the edges of an EAP graph built on a ``--attr-tokens`` prompt of the same kind:
    non-positional (``none``), and over an 8-span schema (spans = 8 equal parts of the prompt,
    evaluated with the same 8 equal parts of the long prompt). Reported, in one process: time
    (min over ``--repeats``) and peak extra RSS (sampled every 10 ms above the RSS before the
    call) of the bridge's forward (no gradients), of one evaluation with a ready evaluator, and
    the RSS the evaluator holds (the ablation source)."""
    import json

    import torch

    from bench_attribution_scaling import Peak
    import circuits
    from circuits.faithfulness import FaithfulnessEvaluator
    from circuits.metrics import Metric
    from interp import load_model
    from interp.schema import SchemaSpans

    torch.manual_seed(0)
    model = load_model(args.model)
    V = model.original_model.config.vocab_size
    bos = model.tokenizer.bos_token_id
    rows = []

    def data(T: int, seed: int):
        return _long_prompt(V, bos, T, seed)

    def spans8(T: int):
        bounds = torch.linspace(0, T, 9).round().long().tolist()
        return [[(bounds[i], bounds[i + 1]) for i in range(8)]], bounds

    target = 1234
    met = Metric(lambda lg, b: lg[torch.arange(lg.shape[0]), b.last, target], "one_logit")
    Ta = args.attr_tokens
    ca, xa = data(Ta, 0)
    sp, _ = spans8(Ta)
    schema = SchemaSpans(names=[f"s{i}" for i in range(8)], spans=sp, lengths=[Ta], prepend_bos=True,
                         prompts=[""], str_tokens=[[""] * Ta])
    g_none = circuits.attribute(model, ca, xa, met, granularity="none")
    g_span = circuits.attribute(model, ca, xa, met, granularity="span", schema=schema)
    c_none = circuits.select(g_none, max(1, g_none.n_edges() // 100))
    c_span = circuits.select(g_span, max(1, g_span.n_edges() // 100))
    print(f"circuits from EAP at {Ta} tokens: none {c_none.n_edges} of {g_none.n_edges()} edges, "
          f"span {c_span.n_edges} of {g_span.n_edges()}", flush=True)
    for T in args.long_tokens:
        clean, corrupt = data(T, T)
        _, bounds = spans8(T)
        span_index = torch.zeros(1, T, dtype=torch.long)
        for i in range(8):
            span_index[:, bounds[i]: bounds[i + 1]] = i
        fw = []
        for _ in range(args.repeats):
            with torch.no_grad(), Peak() as pk:
                model(clean)
            fw.append((pk.seconds, pk.extra))
        base_t, base_m = min(f[0] for f in fw), min(f[1] for f in fw)
        rows.append({"T": T, "run": "bridge forward (no grad)", "seconds": base_t, "extra_bytes": base_m})
        print(f"T={T}: forward {base_t:.2f}s +{base_m / 2**20:.0f} MiB", flush=True)
        with Peak() as pk:
            ev = FaithfulnessEvaluator(model, clean, corrupt, met, span_index=span_index, n_boot=0)
        rows.append({"T": T, "run": "evaluator setup (ablation + full + empty runs)", "seconds": pk.seconds,
                     "ratio_time": pk.seconds / base_t, "extra_bytes": pk.extra})
        print(f"  setup {pk.seconds:.2f}s ({pk.seconds / base_t:.1f}x), peak +{pk.extra / 2**20:.0f} MiB", flush=True)
        for name, c in (("none", c_none), ("span", c_span)):
            ts = []
            for _ in range(args.repeats):
                with Peak() as pk:
                    r = ev(c)
                ts.append((pk.seconds, pk.extra))
            t, m = min(x[0] for x in ts), min(x[1] for x in ts)
            row = {"T": T, "run": f"one evaluation, {name} circuit 1 % ({c.n_edges} edges)", "seconds": t,
                   "ratio_time": t / base_t, "extra_bytes": m, "f": r.f}
            row["load_avg_1min"] = os.getloadavg()[0]  # other processes share the CPUs
            rows.append(row)
            print(f"  {row['run']}: {t:.2f}s ({t / base_t:.2f}x forward), +{m / 2**20:.0f} MiB, f={r.f:.3f}",
                  flush=True)
        del ev
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "threads": torch.get_num_threads(), "rows": rows}, indent=1))


def long_position(args) -> None:
    """A position-granularity circuit at long context, selected from a top-k graph, evaluated once.

    SmolLM2, batch 1, random tokens with BOS, counterfactual = second half resampled, metric =
    one logit at the last position (as :func:`long_context`). For each ``T``: a top-k EAP graph
    (``store="topk"``, ``k = --k``) on the *same* ``T``-token prompt (a position circuit lives on
    its prompt's positions); the circuit = greedy selection of ``--position-edges`` edges from it
    (default: ``k``; a position graph has ``~L·H·3·T²/2`` crossing edges, so 1 % of them is far
    more than any top-k store keeps: the circuit's share of the graph is printed). With
    ``--graph-tokens Ta < T`` the graph is built on a ``Ta``-token prompt of the same kind (position
    attribution at 2 048 tokens needs more memory than the benchmark machine allows) and the
    circuit is moved to the last ``Ta − 1`` positions of the ``T``-token prompt (BOS stays at 0),
    kept sparse. Reported, in
    one process: time and peak extra RSS of the attribution, the selection, one bare bridge forward
    (no gradients, min over ``--repeats``), the evaluator setup and one evaluation (min over
    ``--repeats``), and save/load of the circuit's JSON."""
    import json

    import torch

    from bench_attribution_scaling import Peak
    import circuits
    from circuits.circuit import Circuit
    from circuits.faithfulness import FaithfulnessEvaluator
    from circuits.metrics import Metric
    from interp import load_model

    torch.manual_seed(0)
    model = load_model(args.model)
    V = model.original_model.config.vocab_size
    bos = model.tokenizer.bos_token_id
    target = 1234
    met = Metric(lambda lg, b: lg[torch.arange(lg.shape[0]), b.last, target], "one_logit")
    rows = []
    def data(T: int):
        return _long_prompt(V, bos, T, T)

    def shifted(c, T: int):
        """Position p > 0 of a P-position circuit → p + T − P (BOS stays at 0); sparse throughout."""
        P = len(c.positions)
        lut = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(1, P) + (T - P)])
        same = torch.zeros(T, *c.same_pos.shape[1:], dtype=torch.bool)
        same[lut] = c.same_pos
        ci = c.cross_index.clone()
        ci[:, 3], ci[:, 4] = lut[ci[:, 3]], lut[ci[:, 4]]
        return Circuit(same, None, None, None, c.senders, c.receivers, list(range(T)), dict(c.meta),
                       cross_index=ci, cross_values=c.cross_values, cross_shape=(*c.cross_shape[:3], T, T),
                       same_values=c.same_values)

    for T in args.long_tokens:
        clean, corrupt = data(T)

        def row(run, pk, **kw):
            r = {"T": T, "run": run, "seconds": pk.seconds, "extra_bytes": pk.extra,
                 "load_avg_1min": os.getloadavg()[0], **kw}
            rows.append(r)
            print(f"T={T} {run}: {pk.seconds:.2f}s, +{pk.extra / 2**20:.0f} MiB "
                  + " ".join(f"{k}={v}" for k, v in kw.items()), flush=True)
            return r

        Ta = args.graph_tokens or T
        ca, xa = (clean, corrupt) if Ta == T else data(Ta)
        with Peak() as pk:
            top = circuits.attribute(model, ca, xa, met, granularity="position", store="topk", k=args.k)
        row(f"attribution at {Ta} tokens, position, top-k store (k={args.k})", pk, n_graph_edges=top.n_edges())
        n = args.position_edges or args.k
        with Peak() as pk:
            c = circuits.select(top, n)
        row(f"greedy selection of {n} edges", pk, n_edges=c.n_edges, n_cross=c.n_cross,
            share_of_graph=c.n_edges / top.n_edges())
        if Ta != T:  # the same circuit at the end of the longer prompt (BOS stays at 0)
            with Peak() as pk:
                c = shifted(c, T)
            row(f"circuit moved to the last {Ta - 1} positions (+ BOS) of {T}", pk, n_edges=c.n_edges)
        del top
        fw = []
        for _ in range(args.repeats):
            with torch.no_grad(), Peak() as pk:
                model(clean)
            fw.append(pk)
        base = min(fw, key=lambda p: p.seconds)
        base_r = row("bridge forward (no grad)", base)
        with Peak() as pk:
            ev = FaithfulnessEvaluator(model, clean, corrupt, met, n_boot=0)
        row("evaluator setup (ablation + full + empty runs)", pk, ratio_time=pk.seconds / base_r["seconds"])
        ts = []
        for _ in range(args.repeats):
            with Peak() as pk:
                r = ev(c)
            ts.append(pk)
        best = min(ts, key=lambda p: p.seconds)
        row(f"one evaluation, position circuit ({c.n_edges} edges)", best,
            ratio_time=best.seconds / base_r["seconds"], f=r.f, m_circuit=r.m_circuit, m_full=r.m_full,
            m_empty=r.m_empty, peak_extra_max_bytes=max(p.extra for p in ts))
        with Peak() as pk:
            d = c.to_json()
            text = json.dumps(d)
            back = Circuit.from_json(text)
        assert back.equals(c)
        row("circuit to_json + from_json", pk, json_bytes=len(text))
        del ev
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "threads": torch.get_num_threads(), "k": args.k,
                               "rows": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description="faithfulness benchmark")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--long-tokens", type=int, nargs="*", default=None,
                    help="long-context mode: one evaluation of a 1 %% circuit at these lengths (batch 1)")
    ap.add_argument("--attr-tokens", type=int, default=128, help="prompt length of the graph the circuits come from")
    ap.add_argument("--position", action="store_true",
                    help="with --long-tokens: a position circuit from a top-k graph on the same prompt")
    ap.add_argument("--k", type=int, default=100_000, help="--position: edges the top-k graph keeps")
    ap.add_argument("--position-edges", type=int, default=None, help="--position: circuit size (default k)")
    ap.add_argument("--graph-tokens", type=int, default=None,
                    help="--position: build the top-k graph on a prompt this long (default: the same length) "
                         "and move its circuit to the end of the long prompt")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.out is None:
        name = "faithfulness_long_position.json" if args.position else "faithfulness_long.json"
        args.out = str(Path(__file__).parent / "results" / name)

    import torch

    torch.set_num_threads(args.threads)
    if args.long_tokens:
        (long_position if args.position else long_context)(args)
        return
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
