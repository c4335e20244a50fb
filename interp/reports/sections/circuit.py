"""Section ``circuit``: a position-aware circuit and its faithfulness curve (``circuits``).

EAP edge scores (z*_u − z_u)·∂M/∂(input of v) with crossing edges inside each head computed
exactly (Haklay et al. 2025), at schema-span granularity ("positional") and summed over positions
("none", the non-positional baseline); circuits grown greedily from the logits; faithfulness by
real patching with counterfactual (ABC) ablation, BOS never ablated, normalised
f = (M(C) − M(∅)) / (M(N) − M(∅)) (MIB), plotted against average concrete edges per example,
with CPR (area under f) and CMD (area under |1 − f|).

Options (``ReportContext.options``; ``interp circuit`` sets them, ``interp report`` uses the
defaults): ``task`` (``"ioi"`` default, ``"greater-than"``, ``"induction"``), ``pairs`` (a JSONL
file of clean/counterfactual pairs for :func:`circuits.tasks.load_jsonl`; replaces ``task``),
``n`` (examples of a built-in task, default 64; ``ioi_n`` is the older name; IOI with the default
n on a real model reads the bundled ``interp.datasets`` file ``ioi-t0``: 64 pairs, ABBA/BABA), ``method``
(``"eap"`` default or ``"eap-ig"``), ``ig_steps`` (default 5), ``granularity`` (``"span"``
default, ``"position"`` or ``"none"``; every granularity but ``"none"`` is compared with the
``"none"`` baseline), ``grid`` (fractions of abstract edges).
"""

from __future__ import annotations

from typing import Any

from interp.reports._registry import ReportContext, SectionOutput, SectionSkipped, Table, section
from interp.reports.sections._util import CI_COLUMNS, ci_rows
from interp.stats import describe

# a short grid (fractions of abstract edges) keeps the default report fast; the full MIB grid is
# circuits.curves.MIB_GRID
REPORT_GRID = (0.002, 0.01, 0.05, 0.2, 1.0)
_LABELS = {"span": "span (positional)", "position": "position (positional)", "none": "none (non-positional)"}


def circuit_config(options: dict[str, Any]) -> dict[str, Any]:
    """The section's settings from its options, validated (ValueError naming the bad option): the
    task/method/granularity settings of :func:`circuits.registry.task_options` and the ``grid``."""
    from circuits.registry import task_options

    return {**task_options(options), "grid": tuple(float(x) for x in options.get("grid", REPORT_GRID))}


@section("circuit", "Position-aware circuit",
         "EAP / EAP-IG attribution over schema spans (or positions) versus the non-positional baseline; by "
         "default on IOI (ABBA and BABA, ABC counterfactuals, logit difference IO − S), or on Greater-Than, "
         "induction or your own clean/counterfactual pairs (interp circuit --task / --pairs); faithfulness "
         "curves by real patching, CPR/CMD, and the selected positional circuit as a graph.",
         requires=("circuits",), order=70)
def run(ctx: ReportContext) -> SectionOutput:
    import circuits
    from circuits.registry import NATURAL_LANGUAGE_TASKS, task_from_options

    cfg = circuit_config(ctx.options)
    if ctx.model_name.startswith("toy-") and (cfg["task"] or "") in NATURAL_LANGUAGE_TASKS:
        raise SectionSkipped(f"{cfg['task'].upper() if cfg['task'] == 'ioi' else cfg['task']} needs a "
                             f"natural-language model; {ctx.model_name} is a toy model (its planted "
                             "circuits are tested in tests/test_attribution.py and the circuits notebook; "
                             "use the induction task or your own pairs)")
    method, gran, grid = cfg["method"], cfg["granularity"], cfg["grid"]
    task = task_from_options(ctx.model, ctx.options, seed=ctx.seed, prepend_bos=ctx.prepend_bos)
    grans = [gran] if gran == "none" else [gran, "none"]
    graphs = {g: circuits.attribute(ctx.model, task, granularity=g, method=method, ig_steps=cfg["ig_steps"],
                                    batch_size=16, max_memory=ctx.options.get("max_memory")) for g in grans}
    ev = _RecordingEvaluator(ctx.model, task, batch_size=16, seed=ctx.seed, n_boot=200)
    curves, records = {}, {}
    for g in grans:
        ev.records = []
        curves[g] = circuits.faithfulness_curve(ctx.model, graphs[g], sizes=grid, evaluator=ev, label=_LABELS[g])
        records[g] = list(ev.records)
    area_ci = {g: area_estimates(curves[g], records[g], ev, seed=ctx.seed) for g in grans}
    main_g, main_c = graphs[gran], curves[gran]
    what = "IOI" if task.name == "ioi" else task.name
    figs: list[Any] = [circuits.plot_curves(list(curves.values()),
                                            title=f"{what} faithfulness vs circuit size — {ctx.model_name}")]
    k = main_c.abstract_edges_for(0.8) or max(main_c.n_edges)
    circ = circuits.select(main_g, n_edges=int(min(k, 200)))
    kind = {"span": "positional", "position": "positional", "none": "non-positional"}[gran]
    figs.append(circ.plot(title=f"{what} {kind} circuit ({circ.n_edges} {gran} edges) — {ctx.model_name}"))
    figs.append(main_g.plot("nodes"))
    curve_rows = []
    for c in curves.values():
        for i in range(len(c.f)):
            curve_rows.append([c.label, c.n_edges[i], c.concrete_edges[i], c.f[i], c.f_lo[i], c.f_hi[i], c.hard[i]])
    summary = []
    for g, c in curves.items():
        e = c.edges_for(0.8)
        summary.append([c.label, area_ci[g]["cpr"].text(), area_ci[g]["cmd"].text(),
                        "never" if e is None else round(e, 1), c.total_edges])
    top_edges = [[e.kind, f"{e.sender} @ {e.kpos if e.kind != 'same' else e.pos}", f"{e.receiver} @ {e.pos}", e.score]
                 for e in main_g.top_edges(10)]
    title = ("positional versus non-positional circuits" if len(curves) > 1 else "non-positional circuit")
    behaviour = ioi_behaviour(ctx) if task.name.startswith("ioi") else []
    tables = [Table(title, ["granularity", "CPR (↑) [95% CI]", "CMD (↓) [95% CI]", "concrete edges / example for f ≥ 0.8",
                            "abstract edges in graph"], summary),
              Table("faithfulness curve points", ["curve", "abstract edges", "concrete edges / example", "f",
                                                  "f 95% lo", "f 95% hi", "hard"], curve_rows),
              Table(f"top {gran} edges by |EAP score|", ["kind", "sender @ " + gran, "receiver @ " + gran, "score"],
                    top_edges)]
    if behaviour:
        tables.append(Table("IOI behaviour on every bundled template and order: mean logit difference IO − S "
                            "with 95% bootstrap CI over examples", CI_COLUMNS, ci_rows(behaviour)))
    source = (f"pairs from {cfg['pairs']}, template {task.meta.get('template')!r}" if cfg["pairs"]
              else (f"ABBA/BABA alternating, {task.meta.get('source', 'generated')}" if task.name.startswith("ioi")
                    else "built-in task"))
    ig = f" ({cfg['ig_steps']} steps)" if method == "eap-ig" else ""
    notes = [f"{what}: {len(task)} examples ({source}), counterfactual ablation, method {method}{ig}, "
             f"granularity {gran}, metric {task.metric.name}, "
             f"BOS {'prepended' if task.prepend_bos else 'not prepended'}; curve grid {list(grid)} of abstract edges."]
    data: dict[str, Any] = {
        "task": {"name": task.name, "source": "pairs" if cfg["pairs"] else "builtin", "n": len(task),
                 "metric": task.metric.name, "prepend_bos": task.prepend_bos, "meta": task.meta},
        "method": method, "ig_steps": cfg["ig_steps"], "granularity": gran, "grid": list(grid),
        "circuit": circ.to_json(), f"graph_{gran}_top_edges": top_edges}
    for g, c in curves.items():
        data[f"curve_{g}"] = c.to_json()
        data[f"ci_{g}"] = {k: e.to_json() for k, e in area_ci[g].items()}
        notes += [describe(f"{c.label} {k.upper()}", e) for k, e in area_ci[g].items()]
    if behaviour:
        data["behaviour"] = {k: e.to_json() for k, e in behaviour}
    exp = ctx.options.get("export")
    if exp:  # interp circuit --export FORMAT FILE
        from circuits.exchange import export

        written = export(str(exp["format"]), exp["path"], graph=graphs["none"] if exp["format"] != "graph-json"
                         else main_g, circuit=circ, task=task.name, model=ctx.model_name,
                         d_model=int(getattr(ctx.model.cfg, "d_model", 0) or 0))
        notes.append(f"exported {exp['format']} to {written}")
        data["export"] = {"format": str(exp["format"]), "path": str(written)}
    return SectionOutput(data=data, figures=figs, tables=tables, notes=notes)


def _recording_class() -> Any:
    from circuits.faithfulness import FaithfulnessEvaluator

    class Recording(FaithfulnessEvaluator):  # type: ignore[misc, valid-type]
        """Keeps every evaluated circuit's per-example metrics (for intervals on curve areas)."""

        records: list[Any]

        def __call__(self, circuit: Any) -> Any:
            r = super().__call__(circuit)
            self.records.append(r)
            return r

        def full_model_result(self, circuit: Any) -> Any:
            r = super().full_model_result(circuit)
            self.records.append(r)
            return r

    return Recording


def _RecordingEvaluator(*args: Any, **kwargs: Any) -> Any:
    ev = _recording_class()(*args, **kwargs)
    ev.records = []
    return ev


def area_estimates(curve: Any, records: list[Any], ev: Any, *, seed: int, n_boot: int = 1000) -> dict[str, Any]:
    """CPR and CMD with percentile-bootstrap intervals over examples.

    Each replicate resamples the examples, recomputes every point's normalised faithfulness
    f = (mean M(C) − mean M(∅)) / (mean M(N) − mean M(∅)) on the resample, and the areas under f
    and |1 − f| over the (fixed) concrete-edge fractions, as ``circuits.curves`` does. Split halves:
    the same areas on two random halves of the examples.
    """
    import numpy as np

    from circuits.curves import area
    from interp.stats import Estimate

    mC = np.stack([r.per_example[0].double().numpy() for r in records])  # [point example]
    mN = records[0].per_example[1].double().numpy()
    mE = records[0].per_example[2].double().numpy()
    xs = [0.0] + list(curve.concrete_fraction)
    n = mC.shape[1]

    def areas(idx: np.ndarray) -> tuple[float, float]:
        den = mN[idx].mean() - mE[idx].mean()
        f = (mC[:, idx].mean(1) - mE[idx].mean()) / den if den != 0 else np.full(mC.shape[0], np.nan)
        fs = [0.0] + f.tolist()
        return area(xs, fs), area(xs, [abs(1 - v) for v in fs])

    rng = np.random.default_rng(seed)
    reps = np.array([areas(rng.integers(0, n, n)) for _ in range(n_boot)])
    perm = rng.permutation(n)
    h1, h2 = areas(perm[: n // 2]), areas(perm[n // 2:])
    out = {}
    for j, (name, point) in enumerate((("cpr", curve.cpr), ("cmd", curve.cmd))):
        lo, hi = np.nanquantile(reps[:, j], [0.025, 0.975])
        out[name] = Estimate(float(point), float(lo), float(hi), n, halves=(float(h1[j]), float(h2[j])),
                             unit="examples", n_boot=n_boot, abs_tol=0.05, rel_tol=0.25)
    return out


def ioi_behaviour(ctx: ReportContext) -> list[tuple[str, Any]]:
    """Mean logit difference IO − S at the last token on each bundled IOI template, by name order
    (bootstrap over examples)."""
    import torch

    from circuits.tasks import load_jsonl
    from interp import datasets
    from interp.stats import estimate

    out = []
    for t in range(3):
        name = f"ioi-t{t}"
        task = load_jsonl(datasets.path(name), ctx.model, prepend_bos=ctx.prepend_bos, name=name)
        rows = [r for r in datasets.load(name) if "clean" in r]
        b = task.clean
        diffs = []
        with torch.no_grad():
            for s in range(0, len(b.lengths), 16):
                toks = b.tokens[s:s + 16]
                mask = b.attention_mask[s:s + 16]
                lg = ctx.model(toks, attention_mask=mask, return_type="logits")
                for i, r in enumerate(rows[s:s + 16]):
                    last = lg[i, int(b.lengths[s + i]) - 1]
                    io = ctx.model.tokenizer.encode(r["correct"], add_special_tokens=False)[0]
                    sj = ctx.model.tokenizer.encode(r["wrong"], add_special_tokens=False)[0]
                    diffs.append((r["order"], float(last[io] - last[sj])))
        for order in ("ABBA", "BABA"):
            v = torch.tensor([d for o, d in diffs if o == order], dtype=torch.float64)
            out.append((f"template {t}, {order}", estimate(v, seed=ctx.seed, abs_tol=0.25, rel_tol=0.5)))
    return out
