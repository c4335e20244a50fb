"""EAP-IG / MIB graph JSON: export of :class:`AttributionGraph` / :class:`Circuit`, and import.

The format is the one ``Graph.to_json`` / ``Graph.from_json`` of EAP-IG (Hanna et al. 2024,
"Have faith in faithfulness", arXiv:2403.17806; hannamw/EAP-IG ``src/eap/graph.py``) reads and
writes, and the one the MIB circuit-localization track scores (Mueller et al. 2025, "MIB: a
mechanistic interpretability benchmark", arXiv:2504.13151)::

    {"cfg":   {"n_layers": L, "n_heads": H, "parallel_attn_mlp": false, "d_model": D},
     "nodes": {"input": {"in_graph": b}, "a0.h0": {...}, …, "m0": {...}, …, "logits": {...}},
     "edges": {"input->a0.h0<q>": {"score": s, "in_graph": b}, …, "m3->logits": {...}}}

Nodes: ``input``, ``a{l}.h{h}`` (head output), ``m{l}`` (MLP), ``logits``. Edges
``parent->child``, with ``<q>``/``<k>``/``<v>`` when the child is a head: every node upstream of
layer ``l``'s attention into each head's q, k and v input; every node upstream of the MLP (the
same layer's heads included unless ``parallel_attn_mlp``) into ``m{l}``; every node into
``logits``: ``L(3H+1)(1 + … )`` edges in all, 32,491 for GPT-2 small. The loader builds that full
graph from ``cfg`` and then assigns ``score`` and ``in_graph`` edge by edge: an edge name it does
not know is a ``KeyError`` there, an edge the file leaves out keeps score 0.

**The position-agnostic projection** (what this module writes). EAP-IG has no positions.

* Same-position edges ``s@p → r@p`` are summed over positions ``p`` (spans: over spans): for
  EAP/EAP-IG scores this is exactly EAP-IG's edge score, which sums
  ``(z'_s − z_s)·∂M/∂(input of r)`` over token positions.
* Crossing edges (``q_t``, ``k_{t'}``, ``v_{t'}`` into head output at ``t``) have no counterpart:
  they are internal to an EAP-IG head node, which always uses its whole attention. They are
  *folded into the head's q/k/v receiver*: a circuit's edge ``s → a{l}.h{h}<k>`` is in the EAP-IG
  circuit iff some same-position edge ``s → k-receiver`` *and* some crossing k edge of head
  ``h`` are in the circuit. On import the folding is undone: the crossing edge (kind, head) of
  the position-agnostic graph scores the total of the head's incoming edges of that kind and
  is in the circuit iff one of them is.
* **GQA.** EAP-IG (and MIB, which runs TransformerLens with
  ``ungroup_grouped_query_attention=True``) has one k and one v input per *query* head; this
  project has one per KV head ``g``, shared by query heads ``g·H/G … (g+1)·H/G − 1``. Export
  splits a KV receiver's edge score equally over its query heads (``score / (H/G)`` each, so
  the per-query-head scores sum back to the KV score; the exact per-head share of a shared key
  gradient is not in the graph), and an edge into the KV receiver of a circuit becomes an
  edge into every query head of the group whose crossing k (v) edges are in the circuit.
  Import sums the query heads of a group back into the KV receiver (``n_kv_heads`` must then be
  given: the EAP-IG ``cfg`` does not record it).

Round trips: export → import reproduces the summed same-position scores (float32, exactly for
no GQA; the equal GQA split sums back up to float rounding); a position-agnostic (granularity
``"none"``) pruned circuit exported and re-imported is the same circuit, so its faithfulness by
real patching is unchanged. A positional circuit projects onto the position-agnostic circuit
that contains it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from interp.results import atomic_write_text
from interp.types import Model

__all__ = ["EAPIGLayout", "to_eap_ig", "save_eap_ig", "load_eap_ig", "graph_from_eap_ig", "circuit_from_eap_ig",
           "eap_ig_edge_names", "save_mib_submission", "MIB_TASKS", "MIB_MODELS"]

#: tasks and models of the MIB circuit-localization track (folder ``{task with - for _}_{model}``)
MIB_TASKS = ("ioi", "mcqa", "arithmetic_addition", "arithmetic_subtraction", "arc_easy", "arc_challenge")
MIB_MODELS = ("gpt2", "qwen2.5", "gemma2", "llama3", "interpbench")


class EAPIGLayout:
    """The EAP-IG edge list of a model shape, mapped onto this project's sender/receiver indices.

    ``edges[i] = (name, parent, child, qkv)`` in EAP-IG's construction order; ``sender[i]`` and
    ``receiver[i]`` index this project's :func:`~circuits._forward.sender_names` /
    :func:`~circuits._forward.receiver_names`; ``head[i]`` is the query head of a q/k/v child
    (``-1`` otherwise) and ``kind[i]`` 0/1/2 for q/k/v (``-1`` otherwise).
    """

    def __init__(self, n_layers: int, n_heads: int, n_kv_heads: int | None = None, parallel_attn_mlp: bool = False):
        from circuits._forward import receiver_names, sender_names

        L, H = int(n_layers), int(n_heads)
        G = H if n_kv_heads is None else int(n_kv_heads)
        if L < 1 or H < 1 or G < 1 or H % G:
            raise ValueError(f"bad model shape n_layers={L}, n_heads={H}, n_kv_heads={G} "
                             "(n_heads must be a multiple of n_kv_heads)")
        self.n_layers, self.n_heads, self.n_kv_heads, self.group = L, H, G, H // G
        self.parallel_attn_mlp = bool(parallel_attn_mlp)
        self.senders = sender_names(L, H)
        self.receivers = receiver_names(L, H, G)
        s_ix = {s: i for i, s in enumerate(self.senders)}
        r_ix = {r: i for i, r in enumerate(self.receivers)}
        self.nodes = ["input"] + [n for l in range(L) for n in [*(f"a{l}.h{h}" for h in range(H)), f"m{l}"]] + ["logits"]
        ours = {"input": "embed"}
        for l in range(L):
            ours[f"m{l}"] = f"M{l}"
            for h in range(H):
                ours[f"a{l}.h{h}"] = f"L{l}H{h}"
        edges: list[tuple[str, str, str, str | None]] = []
        resid = ["input"]
        for l in range(L):
            heads = [f"a{l}.h{h}" for h in range(H)]
            for p in resid:
                for c in heads:
                    for x in "qkv":
                        edges.append((f"{p}->{c}<{x}>", p, c, x))
                if self.parallel_attn_mlp:
                    edges.append((f"{p}->m{l}", p, f"m{l}", None))
            resid = resid + heads
            if not self.parallel_attn_mlp:
                for p in resid:
                    edges.append((f"{p}->m{l}", p, f"m{l}", None))
            resid = resid + [f"m{l}"]
        for p in resid:
            edges.append((f"{p}->logits", p, "logits", None))
        self.edges = edges
        self.index = {e[0]: i for i, e in enumerate(edges)}
        n = len(edges)
        self.sender = np.empty(n, dtype=np.int64)
        self.receiver = np.empty(n, dtype=np.int64)
        self.head = np.full(n, -1, dtype=np.int64)
        self.kind = np.full(n, -1, dtype=np.int64)
        self.layer = np.full(n, -1, dtype=np.int64)
        for i, (_, p, c, x) in enumerate(edges):
            self.sender[i] = s_ix[ours[p]]
            if x is None:
                self.receiver[i] = r_ix["logits"] if c == "logits" else r_ix[ours[c]]
                continue
            l, h = (int(v) for v in c[1:].split(".h"))
            self.head[i], self.kind[i], self.layer[i] = h, "qkv".index(x), l
            rname = f"L{l}H{h}.q" if x == "q" else f"L{l}KV{h // self.group}.{x}"
            self.receiver[i] = r_ix[rname]
        # share of a receiver's score each EAP-IG edge carries (1/group for k/v under GQA)
        self.share = np.where(self.kind >= 1, 1.0 / self.group, 1.0)

    def valid(self) -> Tensor:
        """``[sender receiver]`` mask of the edges EAP-IG has."""
        v = torch.zeros(len(self.senders), len(self.receivers), dtype=torch.bool)
        v[torch.as_tensor(self.sender), torch.as_tensor(self.receiver)] = True
        return v


def eap_ig_edge_names(n_layers: int, n_heads: int, parallel_attn_mlp: bool = False) -> list[str]:
    """Every edge name of the EAP-IG graph of a model shape, in EAP-IG's construction order."""
    return [e[0] for e in EAPIGLayout(n_layers, n_heads, None, parallel_attn_mlp).edges]


def _shape_of(obj: Any) -> tuple[int, int, int, bool]:
    from circuits.circuit import GraphIndex

    shape = obj.cross_shape if hasattr(obj, "cross_shape") else obj.cross.shape
    L, H = int(shape[0]), int(shape[1])
    ix = GraphIndex(obj.senders, obj.receivers, L, H)
    s_h, r_m = ix.head_sender[0, 0], ix.mlp_recv[0]
    valid = getattr(obj, "valid", None)
    parallel = bool(valid is not None and s_h >= 0 and r_m >= 0 and not bool(valid[s_h, r_m]))
    return L, H, ix.n_kv_heads, parallel


def to_eap_ig(obj: Any, *, circuit: Any = None, d_model: int | None = None) -> dict[str, Any]:
    """The EAP-IG graph JSON (a dict) of an :class:`~circuits.graph.AttributionGraph` or a
    :class:`~circuits.circuit.Circuit` (position-agnostic projection, see the module docstring).

    ``circuit``: with a graph, the circuit whose edges get ``in_graph: true`` (default: none, as
    EAP-IG writes a scored graph before selection). ``d_model`` goes into ``cfg`` (default: the
    graph's ``meta["d_model"]`` or 0; the loader only uses it for neuron-level graphs).
    """
    from circuits.circuit import Circuit
    from circuits.graph import AttributionGraph

    if isinstance(obj, Circuit):
        if circuit is not None:
            raise ValueError("pass a graph with circuit=..., or a circuit alone")
        circuit, scores_src = obj, obj.same_pos_scores
    elif isinstance(obj, AttributionGraph):
        scores_src = obj.same_pos * obj.valid
    else:
        raise TypeError(f"to_eap_ig takes an AttributionGraph or a Circuit, got {type(obj).__name__}")
    L, H, G, parallel = _shape_of(obj)
    lay = EAPIGLayout(L, H, G, parallel)
    if list(obj.senders) != lay.senders or list(obj.receivers) != lay.receivers:
        raise ValueError("the graph's sender/receiver names are not this project's standard lists "
                         "(circuits._forward.sender_names / receiver_names); cannot map them to EAP-IG")
    if isinstance(obj, AttributionGraph):
        extra = obj.valid & ~lay.valid()
        if extra.any():
            s, r = extra.nonzero()[0].tolist()
            raise ValueError(f"edge {obj.senders[s]} -> {obj.receivers[r]} has no EAP-IG counterpart "
                             "(the graph's topology differs from EAP-IG's)")
    sender, receiver = torch.as_tensor(lay.sender), torch.as_tensor(lay.receiver)
    summed = scores_src.detach().float().sum(0)  # [S R]: same-position scores summed over positions
    scores = (summed[sender, receiver].double() * torch.as_tensor(lay.share)).float().tolist()
    if circuit is not None:
        if circuit.same_pos.shape[1:] != (len(lay.senders), len(lay.receivers)):
            raise ValueError("circuit and graph have different senders/receivers")
        any_pos = circuit.same_pos.any(0)  # [S R]
        cross_on = circuit.cross_head_kinds()  # [L H 3]
        ing = any_pos[sender, receiver].clone()
        attn = torch.as_tensor(lay.kind >= 0)
        li, hi, ki = (torch.as_tensor(np.maximum(a, 0)) for a in (lay.layer, lay.head, lay.kind))
        ing[attn] &= cross_on[li[attn], hi[attn], ki[attn]]
        in_graph = ing.tolist()
    else:
        in_graph = [False] * len(lay.edges)
    node_on = {n: False for n in lay.nodes}
    node_on["logits"] = True
    if circuit is not None:
        for (name, p, c, _), on in zip(lay.edges, in_graph):
            if on:
                node_on[p] = True
                node_on[c] = True
    meta = dict(getattr(obj, "meta", {}) or {})
    dm = d_model if d_model is not None else int(meta.get("d_model", meta.get("graph_meta", {}).get("d_model", 0)) or 0)
    return {
        "cfg": {"n_layers": L, "n_heads": H, "parallel_attn_mlp": parallel, "d_model": dm},
        "nodes": {n: {"in_graph": bool(node_on[n])} for n in lay.nodes},
        "edges": {e[0]: {"score": float(s), "in_graph": bool(g)} for e, s, g in zip(lay.edges, scores, in_graph)},
    }


def save_eap_ig(obj: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`to_eap_ig` to ``path`` (atomically); readable by EAP-IG's ``Graph.from_json``."""
    return atomic_write_text(path, json.dumps(to_eap_ig(obj, **kwargs)))


def load_eap_ig(data: dict[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check an EAP-IG graph JSON (dict, JSON text or path): the keys ``cfg`` (with
    ``n_layers``, ``n_heads``), ``nodes`` and ``edges``, every edge name known, every edge a
    ``score`` (number) and ``in_graph`` (bool)."""
    if isinstance(data, (str, os.PathLike)):
        text = str(data)
        if isinstance(data, str) and text.lstrip().startswith("{"):
            data = json.loads(text)
        else:
            p = Path(data)
            if not p.is_file():
                raise FileNotFoundError(f"{p} does not exist (pass an EAP-IG graph JSON file)")
            data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("an EAP-IG graph JSON is an object with keys 'cfg', 'nodes', 'edges'")
    missing = [k for k in ("cfg", "nodes", "edges") if k not in data]
    if missing:
        raise ValueError(f"not an EAP-IG graph JSON: missing key(s) {missing} (need 'cfg', 'nodes', 'edges')")
    cfg = data["cfg"]
    for k in ("n_layers", "n_heads"):
        if k not in cfg:
            raise ValueError(f"EAP-IG cfg lacks {k!r} (it needs n_layers, n_heads, parallel_attn_mlp, d_model)")
    return data


def _layout_for(data: dict[str, Any], n_kv_heads: int | None, model: Any) -> EAPIGLayout:
    cfg = data["cfg"]
    if model is not None:
        from circuits.attribution import patchable

        pm = patchable(model)
        if (pm.n_layers, pm.n_heads) != (int(cfg["n_layers"]), int(cfg["n_heads"])):
            raise ValueError(f"the EAP-IG graph is for {cfg['n_layers']} layers x {cfg['n_heads']} heads, the "
                             f"model has {pm.n_layers} x {pm.n_heads}")
        if n_kv_heads is not None and n_kv_heads != pm.n_kv_heads:
            raise ValueError(f"n_kv_heads={n_kv_heads} but the model has {pm.n_kv_heads} KV heads")
        n_kv_heads = pm.n_kv_heads
    return EAPIGLayout(int(cfg["n_layers"]), int(cfg["n_heads"]), n_kv_heads, bool(cfg.get("parallel_attn_mlp", False)))


def _edge_arrays(data: dict[str, Any], lay: EAPIGLayout) -> tuple[np.ndarray, np.ndarray]:
    n = len(lay.edges)
    score = np.zeros(n, dtype=np.float64)
    ing = np.zeros(n, dtype=bool)
    unknown = [k for k in data["edges"] if k not in lay.index]
    if unknown:
        raise ValueError(f"{len(unknown)} edge name(s) are not in the EAP-IG graph of cfg {data['cfg']}: "
                         f"{unknown[:5]}")
    for name, info in data["edges"].items():
        i = lay.index[name]
        sc = info.get("score")
        score[i] = float("nan") if sc is None else float(sc)
        ing[i] = bool(info.get("in_graph", False))
    return score, ing


def graph_from_eap_ig(
    data: dict[str, Any] | str | os.PathLike[str],
    *,
    n_kv_heads: int | None = None,
    model: Model = None,
    prepend_bos: bool | None = None,
    model_name: str | None = None,
) -> Any:
    """An EAP-IG graph JSON as a position-agnostic :class:`~circuits.graph.AttributionGraph`
    (granularity ``"none"``, positions ``["all"]``), to select and evaluate circuits here.

    ``same_pos[0, s, r]`` is the edge score (a KV receiver: the sum over its query heads);
    ``cross[l, h, kind, 0, 0]`` the total of head ``h``'s incoming ``kind`` edges (the folded
    crossing edge). ``n_kv_heads`` (or ``model``) is needed for GQA models. The file records no
    BOS policy: pass ``prepend_bos`` (kept in ``meta``; ``None`` = unknown).
    """
    from circuits.graph import GRAPH_VERSION, AttributionGraph

    d = load_eap_ig(data)
    lay = _layout_for(d, n_kv_heads, model)
    score, _ = _edge_arrays(d, lay)
    S, R, L, H = len(lay.senders), len(lay.receivers), lay.n_layers, lay.n_heads
    same = torch.zeros(S, R, dtype=torch.float64)
    same.index_put_((torch.as_tensor(lay.sender), torch.as_tensor(lay.receiver)), torch.as_tensor(score),
                    accumulate=True)
    cross = torch.zeros(L, H, 3, dtype=torch.float64)
    attn = lay.kind >= 0
    cross.index_put_((torch.as_tensor(lay.layer[attn]), torch.as_tensor(lay.head[attn]),
                      torch.as_tensor(lay.kind[attn])), torch.as_tensor(score[attn]), accumulate=True)
    name = model_name
    if name is None and model is not None:
        from circuits.attribution import patchable

        name = getattr(patchable(model), "model_name", None)
    meta = {"method": "eap-ig-json", "source": "EAP-IG graph JSON", "granularity": "none",
            "n_kv_heads": lay.n_kv_heads, "d_model": d["cfg"].get("d_model"),
            "parallel_attn_mlp": lay.parallel_attn_mlp, "prepend_bos": prepend_bos, "model": name,
            "version": GRAPH_VERSION}
    return AttributionGraph(list(lay.senders), list(lay.receivers), ["all"], same.float()[None], lay.valid(),
                            cross.float()[..., None, None], torch.ones(1, 1, dtype=torch.bool),
                            torch.ones(1), torch.ones(1, 1), meta)


def circuit_from_eap_ig(
    data: dict[str, Any] | str | os.PathLike[str],
    *,
    n_kv_heads: int | None = None,
    model: Model = None,
    prepend_bos: bool | None = None,
    prune: bool = True,
) -> Any:
    """The circuit (``in_graph`` edges) of an EAP-IG graph JSON as a position-agnostic
    :class:`~circuits.circuit.Circuit`, ready for :func:`circuits.faithfulness`.

    A same-position edge into a KV receiver is in iff the edge into one of its query heads is; a
    crossing edge (head, kind) is in iff one of the head's incoming ``kind`` edges is (module
    docstring). ``prune`` drops edges off every embed → logits path (as EAP-IG's ``prune``).
    """
    from circuits.select import circuit_from_masks

    d = load_eap_ig(data)
    lay = _layout_for(d, n_kv_heads, model)
    graph = graph_from_eap_ig(d, n_kv_heads=lay.n_kv_heads, model=model, prepend_bos=prepend_bos)
    _, ing = _edge_arrays(d, lay)
    S, R, L, H = len(lay.senders), len(lay.receivers), lay.n_layers, lay.n_heads
    same = torch.zeros(S, R, dtype=torch.bool)
    on = torch.as_tensor(ing)
    same[torch.as_tensor(lay.sender)[on], torch.as_tensor(lay.receiver)[on]] = True
    cross = torch.zeros(L, H, 3, dtype=torch.bool)
    attn = on & torch.as_tensor(lay.kind >= 0)
    cross[torch.as_tensor(lay.layer)[attn], torch.as_tensor(lay.head)[attn], torch.as_tensor(lay.kind)[attn]] = True
    return circuit_from_masks(graph, same[None], cross[..., None, None],
                              {"method": "eap-ig-json", "prepend_bos": prepend_bos}, do_prune=prune)


def save_mib_submission(
    graph: Any,
    out_dir: str | os.PathLike[str],
    *,
    task: str,
    model: str,
    method: str | None = None,
    d_model: int | None = None,
    strict: bool = True,
) -> Path:
    """Write the MIB circuit-track importance-score file of ``graph``:
    ``out_dir/[method/]{task}_{model}/importances.json`` (task with ``-`` for ``_``, as MIB's
    ``run_attribution.py`` names it), an EAP-IG graph JSON with a float ``score`` on every edge.

    MIB accepts per task/model folder either one file of importance scores (this) or nine circuit
    files; submissions need ≥ 2 models and ≥ 2 tasks, uploaded to a Hugging Face repository.
    ``strict``: ``task`` and ``model`` must be MIB's names (:data:`MIB_TASKS`, :data:`MIB_MODELS`);
    ``strict=False`` writes any names (e.g. for this project's own models).
    """
    from circuits.graph import AttributionGraph

    if not isinstance(graph, AttributionGraph):
        raise TypeError(f"MIB importance scores come from an AttributionGraph, got {type(graph).__name__}")
    t = task.replace("-", "_")
    if strict and t not in MIB_TASKS:
        raise ValueError(f"task {task!r} is not an MIB task {MIB_TASKS} (strict=False writes it anyway)")
    if strict and model not in MIB_MODELS:
        raise ValueError(f"model {model!r} is not an MIB model {MIB_MODELS} (strict=False writes it anyway)")
    if "_" in model:
        raise ValueError(f"model name {model!r} must not contain '_' (MIB folders are '{{task}}_{{model}}')")
    folder = Path(out_dir)
    if method:
        folder = folder / method
    folder = folder / f"{t.replace('_', '-')}_{model}"
    return save_eap_ig(graph, folder / "importances.json", d_model=d_model)
