"""Self-contained HTML rendering: plotly.js embedded once in <head>, no CDN, opens offline."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from interp.reports._registry import SectionResult, Table

_CSS = """
:root { --ok:#1a7f37; --failed:#cf222e; --skipped:#9a6700; --fg:#1f2328; --muted:#59636e; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       max-width: 1200px; margin: 0 auto; padding: 1rem 2rem 4rem; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; margin-top: 2.5rem; }
.muted { color: var(--muted); }
.badge { display:inline-block; padding: .05rem .5rem; border-radius: 1rem; font-size: .8rem;
         color: white; vertical-align: middle; margin-left: .5rem; }
.badge.ok { background: var(--ok); } .badge.failed { background: var(--failed); }
.badge.skipped { background: var(--skipped); }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.reason { border-left: 4px solid var(--failed); background: #ffebe9; padding: .5rem .8rem; }
.reason.skipped { border-color: var(--skipped); background: #fff8c5; }
.figure { margin: 1rem 0; border: 1px solid #eaeef2; border-radius: 6px; }
pre { background: #f6f8fa; padding: .6rem; overflow: auto; max-height: 24rem; font-size: .8rem; }
#js-error-banner { display:none; position: sticky; top: 0; background: var(--failed); color: white;
                   padding: .5rem 1rem; z-index: 10; }
.err { color: var(--failed); font-weight: bold; }
"""

# Collects JavaScript errors before anything else runs; tests and readers can see them.
_ERROR_COLLECTOR = """
window.__interpErrors = [];
window.addEventListener('error', function (e) {
  window.__interpErrors.push(String((e && e.message) || e));
});
window.addEventListener('unhandledrejection', function (e) {
  window.__interpErrors.push('unhandled rejection: ' + String(e && e.reason));
});
"""

# After load: count figures that rendered an SVG, record the result on <body>, show a banner
# when a figure failed or a script raised.
_RENDER_CHECK = """
function __interpCheck() {
  var divs = document.querySelectorAll('div.plotly-graph-div');
  var ok = 0;
  divs.forEach(function (d) {
    if (d.querySelector('svg.main-svg')) { ok += 1; }
    else if (!d.dataset.flagged) {
      d.dataset.flagged = '1';
      d.insertAdjacentHTML('afterend', '<p class="err">This figure did not render.</p>');
    }
  });
  document.body.dataset.figures = String(divs.length);
  document.body.dataset.figuresRendered = String(ok);
  document.body.dataset.jsErrors = JSON.stringify(window.__interpErrors);
  if (window.__interpErrors.length || ok < divs.length) {
    var b = document.getElementById('js-error-banner');
    b.textContent = (divs.length - ok) + ' figure(s) did not render; JavaScript errors: ' +
      (window.__interpErrors.join(' | ') || 'none');
    b.style.display = 'block';
  }
}
window.addEventListener('load', function () { setTimeout(__interpCheck, 300); });
"""

_MAX_DATA_CHARS = 20_000


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return "nan"
        return f"{v:.4g}"
    return str(v)


def _compress_hooks(hooks: Sequence[str]) -> str:
    """``blocks.{0..29}.hook_resid_post``-style summary of a hook list (full list in the JSON)."""
    import re
    from collections import defaultdict

    groups: dict[str, list[int]] = defaultdict(list)
    for h in hooks:
        m = re.match(r"blocks\.(\d+)\.(.+)", h)
        if m:
            groups[f"blocks.{{L}}.{m.group(2)}"].append(int(m.group(1)))
        else:
            groups[h] = []
    parts = []
    for k, ls in groups.items():
        if not ls:
            parts.append(k)
            continue
        ls = sorted(set(ls))
        rng = f"{ls[0]}..{ls[-1]}" if ls == list(range(ls[0], ls[-1] + 1)) and len(ls) > 1 else ",".join(map(str, ls))
        parts.append(k.replace("{L}", "{" + rng + "}"))
    return ", ".join(parts)


def render_table(t: Table) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        cells = []
        for v in row:
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{_esc(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table><caption class="muted">{_esc(t.caption)}</caption><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def render_figure(fig: Any, div_id: str) -> str:
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure(fig)  # a copy: the section's figure keeps its own layout
    if fig.layout.width is not None and fig.layout.width > 1100:  # fit the page; plotly resizes responsively
        fig.layout.width = None
        fig.layout.autosize = True
    return '<div class="figure">' + pio.to_html(
        fig, include_plotlyjs=False, full_html=False, div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    ) + "</div>"


def page_head(title: str, css: str) -> str:
    """The top of a self-contained report page (the report's and the comparison's): doctype, head
    with ``css``, the JS error collector and plotly.js inline, the error banner and the ``<h1>``."""
    from plotly.offline import get_plotlyjs

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{css}</style>
<script>{_ERROR_COLLECTOR}</script>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<div id="js-error-banner"></div>
<h1>{_esc(title)}</h1>
"""


def _section_html(res: SectionResult, section_json: dict[str, Any]) -> str:
    parts = [f'<section id="sec-{_esc(res.name)}" data-status="{res.status}">',
             f'<h2>{_esc(res.title)}<span class="badge {res.status}">{res.status}</span></h2>',
             f'<p class="muted">{_esc(res.description)}</p>']
    if res.status != "ok":
        parts.append(f'<p class="reason {res.status}"><b>{res.status}:</b> {_esc(res.reason)}</p>')
        if res.traceback:
            parts.append(f"<pre>{_esc(res.traceback)}</pre>")
    out = res.output
    for note in out.notes:
        parts.append(f"<p>{_esc(note)}</p>")
    for i, fig in enumerate(out.figures):
        parts.append(render_figure(fig, f"fig-{res.name}-{i}"))
    for t in out.tables:
        parts.append(render_table(t))
    if section_json.get("data"):
        text = json.dumps(section_json["data"], indent=1)
        clipped = len(text) > _MAX_DATA_CHARS
        if clipped:
            text = text[:_MAX_DATA_CHARS] + "\n… (clipped here; every number is in the JSON file)"
        parts.append(f"<details><summary>data ({len(section_json['data'])} keys)</summary>"
                     f"<pre>{_esc(text)}</pre></details>")
    if res.status == "ok":
        parts.append(f'<p class="muted">{res.seconds:.1f} s</p>')
    parts.append("</section>")
    return "\n".join(parts)


def render_html(results: Sequence[SectionResult], meta: dict[str, Any], section_json: Sequence[dict[str, Any]],
                prompts: Sequence[Any]) -> str:
    """One self-contained HTML page for a report."""
    summary_rows = "".join(
        f'<tr><td><a href="#sec-{_esc(r.name)}">{_esc(r.title)}</a></td>'
        f'<td><span class="badge {r.status}">{r.status}</span></td>'
        f'<td class="num">{r.seconds:.1f}</td><td>{_esc(r.reason or "")}</td></tr>'
        for r in results
    )
    versions = meta.get("versions", {})
    meta_rows = "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
        for k, v in [
            ("model", meta.get("model")), ("dtype", meta.get("dtype")), ("device", meta.get("device")),
            ("prepend BOS", meta.get("prepend_bos")), ("seed", meta.get("seed")),
            ("prompts", meta.get("n_prompts")), ("created (UTC)", meta.get("created_utc")),
            ("versions", ", ".join(f"{k}={v}" for k, v in versions.items())),
            ("hooks", _compress_hooks(meta.get("hooks", [])) or "—"),
        ]
    )
    prompt_rows = "".join(
        f"<tr><td class='num'>{i}</td><td>{_esc(p.domain)}</td><td><code>{_esc(h['sha256_16'])}</code></td>"
        f"<td>{_esc(p.text[:120] + ('…' if len(p.text) > 120 else ''))}</td></tr>"
        for i, (p, h) in enumerate(zip(prompts, meta.get("prompts", [])))
    )
    body = "\n".join(_section_html(r, j) for r, j in zip(results, section_json))
    n_fail = sum(r.status == "failed" for r in results)
    n_skip = sum(r.status == "skipped" for r in results)
    title = f"interp report — {meta.get('model')}"
    return page_head(title, _CSS) + f"""<p class="muted">{len(results)} sections: {len(results) - n_fail - n_skip} ok, {n_fail} failed, {n_skip} skipped.
Every number shown here is also in the JSON file written beside this page.</p>
<table><thead><tr><th>section</th><th>status</th><th>seconds</th><th>reason</th></tr></thead>
<tbody>{summary_rows}</tbody></table>
<table>{meta_rows}</table>
{body}
<h2>Prompts</h2>
<table><thead><tr><th>#</th><th>domain</th><th>sha256[:16]</th><th>text</th></tr></thead><tbody>{prompt_rows}</tbody></table>
<script>{_RENDER_CHECK}</script>
</body>
</html>
"""
