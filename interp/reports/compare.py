"""Two models side by side: one HTML page with paired figures and a table of differences.

``interp report --compare A B`` runs the same sections on the same prompts (same seed, same BOS
policy, same sized samples) for both models and writes ``compare-A-vs-B.html`` and ``.json``.
The table of differences lists every headline number that carries an interval (``data["ci"]``
of each section, the probe's best layer, the circuit's CPR/CMD) for both models, their
difference, and whether the two 95 % intervals overlap (non-overlap is a conservative sign of a
real difference; overlap does not show equality).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interp.reports._registry import SectionResult

__all__ = ["headline_numbers", "differences", "render_comparison", "save_comparison"]


def headline_numbers(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(section, quantity): estimate JSON}`` from a report's JSON document."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for s in doc["sections"]:
        d = s.get("data") or {}
        for key, v in d.items():
            if key == "ci" and isinstance(v, dict):
                for q, e in v.items():
                    if isinstance(e, dict) and "value" in e:
                        out[(s["name"], q)] = e
            elif key == "ci_best" and isinstance(v, dict):
                out[(s["name"], f"best-layer probe ({v.get('hook')})")] = v
            elif key.startswith("ci_") and isinstance(v, dict):
                for q, e in v.items():
                    if isinstance(e, dict) and "value" in e:
                        out[(s["name"], f"{q.upper()} ({key[3:]})")] = e
    return out


def _generic(q: str) -> str:
    """Quantities named after a head (``… of L3H2``) differ between models: compare by rank instead."""
    import re

    return re.sub(r"L\d+H\d+", "top head", q)


def differences(doc_a: dict[str, Any], doc_b: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[section, quantity, A, B, B − A, intervals overlap]``."""
    ha, hb = headline_numbers(doc_a), headline_numbers(doc_b)

    def by_generic(h: dict[tuple[str, str], Any]) -> dict[tuple[str, str], tuple[str, Any]]:
        g: dict[tuple[str, str], tuple[str, Any]] = {}
        for (sec, q), e in h.items():
            k = (sec, _generic(q))
            if k not in g:  # first = largest (sections list heads by rank)
                g[k] = (q, e)
        return g

    ga, gb = by_generic(ha), by_generic(hb)
    rows = []
    for k in list(dict.fromkeys([*ga, *gb])):
        qa, ea = ga.get(k, (None, None))
        qb, eb = gb.get(k, (None, None))

        def cell(q: str | None, e: Any) -> str:
            if e is None:
                return "—"
            head = "" if q is None or q == k[1] else f"{q.split(' ')[-1]}: "
            if e.get("value") is None:
                return head + "n/a"
            txt = f"{e['value']:.4g} [{e['ci_lo']:.4g}, {e['ci_hi']:.4g}]"
            return head + ("too noisy: " + txt if e.get("too_noisy") else txt)

        diff = overlap = None
        if ea is not None and eb is not None and None not in (ea.get("value"), eb.get("value")):
            diff = round(eb["value"] - ea["value"], 6)
            overlap = "yes" if (ea["ci_lo"] <= eb["ci_hi"] and eb["ci_lo"] <= ea["ci_hi"]) else "no"
        rows.append([k[0], k[1], cell(qa, ea), cell(qb, eb), diff, overlap])
    return rows


def render_comparison(names: tuple[str, str], reports: tuple[Any, Any]) -> str:
    """One self-contained HTML page: the table of differences, then every section with the two
    models' figures paired side by side."""
    from interp.reports._html import _CSS, _RENDER_CHECK, _esc, page_head, render_figure, render_table
    from interp.reports._registry import Table

    docs = [r.to_json() for r in reports]
    diff = Table(f"headline numbers: {names[0]} (A) versus {names[1]} (B), value [95% CI]",
                 ["section", "quantity", f"A: {names[0]}", f"B: {names[1]}", "B − A", "intervals overlap"],
                 differences(docs[0], docs[1]))
    by_name = [{r.name: r for r in rep.results} for rep in reports]
    order = list(dict.fromkeys([r.name for r in reports[0].results] + [r.name for r in reports[1].results]))
    parts = []
    for sec in order:
        ra: SectionResult | None = by_name[0].get(sec)
        rb: SectionResult | None = by_name[1].get(sec)
        title = (ra or rb).title  # type: ignore[union-attr]
        parts.append(f'<section id="sec-{_esc(sec)}"><h2>{_esc(title)}</h2><div class="pair">')
        for nm, r in ((names[0], ra), (names[1], rb)):
            parts.append(f'<div class="col"><h3>{_esc(nm)} <span class="badge {r.status if r else "skipped"}">'
                         f'{r.status if r else "absent"}</span></h3>')
            if r is None:
                parts.append("<p>not run</p></div>")
                continue
            if r.status != "ok":
                parts.append(f'<p class="reason {r.status}">{_esc(r.reason)}</p>')
            for note in r.output.notes[:6]:
                parts.append(f"<p>{_esc(note)}</p>")
            parts.append("</div>")
        parts.append("</div>")
        figs_a = ra.output.figures if ra else []
        figs_b = rb.output.figures if rb else []
        for i in range(max(len(figs_a), len(figs_b))):
            parts.append('<div class="pair">')
            for j, figs in enumerate((figs_a, figs_b)):
                parts.append('<div class="col">' + (render_figure(figs[i], f"fig-{sec}-{i}-{'ab'[j]}")
                                                    if i < len(figs) else "<p class='muted'>no figure</p>")
                             + "</div>")
            parts.append("</div>")
        parts.append("</section>")
    css = _CSS.replace("max-width: 1200px", "max-width: 1800px") + (
        ".pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; } .col { min-width: 0; }")
    title = f"interp comparison — {names[0]} vs {names[1]}"
    return page_head(title, css) + f"""<p class="muted">Same prompts, seed {docs[0]['meta'].get('seed')} and BOS policy for both models; each model's own
report JSON is embedded in the comparison JSON written beside this page.</p>
{render_table(diff)}
{''.join(parts)}
<script>{_RENDER_CHECK}</script>
</body>
</html>
"""


def save_comparison(out_dir: str | Path, names: tuple[str, str], reports: tuple[Any, Any]) -> tuple[Path, Path]:
    """Write ``compare-A-vs-B.json`` and ``.html`` atomically; returns their paths."""
    from interp.reports._meta import atomic_write_text

    out = Path(out_dir)
    stem = "compare-" + "-vs-".join(n.replace("/", "_") for n in names)
    docs = [r.to_json() for r in reports]
    doc = {"models": list(names), "differences": differences(docs[0], docs[1]),
           "reports": {names[0]: docs[0], names[1]: docs[1]}}
    jp = atomic_write_text(out / f"{stem}.json", json.dumps(doc, indent=1, allow_nan=False))
    hp = atomic_write_text(out / f"{stem}.html", render_comparison(names, reports))
    return hp, jp
