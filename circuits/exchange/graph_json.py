"""Positional graphs as Neuronpedia / circuit-tracer graph JSON.

circuit-tracer (Ameisen et al. 2025, "Circuit tracing: revealing computational graphs in
language models", transformer-circuits.pub; safety-research/circuit-tracer) and Neuronpedia's
graph viewer read one JSON object with ``metadata`` (``slug``, ``scan``, ``prompt_tokens``,
``prompt``, ``schema_version``, …), ``qParams`` (``pinnedIds``, ``supernodes``, ``linkType``,
``clickedId``, ``sg_pos``), ``nodes`` (``node_id``, ``feature``, ``layer`` as a string,
``ctx_idx``, ``feature_type``, ``jsNodeId``, ``clerp``, ``influence``, ``activation``,
``token_prob``, ``is_target_logit``, ``run_idx``, ``reverse_ctx_idx``) and ``links``
(``source``, ``target``, ``weight``). Their nodes are transcoder features; here they are this
project's position-aware graph nodes (Haklay et al. 2025, arXiv:2502.04577):

* ``embed`` @ p: ``feature_type`` ``"embedding"``, ``layer`` ``"E"``, ``node_id`` ``E_0_{p}``;
* head output ``L{l}H{h}`` @ p: ``"attention head"``, layer ``"{l}"``, ``{l}_{h}_{p}`` (feature h);
* receivers ``L{l}H{h}.q`` / ``L{l}KV{g}.k`` / ``L{l}KV{g}.v`` @ p: ``"attention q"`` / ``"attention k"``
  / ``"attention v"``, layer ``"{l}"``, ``{l}_q{h}_{p}`` / ``{l}_k{g}_{p}`` / ``{l}_v{g}_{p}``;
* ``M{l}`` @ p (MLP input and output, one node): ``"mlp"``, layer ``"{l}"``, ``{l}_m_{p}`` (feature −1);
* ``logits`` @ p: ``"logit"``, layer ``"{L+1}"`` (circuit-tracer's logit layer), ``{L+1}_0_{p}``.

``ctx_idx`` is the token position (granularity ``"position"``) or the span index (``"span"``;
the span name is in the node's ``span`` and ``clerp``). Links: same-position edges sender @ p
→ receiver @ p, crossing edges q/k/v receiver @ (p or p') → head @ p, each with its attribution
``weight`` and ``kind``. Graphs are pruned before export (the 73-token Gemma-2-2B graphs of
circuit-tracer reach 1.7 GB of JSON): the ``max_links`` edges of largest |score| (or a
:class:`~circuits.circuit.Circuit`'s edges), and only the nodes they touch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from interp.results import atomic_write_text

__all__ = ["to_graph_json", "save_graph_json", "GRAPH_JSON_NODE_KEYS", "GRAPH_JSON_METADATA_KEYS"]

GRAPH_JSON_NODE_KEYS = ("node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit",
                        "run_idx", "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation")
GRAPH_JSON_METADATA_KEYS = ("slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold",
                            "schema_version")


def _node(name: str, p: int, positions: list[Any], n_layers: int, granularity: str) -> dict[str, Any]:
    """The graph-JSON node of this project's node ``name`` at position/span index ``p``."""
    import re

    P = len(positions)
    if name == "embed":
        layer, key, feat, ftype = "E", "E_0", 0, "embedding"
    elif name == "logits":
        layer, key, feat, ftype = str(n_layers + 1), f"{n_layers + 1}_0", 0, "logit"
    elif m := re.match(r"^L(\d+)H(\d+)$", name):
        layer, key, feat, ftype = m[1], f"{m[1]}_{m[2]}", int(m[2]), "attention head"
    elif m := re.match(r"^L(\d+)H(\d+)\.q$", name):
        layer, key, feat, ftype = m[1], f"{m[1]}_q{m[2]}", int(m[2]), "attention q"
    elif m := re.match(r"^L(\d+)KV(\d+)\.([kv])$", name):
        layer, key, feat, ftype = m[1], f"{m[1]}_{m[3]}{m[2]}", int(m[2]), f"attention {m[3]}"
    elif m := re.match(r"^M(\d+)$", name):
        layer, key, feat, ftype = m[1], f"{m[1]}_m", -1, "mlp"
    else:
        raise ValueError(f"unknown graph node {name!r}")
    node_id = f"{key}_{p}"
    pos = positions[p]
    out = {"node_id": node_id, "feature": feat, "layer": layer, "ctx_idx": int(p), "feature_type": ftype,
           "token_prob": 0.0, "is_target_logit": name == "logits", "run_idx": 0, "reverse_ctx_idx": P - 1 - int(p),
           "jsNodeId": f"{key}-{p}", "clerp": f"{name} @ {pos}", "influence": 0.0, "activation": None,
           "name": name, "position": str(pos)}
    if granularity == "span":
        out["span"] = str(pos)
    return out


def to_graph_json(
    obj: Any,
    *,
    max_links: int | None = 2000,
    slug: str | None = None,
    prompt: str | None = None,
) -> dict[str, Any]:
    """A Neuronpedia / circuit-tracer style graph JSON (dict) of an
    :class:`~circuits.graph.AttributionGraph` (its ``max_links`` edges of largest |score|;
    ``None`` = all) or of a :class:`~circuits.circuit.Circuit` (its edges). Node ``influence`` is
    the sum of |weight| of the exported links touching the node."""
    from circuits.circuit import Circuit
    from circuits.graph import AttributionGraph

    if isinstance(obj, AttributionGraph):
        edges = obj.top_edges(max_links)
        recs = []
        for e in edges:
            if e.kind == "same":
                recs.append((e.sender, e.receiver, e.pos, e.pos, e.score, "same"))
            else:
                head = e.sender
                l, h = (int(x) for x in head[1:].split("H"))
                parent = _cross_parent(obj.receivers, l, h, e.kind, obj.n_heads)
                recs.append((parent, head, e.pos if e.kind == "q" else e.kpos, e.pos, e.score, e.kind))
        positions = list(obj.positions)
        L = obj.n_layers
        gran = obj.granularity
    elif isinstance(obj, Circuit):
        recs = []
        for e in obj.edges():
            if e["type"] == "same_pos":
                recs.append((e["sender"], e["receiver"], e["position"], e["position"], e["score"], "same"))
            else:
                recs.append((e["sender"], e["receiver"], e["qpos"] if e["kind"] == "q" else e["kpos"], e["qpos"],
                             e["score"], e["kind"]))
        if max_links is not None:
            recs = recs[:max_links]
        positions = list(obj.positions)
        L = int(obj.cross_shape[0])
        gran = obj.granularity
    else:
        raise TypeError(f"to_graph_json takes an AttributionGraph or a Circuit, got {type(obj).__name__}")
    pidx = {p: i for i, p in enumerate(positions)}
    pidx.update({str(p): i for i, p in enumerate(positions)})
    nodes: dict[str, dict[str, Any]] = {}
    links = []
    for src, dst, p_src, p_dst, w, kind in recs:
        a = _node(src, pidx[p_src], positions, L, gran)
        b = _node(dst, pidx[p_dst], positions, L, gran)
        for n in (a, b):
            nodes.setdefault(n["node_id"], n)["influence"] += abs(float(w))
        links.append({"source": a["node_id"], "target": b["node_id"], "weight": float(w), "kind": kind})
    meta = dict(getattr(obj, "meta", {}) or {})
    gm = meta.get("graph_meta", {}) if isinstance(meta.get("graph_meta"), dict) else {}
    model = meta.get("model", gm.get("model")) or "model"
    task = meta.get("task", gm.get("task")) or "graph"
    tokens = [str(p).split(":", 1)[1] if gran == "position" and ":" in str(p) else str(p) for p in positions]
    return {
        "metadata": {"slug": slug or f"{task}-{model}".replace("/", "-"), "scan": str(model), "transcoder_list": [],
                     "prompt_tokens": tokens, "prompt": prompt if prompt is not None else "".join(tokens),
                     "node_threshold": None, "schema_version": 1, "granularity": gran,
                     "prepend_bos": meta.get("prepend_bos", gm.get("prepend_bos")),
                     "method": meta.get("method"), "source": "posinterp position-aware attribution graph"},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": list(nodes.values()),
        "links": links,
    }


def _cross_parent(receivers: list[str], l: int, h: int, kind: str, n_heads: int) -> str:
    if kind == "q":
        return f"L{l}H{h}.q"
    G = sum(1 for r in receivers if r.startswith(f"L{l}KV") and r.endswith(".k"))
    g = h // (n_heads // max(G, 1))
    return f"L{l}KV{g}.{kind}"


def save_graph_json(obj: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`to_graph_json` to ``path`` (atomically)."""
    return atomic_write_text(path, json.dumps(to_graph_json(obj, **kwargs)))
