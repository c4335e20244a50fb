"""The atlas view: the circuit graph (layers × positions/spans) and a card per head, in one
offline HTML file (plotly.js embedded once; hovering or clicking a head opens its card)."""

from __future__ import annotations

import html
import json
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from interp.results import to_jsonable

_ROLE_COLOURS = {
    "previous-token": "#1f77b4", "self": "#17becf", "induction": "#d62728", "duplicate-token": "#9467bd",
    "sink": "#7f7f7f", "first-token": "#7f7f7f", "content": "#2ca02c", "inert": "#ffffff",
}
_KIND_COLOURS = {"q": "#ff7f0e", "k": "#1f77b4", "v": "#2ca02c", "same": "#999999"}


def _colour(label: str) -> str:
    if label.startswith("offset-"):
        return "#e377c2"
    return _ROLE_COLOURS.get(label, "#bcbd22")


def _node_y(kind: str, layer: int, head: int, H: int) -> float:
    return layer + (head + 0.5) / max(H, 1) * 0.6 - 0.3


def _sender_xy(a: Any, name: str, pos: int, H: int) -> tuple[float, float]:
    L = int(a.role_scores.shape[0])
    if name == "embed":
        return float(pos), -1.0
    if name.startswith("M"):
        return pos + 0.3, int(name[1:]) + 0.45
    l, h = name[1:].split("H")
    return float(pos), _node_y("head", int(l), int(h), H)


def _receiver_xy(a: Any, name: str, pos: int, H: int) -> tuple[float, float]:
    L = int(a.role_scores.shape[0])
    if name == "logits":
        return float(pos), float(L)
    if name.startswith("M"):
        return pos + 0.3, int(name[1:]) + 0.45
    base = name.split(".")[0]
    if "KV" in base:
        l = int(base[1:].split("KV")[0])
        return pos - 0.2, float(l) - 0.35
    l, h = base[1:].split("H")
    return float(pos), _node_y("head", int(l), int(h), H)


def _summary(name: str, c: dict[str, Any]) -> str:
    tags = ", ".join(t for t in c["tags"] if t != "in-circuit") or "—"
    out = f"<b>{name}</b>: {c['label']}<br>pattern: {c['pattern_label']}<br>tags: {tags}"
    out += f"<br>α₀={c['alpha0']:.2f}  high-freq share={c['high_share']:.2f}" if c["high_share"] == c["high_share"] \
        else f"<br>α₀={c['alpha0']:.2f}"
    if c.get("domain_label"):
        out += f"<br>{c['domain_label']}"
    out += f"<br>node score={c['node_score']:.3g}, edges={len(c['edges'])}"
    return out


def graph_figure(a: Any) -> go.Figure:
    """Circuit graph: x = position/span, y = layer (embeddings at −1, logits at the top)."""
    L, H = int(a.role_scores.shape[0]), int(a.role_scores.shape[1])
    pos_ix = {p: i for i, p in enumerate(a.positions)}
    fig = go.Figure()
    seg: dict[str, tuple[list[Any], list[Any]]] = {k: ([], []) for k in _KIND_COLOURS}
    nodes: dict[tuple[str, int], tuple[float, float]] = {}
    for e in a.edges:
        if e["type"] == "same_pos":
            p = pos_ix.get(str(e["position"]), 0)
            x0, y0 = _sender_xy(a, e["sender"], p, H)
            x1, y1 = _receiver_xy(a, e["receiver"], p, H)
            kind = "same"
        else:
            qp, kp = pos_ix.get(str(e["qpos"]), 0), pos_ix.get(str(e["kpos"]), 0)
            l, h = e["receiver"][1:].split("H")
            x1, y1 = float(qp), _node_y("head", int(l), int(h), H)
            x0, y0 = (kp - 0.2, int(l) - 0.35) if e["kind"] != "q" else (qp - 0.2, int(l) - 0.35)
            kind = e["kind"]
        xs, ys = seg[kind]
        xs += [x0, x1, None]
        ys += [y0, y1, None]
        for nm, xy in ((e["sender"], (x0, y0)), (e["receiver"], (x1, y1))):
            base = nm.split(".")[0]
            if base.startswith("L") and "KV" not in base:
                nodes[(base, int(round(xy[0])))] = xy
    for kind, (xs, ys) in seg.items():
        if xs:
            fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=_KIND_COLOURS[kind], width=1),
                            opacity=0.5, hoverinfo="skip",
                            name="same-position edges" if kind == "same" else f"crossing {kind} edges")
    names = sorted({n for n, _ in nodes})
    for label in sorted({a.heads[n]["label"] for n in names}):
        pts = [(n, xy) for (n, _), xy in nodes.items() if a.heads[n]["label"] == label]
        fig.add_scatter(
            x=[xy[0] for _, xy in pts], y=[xy[1] for _, xy in pts], mode="markers", name=label,
            marker=dict(size=12, color=_colour(label), line=dict(width=1, color="black")),
            customdata=[n for n, _ in pts], text=[_summary(n, a.heads[n]) for n, _ in pts],
            hovertemplate="%{text}<extra></extra>")
    ticks = list(range(len(a.positions)))
    fig.update_layout(
        title=f"Mechanism atlas — {a.model}, {a.task['name']} ({a.task['n']} examples): circuit of "
              f"{a.params.get('n_edges')} edges, f = {a.faithfulness:.2f}",
        xaxis=dict(title="position / span", tickvals=ticks, ticktext=[str(p) for p in a.positions]),
        yaxis=dict(title="layer", tickvals=[-1] + list(range(L)) + [L],
                   ticktext=["embed"] + [f"L{l}" for l in range(L)] + ["logits"]),
        height=max(420, 40 * L + 200), hovermode="closest", clickmode="event")
    return fig


def class_map(a: Any) -> go.Figure:
    """Layer × head map of every head's label (click a cell for its card)."""
    L, H = int(a.role_scores.shape[0]), int(a.role_scores.shape[1])
    labels = sorted({c["label"] for c in a.heads.values()})
    code = {lab: i for i, lab in enumerate(labels)}
    z = [[code[a.heads[f"L{l}H{h}"]["label"]] for h in range(H)] for l in range(L)]
    text = [[_summary(f"L{l}H{h}", a.heads[f"L{l}H{h}"]) for h in range(H)] for l in range(L)]
    cd = [[f"L{l}H{h}" for h in range(H)] for l in range(L)]
    n = max(1, len(labels) - 1)
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"H{h}" for h in range(H)], y=[f"L{l}" for l in range(L)], text=text, customdata=cd,
        hovertemplate="%{text}<extra></extra>", colorscale="Turbo", zmin=0, zmax=n,
        colorbar=dict(title="label", tickvals=list(range(len(labels))), ticktext=labels)))
    fig.update_layout(title=f"Every head's label — {a.model}", xaxis_title="head", yaxis_title="layer",
                      yaxis_autorange="reversed", height=max(320, 18 * L + 160))
    return fig


_JS = """
var ATLAS = JSON.parse(document.getElementById('atlas-data').textContent);
function fmt(v) { return (typeof v === 'number') ? (Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 1e-3) ?
  v.toExponential(2) : v.toFixed(3)) : (v === null ? 'nan' : String(v)); }
function esc(s) { return String(s).replace(/[&<>"]/g, function (c) {
  return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]; }); }
function showCard(name) {
  var c = ATLAS.heads[name]; if (!c) { return; }
  var h = '<h3>' + esc(name) + ': ' + esc(c.label) + '</h3>';
  if (c.note) { h += '<p class="muted">' + esc(c.note) + '</p>'; }
  h += '<table><tr><th>pattern label</th><td>' + esc(c.pattern_label) + '</td></tr>' +
    '<tr><th>tags</th><td>' + esc(c.tags.join(', ') || '—') + '</td></tr>' +
    (c.domain_label ? '<tr><th>domains</th><td>' + esc(c.domain_label) + '</td></tr>' : '') +
    '<tr><th>α₀ (sink)</th><td>' + fmt(c.alpha0) + '</td></tr>' +
    '<tr><th>value-drain ratio</th><td>' + fmt(c.drain_ratio) + '</td></tr>' +
    '<tr><th>high-frequency share</th><td>' + fmt(c.high_share) + '</td></tr>' +
    (c.high_margin_share !== undefined ? '<tr><th>highest-quarter share of the offset-' + c.offset +
      ' margin</th><td>' + fmt(c.high_margin_share) + '</td></tr>' : '') +
    '<tr><th>node score</th><td>' + fmt(c.node_score) + '</td></tr>' +
    '<tr><th>share of circuit |edge score|</th><td>' + fmt(c.edge_share) + '</td></tr></table>';
  var sc = Object.keys(c.scores).map(function (k) { return k + '=' + fmt(c.scores[k]); }).join(', ');
  h += '<p><b>role scores</b>: ' + esc(sc) + '</p>';
  if (c.edges.length) {
    h += '<table><caption class="muted">circuit edges (largest |score| first)</caption><tr><th>edge</th>' +
      '<th>what</th><th>score</th><th>band</th><th>key sink / massive</th></tr>';
    c.edges.slice(0, 12).forEach(function (i) {
      var e = ATLAS.edges[i];
      var where = e.type === 'same_pos' ? e.sender + ' → ' + e.receiver + ' @ ' + e.position :
        e.sender + ' → ' + e.receiver + ' (' + e.kind + ') q@' + e.qpos + ' k@' + e.kpos;
      var band = e.band ? e.band + ' (' + fmt(e.band_shares[e.band]) + ')' : '';
      var sink = e.type === 'cross' ? (e.key_is_sink ? 'sink' : '—') + ' / ' + (e.key_massive ? 'massive' : '—') : '';
      h += '<tr><td>' + esc(where) + '</td><td>' + esc(e.composition) + '</td><td>' + fmt(e.score) +
        '</td><td>' + esc(band) + '</td><td>' + sink + '</td></tr>';
    });
    h += '</table>';
  }
  c.checks.forEach(function (i) {
    var k = ATLAS.checks[i];
    h += '<table><caption class="muted">causal check: ' + esc(k.kind) + ' — ' + esc(k.band) + ' (heads ' +
      esc(k.heads.join(', ')) + '; tolerance ' + fmt(k.tolerance) + ')</caption><tr><th>quantity</th>' +
      '<th>measured</th><th>predicted</th><th>agrees</th></tr>';
    Object.keys(k.measured).forEach(function (q) {
      var has = Object.prototype.hasOwnProperty.call(k.predicted, q);
      h += '<tr><td>' + esc(q) + '</td><td>' + fmt(k.measured[q]) + '</td><td>' + (has ? fmt(k.predicted[q]) : '') +
        '</td><td>' + (has ? (k.agrees[q] ? 'yes' : 'no') : '') + '</td></tr>';
    });
    h += '</table><p class="muted">' + esc(k.note) + '</p>';
  });
  h += '<div class="cardfigs"><div id="card-alpha" class="plotly-graph-div card-fig"></div>' +
    '<div id="card-freq" class="plotly-graph-div card-fig"></div>' +
    '<div id="card-pattern" class="plotly-graph-div card-fig"></div></div>';
  document.getElementById('card').innerHTML = h;
  var lay = {height: 260, margin: {l: 50, r: 10, t: 35, b: 40}};
  Plotly.newPlot('card-alpha', [{y: c.alpha_curve, mode: 'lines+markers', name: 'α_k'}],
    Object.assign({title: 'α curve: mean attention to key k', xaxis: {title: 'key position k'}}, lay),
    {displayModeBar: false});
  var fr = [];
  if (c.q_norm) { fr.push({y: c.q_norm, type: 'bar', name: '‖q⁽ᵏ⁾‖'}); fr.push({y: c.k_norm, type: 'bar', name: '‖k⁽ᵏ⁾‖'}); }
  if (c.margin_by_chunk) { fr.push({y: c.margin_by_chunk, type: 'scatter', mode: 'lines+markers', name: 'margin', yaxis: 'y2'}); }
  Plotly.newPlot('card-freq', fr, Object.assign({title: 'frequency profile (chunk 0 = highest)',
    xaxis: {title: 'chunk'}, yaxis2: {overlaying: 'y', side: 'right'}, barmode: 'group'}, lay), {displayModeBar: false});
  var pt = c.pattern ? [{z: c.pattern.attention, type: 'heatmap', colorscale: 'Blues', zmin: 0, zmax: 1,
    x: c.pattern.tokens.map(function (t, i) { return i + ':' + t; }),
    y: c.pattern.tokens.map(function (t, i) { return i + ':' + t; })}] : [];
  Plotly.newPlot('card-pattern', pt, Object.assign({title: 'attention on example 0', yaxis: {autorange: 'reversed'}},
    lay, {height: 360}), {displayModeBar: false});
}
function hook(id) {
  var d = document.getElementById(id); if (!d || !d.on) { return; }
  var pick = function (ev) { var p = ev && ev.points && ev.points[0]; if (p && p.customdata) { showCard(p.customdata); } };
  d.on('plotly_click', pick); d.on('plotly_hover', pick);
}
window.addEventListener('load', function () { hook('atlas-graph'); hook('atlas-classes'); showCard(ATLAS.first); });
"""


def render_html(a: Any) -> str:
    """The offline page: graph, class map, the card panel, the causal checks and probes."""
    from plotly.offline import get_plotlyjs

    from interp.reports._html import _CSS, _ERROR_COLLECTOR, _RENDER_CHECK

    first = (a.circuit_heads() or list(a.heads))[0]
    data = to_jsonable({"heads": a.heads, "edges": a.edges, "checks": a.checks, "first": first})
    blob = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    g = pio.to_html(graph_figure(a), full_html=False, include_plotlyjs=False, div_id="atlas-graph")
    cm = pio.to_html(class_map(a), full_html=False, include_plotlyjs=False, div_id="atlas-classes")
    probe = ""
    if a.probes:
        rows = "".join(f"<tr><td>{html.escape(str(r['hook']))}</td><td>{r['score']:.3f}</td>"
                       f"<td>{'' if r['control'] is None else format(r['control'], '.3f')}</td>"
                       f"<td>{'' if r['selectivity'] is None else format(r['selectivity'], '.3f')}</td>"
                       f"<td>{'yes' if r['decodable'] else 'no'}</td></tr>" for r in a.probes)
        probe = (f"<h2>Position probes per layer</h2><table><tr><th>hook</th><th>{html.escape(a.probes[0]['metric'])}"
                 "</th><th>control task</th><th>selectivity</th><th>position decodable</th></tr>" + rows + "</table>")
    t = a.task
    meta = (f"{html.escape(str(t['name']))}: {t['n']} examples, metric {html.escape(str(t['metric']))}, "
            f"{t['ablation']} ablation, {t['method']} at {t['granularity']} granularity; circuit "
            f"{a.params.get('n_edges')} edges, faithfulness f = {a.faithfulness:.3f}; BOS "
            f"{'prepended' if a.prepend_bos else 'not prepended'}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Mechanism atlas — {html.escape(a.model)}</title>
<style>{_CSS}
#card {{ border: 1px solid #d0d7de; border-radius: 6px; padding: .5rem 1rem; min-height: 10rem; }}
.cardfigs {{ display: grid; grid-template-columns: 1fr 1fr; gap: .5rem; }}
#card-pattern {{ grid-column: span 2; }}
</style>
<script>{_ERROR_COLLECTOR}</script>
<script>{get_plotlyjs()}</script>
</head><body>
<div id="js-error-banner"></div>
<h1>Mechanism atlas — {html.escape(a.model)}</h1>
<p class="muted">{meta}. Hover or click a head in the graph or in the map to open its card.</p>
<div class="figure">{g}</div>
<h2>Head card</h2><div id="card"></div>
<h2>Every head</h2><div class="figure">{cm}</div>
{probe}
<script type="application/json" id="atlas-data">{blob}</script>
<script>{_JS}</script>
<script>{_RENDER_CHECK}</script>
</body></html>
"""
