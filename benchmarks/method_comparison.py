"""Attribution methods compared: CPR / CMD, edges for f ≥ 0.8, Spearman vs exact patching, cost.

For every model × task × granularity (positional = the task's schema spans for real models, token
positions for the toys; non-positional = ``"none"``) and every method of
:func:`circuits.attribute` (EAP, EAP-IG, EAP-IG-activations, AtP*, AtP* with GradDrop — label
``atp*+gd`` —, AtP*-IG, clean-corrupted):

* **CPR / CMD** (MIB, Mueller et al. 2025): areas under f and |1 − f| of greedy circuits at the
  ``--sizes`` fractions of the graph's abstract edges (f by real patching on a held-out
  evaluation split, counterfactual ablation, BOS never ablated; x = concrete-edge fraction);
* **edges for f ≥ 0.8**: average concrete edges per example of the smallest circuit on the grid
  reaching f ≥ 0.8 (None when no grid point does);
* **Spearman vs exact**: rank correlation of the method's edge scores with exact patching of a
  subsample of abstract edges (the top ``--n-top`` edges of every method plus ``--n-random``
  random valid edges, seeded; exact = M(edge ablated) − M(clean) on the attribution split);
* **Spearman as in the tests** (toys): the measurement of ``tests/test_attribution_planted.py``
  — node scores (every sender × position) against exact node patching, and the 25 top + 35
  random (seed 0) position edges of EAP-IG against exact edge patching, zero–zero pairs dropped;
  GradDrop scores are magnitudes, so its rows are also given against |exact| (``|.|`` columns);
* **time**: attribution seconds / one HF forward + backward (w.r.t. the input embeddings) on the
  same batch, both measured in this process (min of ``--repeats``).

Also, on SmolLM2 IOI (span granularity): bootstrap stability (:func:`circuits.resample`) —
per-edge selection frequencies of the top-``--stable-k`` circuit and the faithfulness (95 % CI)
of the stable circuit (edges selected in ≥ ``--min-freq`` of the resamples).

Writes ``<out>/method_comparison.json``, ``.md`` (the tables) and ``.html`` (figure). Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/method_comparison.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from circuits.registry import METHODS as _ALL_METHODS  # noqa: E402

#: every gradient method of the registry (exact patching is the reference, not a contender), and
#: AtP* with GradDrop as its own row after AtP*
METHODS = [x for m in _ALL_METHODS if m != "exact" for x in ((m, "atp*+gd") if m == "atp*" else (m,))]


def _method(label):
    """(method, extra attribute() keywords) of a table label: ``atp*+gd`` is AtP* with GradDrop."""
    return ("atp*", {"graddrop": True}) if label == "atp*+gd" else (label, {})


def _log(*a: object) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def _fwd_bwd_seconds(model, tokens, mask, repeats):
    import torch

    hf = model.original_model if hasattr(model, "original_model") else model
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        emb = hf.get_input_embeddings()(tokens).detach().requires_grad_(True)
        out = hf(inputs_embeds=emb, attention_mask=mask).logits
        out[:, -1].logsumexp(-1).sum().backward()
        best = min(best, time.perf_counter() - t)
        del out, emb
        hf.zero_grad(set_to_none=True)
    return best


def _spearman(a, b):
    from scipy.stats import spearmanr

    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = (np.abs(a) + np.abs(b)) > 0
    if ok.sum() < 3:
        return None
    return float(spearmanr(a[ok], b[ok]).statistic)


def _key(e):
    return (e.kind, e.sender, e.receiver, str(e.pos), str(e.kpos))


def _ikey(graph, e):
    """(kind, sender, receiver, g, g_k) with abstract position indices of the graph."""
    idx = {str(p): i for i, p in enumerate(graph.positions)}
    return (e.kind, e.sender, e.receiver, idx[str(e.pos)], idx[str(e.kpos)])


def _score(graph, k):
    kind, s, r, g, gk = k
    if kind == "same":
        return float(graph.same_pos[g, graph.senders.index(s), graph.receivers.index(r)])
    l, h = (int(x) for x in s[1:].split("H"))
    return float(graph.cross[l, h, "qkv".index(kind), g, gk])


def _random_edge(graph, gen):
    """A uniformly random valid abstract edge."""
    import torch

    K = len(graph.positions)
    vs = torch.nonzero(graph.valid)
    cv = torch.nonzero(graph.cross_valid)
    L, H = graph.cross.shape[:2]
    n_same, n_cross = K * len(vs), len(cv) * L * H * 3
    i = int(torch.randint(0, n_same + n_cross, (1,), generator=gen))
    if i < n_same:
        g, j = divmod(i, len(vs))
        s, r = vs[j].tolist()
        return ("same", graph.senders[s], graph.receivers[r], g, g)
    i -= n_same
    pq, rest = divmod(i, L * H * 3)
    l, rest = divmod(rest, H * 3)
    h, kk = divmod(rest, 3)
    g, gk = cv[pq].tolist()
    return ("qkv"[kk], f"L{l}H{h}", f"L{l}H{h}", g, gk)


def _exact_subsample(model, clean, corrupt, metric, schema, granularity, keys):
    from circuits._exact import run_exact
    from circuits._methods import _ablation_source
    from circuits.attribution import patchable, prepare
    from circuits.metrics import as_metric

    pm = patchable(model)
    data = prepare(pm, clean, corrupt, ablation="counterfactual", granularity=granularity, schema=schema)
    abl = _ablation_source(pm, data, "counterfactual")
    return run_exact(pm, as_metric(metric), data.clean.tokens, data.clean.mask, abl, data.group,
                     keys).tolist()


def _compare(model, attr, eval_ev, granularity, args, *, clean, corrupt, metric, schema, fb_s, label):
    """All methods on one (model, task, granularity) cell."""
    import torch

    from circuits import attribute
    from circuits.curves import faithfulness_curve

    graphs, secs = {}, {}
    for m in args.methods:
        best = float("inf")
        for _ in range(args.repeats_attr):
            t = time.perf_counter()
            meth, kw = _method(m)
            g = attribute(model, clean, corrupt, metric, method=meth, granularity=granularity, schema=schema,
                          batch_size=args.batch_size, ig_steps=args.ig_steps, **kw)
            best = min(best, time.perf_counter() - t)
        graphs[m], secs[m] = g, best
        _log(f"  [{label} {granularity}] {m}: {best:.1f}s = {best / fb_s:.1f}x fwd+bwd")
    # exact subsample: top edges of every method + random valid edges (abstract indices)
    g0 = graphs[args.methods[0]]
    keys: list = []
    for m in args.methods:
        for e in graphs[m].top_edges(args.n_top):
            k = _ikey(g0, e)
            if k not in keys:
                keys.append(k)
    gen = torch.Generator().manual_seed(0)
    n_want = min(args.n_exact_max, len(keys) + args.n_random)
    while len(keys) < n_want:
        k = _random_edge(g0, gen)
        if k not in keys:
            keys.append(k)
    t = time.perf_counter()
    exact = _exact_subsample(model, clean, corrupt, metric, schema, granularity, keys)
    t_exact = time.perf_counter() - t
    _log(f"  [{label} {granularity}] exact patching of {len(keys)} edges: {t_exact:.1f}s")
    rows = {}
    for m in args.methods:
        sp = _spearman([_score(graphs[m], k) for k in keys], exact)
        t = time.perf_counter()
        c = faithfulness_curve(model, graphs[m], evaluator=eval_ev, sizes=args.sizes, label=f"{m} ({granularity})")
        _log(f"  [{label} {granularity}] {m}: CPR {c.cpr:.3f} CMD {c.cmd:.3f} f>=0.8 at "
             f"{c.edges_for(0.8)} spearman {sp} (curve {time.perf_counter() - t:.0f}s)")
        rows[m] = {"cpr": c.cpr, "cmd": c.cmd, "edges_f08": c.edges_for(0.8),
                   "edges_f08_abstract": c.abstract_edges_for(0.8), "spearman_exact": sp,
                   "seconds": secs[m], "x_fwd_bwd": secs[m] / fb_s, "curve": c.to_json()}
    return rows, {"n_exact_edges": len(keys), "exact_seconds": t_exact,
                  "exact_x_fwd_bwd_per_edge": t_exact / len(keys) / fb_s}


def _toy_data(name, n):
    """Trained toy on its own task with graded corruption (as tests/test_attribution_planted.py)."""
    import torch

    from circuits.metrics import token_logit_diff
    from interp import load_model
    from interp.zoo import make_batch, manifest
    from interp.zoo import tasks as T

    model, man = load_model(name), manifest(name)
    V = man["task"]["params"]["n_vocab"]
    g = torch.Generator().manual_seed(0)
    if man["task"]["name"] == "offset":
        b = T.offset_batch(n, n_vocab=V, length=14, offset=man["task"]["params"]["offset"], seed=3)
        where = [1 + torch.randperm(10, generator=g)[: i + 1] for i in range(n)]
    elif man["task"]["name"] == "induction":
        ell = 10
        b = T.induction_batch(n, n_vocab=V, length=40, min_segment=ell, max_segment=ell, seed=5)
        s2 = int(b.extra["second_start"][0])
        where = [s2 - ell + torch.randperm(ell, generator=g)[: i + 1] for i in range(n)]
    else:
        b = make_batch(name, n, seed=3)
        b.eval_mask = b.extra["trigger_mask"]
        where = [1 + torch.randperm(b.tokens.shape[1] - 2, generator=g)[: 2 * (i + 1)] for i in range(n)]
    clean, corrupt = b.tokens, b.tokens.clone()
    for i, idx in enumerate(where):
        corrupt[i, idx] = (clean[i, idx] - T.N_SPECIAL + 7) % V + T.N_SPECIAL
    with torch.no_grad():
        wrong = model.original_model(corrupt).logits.argmax(-1)
    return model, clean, corrupt, token_logit_diff(b.targets.clamp(min=0), wrong, b.eval_mask)


def _toys(args):
    from circuits import attribute, exact_node_scores
    from circuits.curves import faithfulness_curve
    from circuits.faithfulness import FaithfulnessEvaluator

    out = {}
    for name in args.toys:
        _log(f"toy {name}")
        model, clean, corrupt, met = _toy_data(name, 8)
        fb = _fwd_bwd_seconds(model, clean, None, args.repeats)
        t = time.perf_counter()
        ex_nodes = exact_node_scores(model, clean, corrupt, met)
        t_nodes = time.perf_counter() - t
        ev = FaithfulnessEvaluator(model, clean, corrupt, met)
        cell = {"fwd_bwd_s": fb, "exact_nodes_s": t_nodes}
        for gran in ("position", "none"):
            graphs, secs = {}, {}
            for m in args.toy_methods + ["exact"]:
                best = float("inf")
                meth, kw = _method(m)
                if kw.get("graddrop") and model.cfg.n_layers < 2:
                    continue  # GradDrop divides by L − 1
                for _ in range(args.repeats_attr if m != "exact" else 1):
                    t = time.perf_counter()
                    g = attribute(model, clean, corrupt, met, method=meth, granularity=gran,
                                  exact_max_edges=10 ** 6, ig_steps=args.ig_steps, **kw)
                    best = min(best, time.perf_counter() - t)
                graphs[m], secs[m] = g, best
            ex = graphs["exact"]
            look_ex = {_key(e): e.score for e in ex.top_edges(None)}
            pick = []
            if gran == "position" and "eap-ig" in graphs:  # the tests' edge sample
                import torch

                edges = graphs["eap-ig"].top_edges(None)
                gen = torch.Generator().manual_seed(0)
                pick = [_key(e) for e in edges[:25] + [edges[i] for i in
                                                       torch.randperm(len(edges), generator=gen)[:35]]]
            rows = {}
            for m in [m for m in args.toy_methods + ["exact"] if m in graphs]:
                look = {_key(e): e.score for e in graphs[m].top_edges(None)}
                keys = list(look_ex)
                sp_edges = _spearman([look[k] for k in keys], [look_ex[k] for k in keys])
                sp_nodes = sp_t = sp_t_abs = sp_nodes_abs = None
                if gran == "position":
                    ns, exn = graphs[m].node_scores().flatten(), ex_nodes.flatten()
                    sp_nodes = _spearman(ns.tolist(), exn.tolist())
                    sp_nodes_abs = _spearman(ns.abs().tolist(), exn.abs().tolist())
                    if pick:
                        a, b = [look[k] for k in pick], [look_ex[k] for k in pick]
                        sp_t = _spearman(a, b)
                        sp_t_abs = _spearman([abs(x) for x in a], [abs(x) for x in b])
                c = faithfulness_curve(model, graphs[m], evaluator=ev, sizes=args.toy_sizes, label=m)
                rows[m] = {"cpr": c.cpr, "cmd": c.cmd, "edges_f08": c.edges_for(0.8),
                           "spearman_exact_edges_all": sp_edges, "spearman_exact_nodes": sp_nodes,
                           "spearman_nodes_abs": sp_nodes_abs, "spearman_edges_test": sp_t,
                           "spearman_edges_test_abs": sp_t_abs,
                           "seconds": secs[m], "x_fwd_bwd": secs[m] / fb}
                _log(f"  [{name} {gran}] {m}: {secs[m]:.2f}s CPR {c.cpr:.3f} CMD {c.cmd:.3f} "
                     f"f>=0.8 at {c.edges_for(0.8)} spearman edges {sp_edges} nodes {sp_nodes}")
            cell[gran] = {"rows": rows, "n_edges": len(look_ex)}
        out[name] = cell
    return out


def _stability(model, args):
    from circuits import resample, select
    from circuits.faithfulness import FaithfulnessEvaluator
    from circuits.tasks import ioi

    attr = ioi(model, n=args.n_attr, seed=0)
    ev_task = ioi(model, n=args.n_eval, seed=1)
    t = time.perf_counter()
    st = resample(model, attr, args.stable_method, n=args.n_resample, n_edges=args.stable_k,
                  select_method="greedy", granularity="span", batch_size=args.batch_size)
    secs = time.perf_counter() - t
    ev = FaithfulnessEvaluator(model, ev_task)
    stable = select(st, method="stable", min_freq=args.min_freq)
    full_top = select(st.graph, args.stable_k, method="greedy")
    fs, ff = ev(stable), ev(full_top)
    edges = st.edges()[: 3 * args.stable_k]
    _log(f"stability: {secs:.0f}s; stable circuit {stable.n_edges} edges f={fs.f:.3f} {fs.f_ci}; "
         f"top-{args.stable_k} greedy on all data f={ff.f:.3f} {ff.f_ci}")
    return {"method": args.stable_method, "resamples": args.n_resample, "k": args.stable_k,
            "min_freq": args.min_freq, "seconds": secs, "edges": edges,
            "n_always": sum(1 for e in st.edges() if e["freq"] >= 1.0),
            "n_ever": len(st.edges()),
            "stable": {"n_edges": stable.n_edges, "f": fs.f, "f_ci": list(fs.f_ci),
                       "concrete": fs.concrete_edges},
            "full_data_topk": {"n_edges": full_top.n_edges, "f": ff.f, "f_ci": list(ff.f_ci),
                               "concrete": ff.concrete_edges}}, st, stable


def _fmt(x, nd=3):
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _tables(res):
    lines = []
    lines.append("| model | task | graph | method | CPR ↑ | CMD ↓ | concrete edges f ≥ 0.8 | Spearman vs exact | × fwd+bwd |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    wins = []
    for mod, tasks in res["real"].items():
        for task, cell in tasks.items():
            for gran in ("span", "none"):
                if gran not in cell:
                    continue
                rows = cell[gran]["rows"]
                for m, r in rows.items():
                    lines.append(f"| {mod} | {task} | {'positional' if gran == 'span' else 'non-positional'} | {m} | "
                                 f"{_fmt(r['cpr'])} | {_fmt(r['cmd'])} | {_fmt(r['edges_f08'], 1)} | "
                                 f"{_fmt(r['spearman_exact'])} | {r['x_fwd_bwd']:.1f} |")
                wins.append(_winner(f"{mod} {task} {'positional' if gran == 'span' else 'non-positional'}", rows,
                                    "spearman_exact"))
    lines.append("")
    lines.append("| toy | graph | method | CPR ↑ | CMD ↓ | concrete edges f ≥ 0.8 | Spearman edges (all) | "
                 "Spearman nodes | Spearman edges (tests' 60) | Spearman abs nodes | Spearman abs edges (60) | × fwd+bwd |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for toy, cell in res["toys"].items():
        for gran in ("position", "none"):
            rows = cell[gran]["rows"]
            for m, r in rows.items():
                lines.append(f"| {toy} | {'positional' if gran == 'position' else 'non-positional'} | {m} | "
                             f"{_fmt(r['cpr'])} | {_fmt(r['cmd'])} | {_fmt(r['edges_f08'], 1)} | "
                             f"{_fmt(r['spearman_exact_edges_all'])} | {_fmt(r['spearman_exact_nodes'])} | "
                             f"{_fmt(r.get('spearman_edges_test'))} | {_fmt(r.get('spearman_nodes_abs'))} | "
                             f"{_fmt(r.get('spearman_edges_test_abs'))} | {r['x_fwd_bwd']:.1f} |")
            wins.append(_winner(f"{toy} {'positional' if gran == 'position' else 'non-positional'}",
                                {m: r for m, r in rows.items() if m != "exact"}, "spearman_exact_edges_all"))
    lines.append("")
    lines.append("Winners per cell (best CPR / lowest CMD / highest Spearman vs exact):")
    lines.append("")
    lines += [f"- {w}" for w in wins]
    return "\n".join(lines)


def _winner(label, rows, sp_key):
    def best(key, sign):
        c = [(sign * r[key], m) for m, r in rows.items() if r.get(key) is not None]
        return max(c)[1] if c else "—"

    return f"{label}: CPR {best('cpr', 1)}, CMD {best('cmd', -1)}, Spearman {best(sp_key, 1)}"


def _figure(res, path, st_fig=None, stable_fig=None):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cells, methods = [], None
    for mod, tasks in res["real"].items():
        for task, cell in tasks.items():
            for gran in ("span", "none"):
                if gran in cell:
                    cells.append((f"{mod.split('-')[0]} {task} {'pos' if gran == 'span' else 'non-pos'}", cell[gran]["rows"], "spearman_exact"))
    for toy, cell in res["toys"].items():
        for gran in ("position", "none"):
            cells.append((f"{toy} {'pos' if gran == 'position' else 'non-pos'}", cell[gran]["rows"], "spearman_exact_edges_all"))
    methods = list(dict.fromkeys(res["args"]["methods"] + res["args"]["toy_methods"] + ["exact"]))
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, subplot_titles=("CPR (↑)", "CMD (↓)", "Spearman vs exact (↑)"))
    for j, (key, cs) in enumerate((("cpr", "Viridis"), ("cmd", "Viridis_r"), (None, "RdBu"))):
        z = [[(rows.get(m, {}).get(key or spk)) for m in methods] for _, rows, spk in cells]
        fig.add_trace(go.Heatmap(z=z, x=methods, y=[c[0] for c in cells], colorscale=cs,
                                 zmid=0 if key is None else None, showscale=False,
                                 text=[[_fmt(v) for v in row] for row in z], texttemplate="%{text}"), 1, j + 1)
    fig.update_layout(title="Attribution methods: faithfulness areas and agreement with exact patching",
                      height=300 + 24 * len(cells), width=1300)
    fig.update_yaxes(autorange="reversed")
    html = [fig.to_html(full_html=False, include_plotlyjs=True)]
    for f in (st_fig, stable_fig):
        if f is not None:
            html.append(f.to_html(full_html=False, include_plotlyjs=False))
    Path(path).write_text("<html><head><meta charset='utf-8'><title>Method comparison</title></head><body>"
                          + "".join(html) + "</body></html>")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--tasks", default="ioi,greater-than,induction")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--toys", default="toy-induction,toy-offset-rope,toy-backcopy")
    ap.add_argument("--toy-methods", default=",".join(METHODS))
    ap.add_argument("--toy-sizes", default="0.001,0.002,0.005,0.01,0.02,0.05,0.1,0.2,0.5,1.0",
                    help="the MIB grid (toys are cheap)")
    ap.add_argument("--n-attr", type=int, default=8)
    ap.add_argument("--n-eval", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--ig-steps", type=int, default=5)
    ap.add_argument("--sizes", default="0.001,0.01,0.05,0.2,1.0")
    ap.add_argument("--n-top", type=int, default=4, help="top edges of each method in the exact subsample")
    ap.add_argument("--n-exact-max", type=int, default=30, help="exact subsample size (top + random)")
    ap.add_argument("--n-random", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fwd+bwd baseline (min)")
    ap.add_argument("--repeats-attr", type=int, default=1)
    ap.add_argument("--n-resample", type=int, default=20)
    ap.add_argument("--stable-k", type=int, default=40)
    ap.add_argument("--stable-method", default="eap")
    ap.add_argument("--min-freq", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    args.sizes = [float(s) for s in args.sizes.split(",")]
    args.toys = [t for t in args.toys.split(",") if t]
    args.toy_methods = [m for m in args.toy_methods.split(",") if m]
    args.toy_sizes = [float(x) for x in args.toy_sizes.split(",")]

    import torch

    torch.set_num_threads(args.threads)
    from circuits.faithfulness import FaithfulnessEvaluator
    from circuits.tasks import greater_than, induction, ioi
    from interp import load_model
    from interp.results import to_jsonable

    t_all = time.perf_counter()
    makers = {"ioi": lambda m, n, s: ioi(m, n=n, seed=s), "greater-than": lambda m, n, s: greater_than(m, n=n, seed=s),
              "induction": lambda m, n, s: induction(m, n=n, seed=s)}
    res: dict = {"args": vars(args) | {"command": " ".join(sys.argv)}, "real": {}, "toys": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    st_fig = stable_fig = None
    figs: dict = {}

    def save():
        (out / "method_comparison.json").write_text(json.dumps(to_jsonable(res), indent=1))
        write_md()
        try:
            _figure(res, out / "method_comparison.html", st_fig, stable_fig)
        except Exception as e:  # a partial run still leaves its tables
            _log(f"figure failed: {e}")

    def write_md():
        md = _tables(res)
        if "stability_smollm2_ioi" in res:
            s = res["stability_smollm2_ioi"]
            md += (f"\n\nStability (SmolLM2 IOI, span graph, {s['method']}, {s['resamples']} bootstrap resamples of "
                   f"{args.n_attr} prompts, greedy top-{s['k']}): {s['n_always']} edges selected in every resample, "
                   f"{s['n_ever']} at least once. Stable circuit (≥ {s['min_freq']:.0%}): {s['stable']['n_edges']} edges, "
                   f"f = {s['stable']['f']:.3f} (95 % CI {s['stable']['f_ci'][0]:.3f}–{s['stable']['f_ci'][1]:.3f}); "
                   f"top-{s['k']} on all data: f = {s['full_data_topk']['f']:.3f} (95 % CI "
                   f"{s['full_data_topk']['f_ci'][0]:.3f}–{s['full_data_topk']['f_ci'][1]:.3f}).\n\n"
                   "| edge | frequency | mean score | 95 % CI |\n|---|---|---|---|\n"
                   + "\n".join(f"| {e['sender']} → {e['receiver']} ({e['kind']}) @ {e['pos']}"
                               + (f" ← {e['kpos']}" if e['kind'] != 'same' else "")
                               + f" | {e['freq']:.2f} | {e['mean']:+.4f} | [{e['ci'][0]:+.4f}, {e['ci'][1]:+.4f}] |"
                               for e in s["edges"][:25]))
        (out / "method_comparison.md").write_text(md + "\n")

    res["toys"] = _toys(args) if args.toys else {}
    save()
    for mname in [m for m in args.models.split(",") if m]:
        _log(f"model {mname}")
        model = load_model(mname)
        res["real"][mname] = {}
        for task in [t for t in args.tasks.split(",") if t]:
            attr, evt = makers[task](model, args.n_attr, 0), makers[task](model, args.n_eval, 1)
            fb = _fwd_bwd_seconds(model, attr.clean.tokens, attr.clean.attention_mask, args.repeats)
            ev = FaithfulnessEvaluator(model, evt)
            cell = {"fwd_bwd_s": fb, "n_attr": len(attr), "n_eval": len(evt),
                    "m_full": float(ev.m_full.mean()), "m_empty": float(ev.m_empty.mean())}
            _log(f" {mname} {task}: fwd+bwd {fb:.2f}s, M(N)={cell['m_full']:.3f} M(∅)={cell['m_empty']:.3f}")
            for gran in ("span", "none"):
                rows, info = _compare(model, attr, ev, gran, args, clean=attr.clean, corrupt=attr.corrupt,
                                      metric=attr.metric, schema=attr.schema, fb_s=fb, label=f"{mname} {task}")
                cell[gran] = {"rows": rows, **info}
                res["real"][mname][task] = cell
                save()
        if mname.startswith("smollm2") and args.n_resample > 0:
            stab, st, stable = _stability(model, args)
            res["stability_smollm2_ioi"] = stab
            st_fig = st.plot()
            stable_fig = stable.plot(stability=st, title=f"Stable IOI circuit (edges in ≥ {args.min_freq:.0%} of "
                                                         f"{args.n_resample} resamples)")
            save()
        del model
    res["total_seconds"] = time.perf_counter() - t_all
    save()
    save()
    _log(f"done in {res['total_seconds']:.0f}s; wrote {out}/method_comparison.json, .md, .html")


if __name__ == "__main__":
    main()
