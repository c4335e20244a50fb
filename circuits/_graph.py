"""``AttributionGraph``: edge scores over the position-aware computational graph (the dense store;
its public module is :mod:`circuits.graph`, which also registers the sparse and sharded stores).

The graph of Haklay et al. (2025) (arXiv:2502.04577): senders (``"embed"``,
``"L{l}H{h}"``, ``"M{l}"``) write into the residual stream, receivers (``"L{l}H{h}.q"``,
``"L{l}KV{g}.k"``, ``"L{l}KV{g}.v"``, ``"M{l}"``, ``"logits"``) read from it. One copy per
position (granularity ``"position"``), per schema span (``"span"``) or one in all (``"none"``,
positions ``["all"]``). Under GQA the k/v receivers belong to the KV head shared by
``H/G`` query heads.

* ``same_pos[p, s, r]``: score of the edge sender ``s`` @ p → receiver ``r`` @ p (0 where
  ``valid[s, r]`` is False: the sender is not strictly upstream);
* ``cross[l, h, kind, t, t']``: crossing edge inside query head ``L{l}H{h}``, kind 0 = q
  (q_t in score (t, t')), 1 = k (k_{t'} into query t), 2 = v (v_{t'} into query t); 0 where
  ``cross_valid[t, t']`` is False (key after query).

Span scores follow Haklay et al.: :math:`g_S(e) = \\frac{1}{|D|}\\sum_x\\sum_{e'\\in f(e)} g_x(e')`,
sum of concrete edge scores inside spans, mean over examples. ``span_sizes[p]`` (mean number of
tokens of span p per example) and ``cross_pairs[t, t']`` (mean number of concrete (query, key)
pairs with key ≤ query) let selection count concrete edges per example: a same-position span
edge stands for ``span_sizes[p]`` concrete edges, a crossing span edge for ``cross_pairs[t, t']``
(per kind; the paper's 3·|s1|·|s2| counts the three kinds over all pairs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, NamedTuple

import torch
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor

from interp.results import Result, to_jsonable

__all__ = ["AttributionGraph", "Edge", "GRAPH_VERSION", "KINDS"]

GRAPH_VERSION = 1
KINDS = ("q", "k", "v")
_HEAD = re.compile(r"^L(\d+)H(\d+)$")
_RECV = re.compile(r"^L(\d+)(H|KV)(\d+)\.([qkv])$")
_MLP = re.compile(r"^M(\d+)$")


#: loaders of the other stores (``"sparse"``, ``"sharded"``), registered by :mod:`circuits.stores`
#: when it is imported (:mod:`circuits.graph` imports it), so that this module, which the stores
#: build on, does not import them back
STORE_LOADERS: dict[str, Any] = {}


def _store_loader(kind: str) -> Any:
    try:
        return STORE_LOADERS[kind]
    except KeyError:
        raise RuntimeError(f"no loader for {kind} attribution graphs is registered: import circuits.graph "
                           "(it registers circuits.stores), not circuits._graph") from None


class Edge(NamedTuple):
    """One abstract edge. Same-position: ``kind="same"``, ``pos == kpos``. Crossing:
    ``kind`` in q/k/v, ``sender``/``receiver`` both the head label, query ``pos``, key ``kpos``."""

    kind: str
    sender: str
    receiver: str
    pos: str
    kpos: str
    score: float


def node_layer(name: str) -> int:
    """Layer of a node name (embed → −1, logits → a large number)."""
    if name == "embed":
        return -1
    if name == "logits":
        return 10**6
    m = _HEAD.match(name) or _MLP.match(name) or _RECV.match(name)
    if m is None:
        raise KeyError(f"not a graph node name: {name!r}")
    return int(m.group(1))


def receiver_kind(name: str) -> str:
    """``"q"``, ``"k"``, ``"v"``, ``"mlp"`` or ``"logits"``."""
    if name == "logits":
        return "logits"
    if _MLP.match(name):
        return "mlp"
    m = _RECV.match(name)
    if m is None:
        raise KeyError(f"not a receiver name: {name!r}")
    return m.group(4)


@dataclass
class AttributionGraph(Result):
    """Edge attribution scores (see module docstring for the axes).

    Attributes:
        senders, receivers, positions: axis labels (positions: ``"3:Mary"`` style token labels,
            span names, or ``["all"]``).
        same_pos: same-position edge scores.
        valid: sender strictly upstream of receiver.
        cross: crossing (attention) edge scores.
        cross_valid: key position not after query position (span granularity: key span not
            after query span).
        span_sizes: mean tokens per position/span per example (1 for token positions).
        cross_pairs: mean concrete (query, key ≤ query) pairs per example for each position pair.
        meta: method, ablation, metric, granularity, schema span names, prepend_bos, model, task,
            n_examples, ig_steps, version, …
    """

    senders: list[str]
    receivers: list[str]
    positions: list[str]
    same_pos: Float[Tensor, "pos sender receiver"]
    valid: Bool[Tensor, "sender receiver"]
    cross: Float[Tensor, "layer head kind qpos kpos"]
    cross_valid: Bool[Tensor, "qpos kpos"]
    span_sizes: Float[Tensor, "pos"]
    cross_pairs: Float[Tensor, "qpos kpos"]
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ shape helpers
    @property
    def n_layers(self) -> int:
        return int(self.cross.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.cross.shape[1])

    @property
    def granularity(self) -> str:
        return str(self.meta.get("granularity", "none" if self.positions == ["all"] else "position"))

    def _pos_index(self, pos: int | str) -> int:
        if isinstance(pos, int):
            return pos % len(self.positions)
        if pos in self.positions:
            return self.positions.index(pos)
        raise KeyError(f"unknown position/span {pos!r}; have {self.positions}")

    # ------------------------------------------------------------------ scores
    def node_scores(self) -> Float[Tensor, "pos sender"]:
        """Sender node scores: sum of the sender's outgoing same-position edges at each position.

        For EAP this equals :math:`(z^*_s-z_s)\\cdot\\partial M/\\partial z_s`, the attribution of
        patching the sender's output (its gradient is the sum of its receivers' gradients).
        """
        return (self.same_pos * self.valid).sum(-1)

    def receiver_scores(self) -> Float[Tensor, "pos receiver"]:
        """Receiver node scores: sum of incoming same-position edges."""
        return (self.same_pos * self.valid).sum(-2)

    def head_cross_scores(self) -> Float[Tensor, "layer head kind"]:
        """Total crossing-edge score per head and kind."""
        return (self.cross * self.cross_valid).sum((-1, -2))

    def n_edges(self) -> int:
        """Number of abstract edges (valid same-position + valid crossing)."""
        P = len(self.positions)
        return int(self.valid.sum()) * P + int(self.cross_valid.sum()) * self.n_layers * self.n_heads * 3

    def edges(
        self,
        *,
        kinds: Iterable[str] = ("same", "q", "k", "v"),
        positions: Iterable[int | str] | None = None,
        layers: Iterable[int] | None = None,
        receiver_kinds: Iterable[str] | None = None,
    ) -> list[Edge]:
        """All valid edges passing the filters (positions: query position/span of the edge;
        layers: the receiver's layer for same-position edges, the head's for crossing edges;
        receiver_kinds: ``q``/``k``/``v``/``mlp``/``logits`` for same-position edges)."""
        return self.top_edges(None, kinds=kinds, positions=positions, layers=layers,
                              receiver_kinds=receiver_kinds)

    def top_edges(
        self,
        n: int | None = 20,
        *,
        kinds: Iterable[str] = ("same", "q", "k", "v"),
        positions: Iterable[int | str] | None = None,
        layers: Iterable[int] | None = None,
        receiver_kinds: Iterable[str] | None = None,
        absolute: bool = True,
    ) -> list[Edge]:
        """The ``n`` edges of highest |score| (or highest score if ``absolute=False``)."""
        kinds = set(kinds)
        unknown = kinds - {"same", "q", "k", "v"}
        if unknown:
            raise ValueError(f"unknown edge kinds {unknown}; use 'same', 'q', 'k', 'v'")
        P = len(self.positions)
        pos_ok = torch.ones(P, dtype=torch.bool)
        if positions is not None:
            pos_ok = torch.zeros(P, dtype=torch.bool)
            for p in positions:
                pos_ok[self._pos_index(p)] = True
        out_scores: list[Tensor] = []
        out_ids: list[Tensor] = []
        blocks: list[str] = []
        if "same" in kinds:
            m = self.valid[None].expand_as(self.same_pos) & pos_ok[:, None, None]
            if layers is not None:
                ls = set(layers)
                r_ok = torch.tensor([node_layer(r) in ls for r in self.receivers])
                m = m & r_ok[None, None, :]
            if receiver_kinds is not None:
                rk = set(receiver_kinds)
                r_ok = torch.tensor([receiver_kind(r) in rk for r in self.receivers])
                m = m & r_ok[None, None, :]
            idx = m.flatten().nonzero().squeeze(1)
            out_scores.append(self.same_pos.flatten()[idx])
            out_ids.append(idx)
            blocks.append("same")
        ck = [i for i, k in enumerate(KINDS) if k in kinds]
        if ck:
            m = torch.zeros_like(self.cross, dtype=torch.bool)
            m[:, :, ck] = True
            m &= self.cross_valid & pos_ok[:, None]
            if layers is not None:
                lm = torch.zeros(self.n_layers, dtype=torch.bool)
                lm[[l for l in layers if 0 <= l < self.n_layers]] = True
                m &= lm[:, None, None, None, None]
            idx = m.flatten().nonzero().squeeze(1)
            out_scores.append(self.cross.flatten()[idx])
            out_ids.append(idx)
            blocks.append("cross")
        scores = torch.cat(out_scores) if out_scores else torch.zeros(0)
        which = torch.cat([torch.full_like(i, b) for b, i in enumerate(out_ids)]) if out_ids else torch.zeros(0, dtype=torch.long)
        ids = torch.cat(out_ids) if out_ids else torch.zeros(0, dtype=torch.long)
        key = scores.abs() if absolute else scores
        order = torch.argsort(key, descending=True, stable=True)
        if n is not None:
            order = order[:n]
        S, R = len(self.senders), len(self.receivers)
        L, H = self.n_layers, self.n_heads
        res: list[Edge] = []
        for o in order.tolist():
            i, b = int(ids[o]), blocks[int(which[o])]
            sc = float(scores[o])
            if b == "same":
                p, rem = divmod(i, S * R)
                s, r = divmod(rem, R)
                res.append(Edge("same", self.senders[s], self.receivers[r], self.positions[p],
                                self.positions[p], sc))
            else:
                l, rem = divmod(i, H * 3 * P * P)
                h, rem = divmod(rem, 3 * P * P)
                k, rem = divmod(rem, P * P)
                t, tp = divmod(rem, P)
                lab = f"L{l}H{h}"
                res.append(Edge(KINDS[k], lab, lab, self.positions[t], self.positions[tp], sc))
        return res

    def top(self, n: int = 20) -> list[Edge]:
        """Alias of :meth:`top_edges`."""
        return self.top_edges(n)

    def filter(
        self,
        *,
        positions: Iterable[int | str] | None = None,
        layers: Iterable[int] | None = None,
        kinds: Iterable[str] | None = None,
        receiver_kinds: Iterable[str] | None = None,
    ) -> AttributionGraph:
        """A copy with scores outside the filters set to 0 (shapes and labels unchanged).

        Same semantics as :meth:`top_edges`: ``positions`` (query position/span), ``layers``
        (receiver's layer / head's layer), ``kinds`` ⊆ {``same``, ``q``, ``k``, ``v``}
        (same-position edges, crossing kinds), ``receiver_kinds`` ⊆ {``q``, ``k``, ``v``,
        ``mlp``, ``logits``} for same-position edges.
        """
        sp = self.same_pos.clone()
        cr = self.cross.clone()
        P = len(self.positions)
        if positions is not None:
            keep = torch.zeros(P, dtype=torch.bool)
            for p in positions:
                keep[self._pos_index(p)] = True
            sp[~keep] = 0
            cr[:, :, :, ~keep] = 0
        if layers is not None:
            ls = set(layers)
            r_ok = torch.tensor([node_layer(r) in ls for r in self.receivers])
            sp[:, :, ~r_ok] = 0
            lm = torch.tensor([l in ls for l in range(self.n_layers)], dtype=torch.bool)
            cr[~lm] = 0
        if kinds is not None:
            ks = set(kinds)
            unknown = ks - {"same", "q", "k", "v"}
            if unknown:
                raise ValueError(f"unknown edge kinds {unknown}; use 'same', 'q', 'k', 'v'")
            if "same" not in ks:
                sp[:] = 0
            for i, k in enumerate(KINDS):
                if k not in ks:
                    cr[:, :, i] = 0
        if receiver_kinds is not None:
            rk = set(receiver_kinds)
            r_ok = torch.tensor([receiver_kind(r) in rk for r in self.receivers])
            sp[:, :, ~r_ok] = 0
        return AttributionGraph(list(self.senders), list(self.receivers), list(self.positions), sp,
                                self.valid.clone(), cr, self.cross_valid.clone(),
                                self.span_sizes.clone(), self.cross_pairs.clone(), dict(self.meta))

    # ------------------------------------------------------------------ (de)serialisation
    def to_json(self) -> dict[str, Any]:
        """Plain JSON (versioned): labels, scores as nested lists, masks, meta."""
        return {
            "type": "AttributionGraph",
            "version": GRAPH_VERSION,
            "senders": list(self.senders),
            "receivers": list(self.receivers),
            "positions": list(self.positions),
            "same_pos": to_jsonable(self.same_pos, float_digits=None),
            "valid": to_jsonable(self.valid),
            "cross": to_jsonable(self.cross, float_digits=None),
            "cross_valid": to_jsonable(self.cross_valid),
            "span_sizes": to_jsonable(self.span_sizes, float_digits=None),
            "cross_pairs": to_jsonable(self.cross_pairs, float_digits=None),
            "meta": to_jsonable(self.meta),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttributionGraph:
        """Inverse of :meth:`to_json` (raises on unknown versions)."""
        if data.get("type") != "AttributionGraph":
            raise ValueError(f"not an AttributionGraph JSON (type={data.get('type')!r})")
        v = data.get("version")
        if v != GRAPH_VERSION:
            raise ValueError(f"AttributionGraph JSON version {v!r} is not supported "
                             f"(this library reads version {GRAPH_VERSION})")

        def f(x: Any) -> Tensor:
            return torch.tensor(x, dtype=torch.float32)

        return cls(list(data["senders"]), list(data["receivers"]), list(data["positions"]),
                   f(data["same_pos"]), torch.tensor(data["valid"], dtype=torch.bool),
                   f(data["cross"]), torch.tensor(data["cross_valid"], dtype=torch.bool),
                   f(data["span_sizes"]), f(data["cross_pairs"]), dict(data.get("meta", {})))

    _TENSORS = ("same_pos", "valid", "cross", "cross_valid", "span_sizes", "cross_pairs")

    def save(self, path: str | Path) -> Path:
        """Write the graph as one ``.safetensors`` file: the score tensors in binary (float32,
        masks as uint8) and the labels, version and meta as JSON in its header. Smaller and far
        faster than :meth:`to_json` (SmolLM2 IOI at position granularity: 9.6 MB written in
        0.02 s vs 31 MB of JSON in 5.5 s; loads in 0.01 s vs 2.3 s).
        Read it back with :meth:`load`."""
        import json

        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name in self._TENSORS:
            t = getattr(self, name).detach().cpu()
            tensors[name] = (t.to(torch.uint8) if t.dtype == torch.bool else t.float()).contiguous()
        header = {"type": "AttributionGraph", "version": GRAPH_VERSION,
                  "senders": list(self.senders), "receivers": list(self.receivers),
                  "positions": list(self.positions), "meta": to_jsonable(self.meta)}
        tmp = path.with_name(path.name + ".partial")
        save_file(tensors, str(tmp), metadata={"graph": json.dumps(header)})
        tmp.replace(path)  # never leave a half-written file under the final name
        return path

    @classmethod
    def load(cls, path: str | Path) -> AttributionGraph:
        """Inverse of :meth:`save` (raises on a file that is not a saved graph or has another
        version). A directory written by ``attribute(..., store="disk")`` opens as a lazily read
        :class:`~circuits.stores.ShardedAttributionGraph`; a saved top-k/threshold graph as a
        :class:`~circuits.stores.SparseAttributionGraph`."""
        import json

        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if path.is_dir() and (path / "index.json").is_file():  # store="disk": read lazily
            return _store_loader("sharded")(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (write one with AttributionGraph.save)")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if '"SparseAttributionGraph"' in meta.get("graph", ""):
            return _store_loader("sparse")(path)
        if "graph" not in meta:
            raise ValueError(f"{path} has no AttributionGraph header; was it written by "
                             "AttributionGraph.save?")
        h = json.loads(meta["graph"])
        if h.get("version") != GRAPH_VERSION:
            raise ValueError(f"AttributionGraph file version {h.get('version')!r} is not supported "
                             f"(this library reads version {GRAPH_VERSION})")
        t = load_file(str(path))
        return cls(list(h["senders"]), list(h["receivers"]), list(h["positions"]),
                   t["same_pos"], t["valid"].bool(), t["cross"], t["cross_valid"].bool(),
                   t["span_sizes"], t["cross_pairs"], dict(h.get("meta", {})))

    # ------------------------------------------------------------------ plotting
    def head_query_scores(self) -> Float[Tensor, "layer head qpos"]:
        """Crossing score per head and query position, summed over kinds and key positions."""
        return (self.cross * self.cross_valid).sum((2, 4))

    def plot(self, view: Literal["nodes", "q", "k", "v", "mlp", "cross"] = "nodes") -> Any:
        """Heatmap of node scores by node (rows, layer order) × position/span (columns).

        ``"nodes"``: sender node scores. ``"q"``/``"k"``/``"v"``/``"mlp"``: receiver node
        scores of that kind (sum of incoming same-position edges). ``"cross"``: total crossing
        score per head (rows) and query position (columns), summed over kinds and key positions.
        Diverging RdBu, zero-centred.
        """
        return plot_graph(self, view)

    def __repr__(self) -> str:
        top = "; ".join(f"{e.sender}→{e.receiver}@{e.pos}{'' if e.kind == 'same' else f'<-{e.kpos} ({e.kind})'}"
                        f"={e.score:.3g}" for e in self.top_edges(3))
        return (f"AttributionGraph({self.meta.get('method', '?')}, granularity={self.granularity}, "
                f"positions={len(self.positions)}, senders={len(self.senders)}, "
                f"receivers={len(self.receivers)}, edges={self.n_edges()}, {self._bos_model()}, "
                f"task={self.meta.get('task')!r}, top: {top})")

    def to_frame(self, n: int | None = None) -> Any:
        """Tidy edge table (the ``n`` highest-|score| edges; ``None`` = every valid edge): ``kind``
        (``same``/``q``/``k``/``v``), ``sender``, ``receiver``, ``pos`` (query position/span),
        ``kpos`` (key position/span; = ``pos`` for same-position edges), ``score``."""
        from interp.results import require_pandas

        df = require_pandas().DataFrame(self.top_edges(n), columns=list(Edge._fields))
        df["model"], df["prepend_bos"] = self.meta.get("model"), self.meta.get("prepend_bos")
        return df


def plot_graph(g: Any, view: str = "nodes") -> Any:
    """The heatmap of :meth:`AttributionGraph.plot` for any graph with ``node_scores()``,
    ``receiver_scores()`` and ``head_query_scores()`` (dense, top-k, threshold or sharded)."""
    import plotly.graph_objects as go

    if view == "nodes":
        z = rearrange(g.node_scores(), "pos sender -> sender pos")
        rows = list(g.senders)
    elif view in ("q", "k", "v", "mlp"):
        sel = [i for i, r in enumerate(g.receivers) if receiver_kind(r) == view]
        z = rearrange(g.receiver_scores()[:, sel], "pos receiver -> receiver pos")
        rows = [g.receivers[i] for i in sel]
    elif view == "cross":
        z = rearrange(g.head_query_scores(), "layer head qpos -> (layer head) qpos")
        rows = [f"L{l}H{h}" for l in range(g.n_layers) for h in range(g.n_heads)]
    else:
        raise ValueError(f"view must be nodes/q/k/v/mlp/cross, got {view!r}")
    zmax = float(z.abs().max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z.tolist(), x=[f"{i}:{p}" for i, p in enumerate(g.positions)], y=rows,
        colorscale="RdBu", zmid=0, zmin=-zmax, zmax=zmax,
        colorbar=dict(title="score"),
        hovertemplate="node %{y}<br>position %{x}<br>score %{z:.4g}<extra></extra>"))
    m = g.meta
    fig.update_layout(
        title=f"{m.get('method', '?').upper()} {view} scores — {m.get('task', '')} "
              f"({m.get('ablation', '?')} ablation, granularity {g.granularity})",
        xaxis_title="position" if g.granularity != "span" else "span",
        yaxis_title="node (layer order)", yaxis=dict(autorange="reversed"),
        height=max(400, 12 * len(rows) + 120))
    return fig
