"""The :class:`Circuit` result: a subset of an attribution graph's edges, as boolean masks.

A circuit is stored exactly like the :class:`~circuits.graph.AttributionGraph` it was selected
from (Haklay et al. 2025, "Position-aware automatic circuit discovery"):

* ``same_pos[p, s, r]`` — the same-position edge *sender s → receiver r* at (abstract) position
  ``p`` is in the circuit. Positions are token positions (granularity ``"position"``), schema
  span names (``"span"``) or the single position ``"all"`` (``"none"``, the non-positional
  baseline).
* ``cross[l, h, kind, qpos, kpos]`` — the crossing attention edge inside head ``h`` of layer ``l``
  (kind 0 = query ``q_qpos``, 1 = key ``k_kpos``, 2 = value ``v_kpos``) into the head's output at
  ``qpos`` is in the circuit. Under GQA the key/value receivers belong to KV head
  ``h // (n_heads // n_kv_heads)``.

Node model used by selection, pruning and plotting (one copy per position):
sender nodes ``embed``, ``L{l}H{h}`` (head output), ``M{l}`` (MLP); receiver nodes
``L{l}H{h}.q``, ``L{l}KV{g}.k``, ``L{l}KV{g}.v``, ``M{l}`` (MLP input; the MLP receiver and MLP
sender at one position are the same MLP node) and ``logits``. Crossing edges connect a q/k/v
receiver node to a head-output node: their *child* is the head output at ``qpos``, their
*parent* the query receiver at ``qpos`` or the key/value receiver at ``kpos``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from einops import einsum
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.results import Result, to_jsonable

__all__ = ["Circuit", "GraphIndex", "RECEIVER_KINDS"]

CIRCUIT_JSON_VERSION = 1

# receiver kinds, used for colours and bookkeeping
RECEIVER_KINDS = ("q", "k", "v", "mlp", "logits")
_SENDER_RE = re.compile(r"^L(\d+)H(\d+)$")
_MLP_RE = re.compile(r"^M(\d+)$")
_Q_RE = re.compile(r"^L(\d+)H(\d+)\.q$")
_KV_RE = re.compile(r"^L(\d+)KV(\d+)\.([kv])$")


class GraphIndex:
    """Integer bookkeeping for the sender / receiver name lists of a graph or circuit.

    Attributes are numpy int arrays (``-1`` where a node does not exist):
    ``head_sender[l, h]``, ``mlp_sender[l]``, ``embed_sender``, ``q_recv[l, h]``,
    ``k_recv[l, g]``, ``v_recv[l, g]``, ``mlp_recv[l]``, ``logits_recv``; per-name arrays
    ``sender_kind`` (0 embed, 1 head, 2 mlp), ``sender_layer``, ``sender_head`` and
    ``recv_kind`` (index into :data:`RECEIVER_KINDS`), ``recv_layer``, ``recv_head``
    (query head for q, KV head for k/v).
    """

    def __init__(self, senders: Sequence[str], receivers: Sequence[str],
                 n_layers: int | None = None, n_heads: int | None = None) -> None:
        self.senders = list(senders)
        self.receivers = list(receivers)
        sk, sl, sh = [], [], []
        for name in self.senders:
            if name == "embed":
                sk.append(0); sl.append(-1); sh.append(-1)
            elif m := _SENDER_RE.match(name):
                sk.append(1); sl.append(int(m[1])); sh.append(int(m[2]))
            elif m := _MLP_RE.match(name):
                sk.append(2); sl.append(int(m[1])); sh.append(-1)
            else:
                raise ValueError(f"unknown sender name {name!r}: expected 'embed', 'L{{l}}H{{h}}' or 'M{{l}}'")
        rk, rl, rh = [], [], []
        for name in self.receivers:
            if m := _Q_RE.match(name):
                rk.append(0); rl.append(int(m[1])); rh.append(int(m[2]))
            elif m := _KV_RE.match(name):
                rk.append(1 if m[3] == "k" else 2); rl.append(int(m[1])); rh.append(int(m[2]))
            elif m := _MLP_RE.match(name):
                rk.append(3); rl.append(int(m[1])); rh.append(-1)
            elif name == "logits":
                rk.append(4); rl.append(-1); rh.append(-1)
            else:
                raise ValueError(f"unknown receiver name {name!r}: expected 'L{{l}}H{{h}}.q', "
                                 "'L{l}KV{g}.k', 'L{l}KV{g}.v', 'M{l}' or 'logits'")
        self.sender_kind = np.array(sk, dtype=np.int64)
        self.sender_layer = np.array(sl, dtype=np.int64)
        self.sender_head = np.array(sh, dtype=np.int64)
        self.recv_kind = np.array(rk, dtype=np.int64)
        self.recv_layer = np.array(rl, dtype=np.int64)
        self.recv_head = np.array(rh, dtype=np.int64)
        layers = [*sl, *rl]
        self.n_layers = n_layers if n_layers is not None else (max(layers) + 1 if layers else 0)
        heads = [h for k, h in zip(sk, sh) if k == 1] + [h for k, h in zip(rk, rh) if k == 0]
        self.n_heads = n_heads if n_heads is not None else (max(heads) + 1 if heads else 0)
        kvs = [h for k, h in zip(rk, rh) if k in (1, 2)]
        self.n_kv_heads = max(kvs) + 1 if kvs else self.n_heads
        if self.n_kv_heads and self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        self.group = max(1, self.n_heads // max(self.n_kv_heads, 1))
        L, H, G = self.n_layers, self.n_heads, self.n_kv_heads
        self.head_sender = np.full((L, H), -1, dtype=np.int64)
        self.mlp_sender = np.full((L,), -1, dtype=np.int64)
        self.embed_sender = np.flatnonzero(self.sender_kind == 0)
        for i, (k, l, h) in enumerate(zip(sk, sl, sh)):
            if k == 1:
                self.head_sender[l, h] = i
            elif k == 2:
                self.mlp_sender[l] = i
        self.q_recv = np.full((L, H), -1, dtype=np.int64)
        self.k_recv = np.full((L, G), -1, dtype=np.int64)
        self.v_recv = np.full((L, G), -1, dtype=np.int64)
        self.mlp_recv = np.full((L,), -1, dtype=np.int64)
        self.logits_recv = -1
        for i, (k, l, h) in enumerate(zip(rk, rl, rh)):
            if k == 0:
                self.q_recv[l, h] = i
            elif k == 1:
                self.k_recv[l, h] = i
            elif k == 2:
                self.v_recv[l, h] = i
            elif k == 3:
                self.mlp_recv[l] = i
            else:
                self.logits_recv = i
        # parent receiver of a crossing edge, per (layer, head, kind): index into receivers
        self.cross_parent = np.full((L, H, 3), -1, dtype=np.int64)
        for l in range(L):
            for h in range(H):
                self.cross_parent[l, h, 0] = self.q_recv[l, h]
                self.cross_parent[l, h, 1] = self.k_recv[l, h // self.group] if G else -1
                self.cross_parent[l, h, 2] = self.v_recv[l, h // self.group] if G else -1


def _tensor_to_sparse(mask: Tensor, scores: Tensor | None) -> list[list[int | float]]:
    idx = mask.nonzero().tolist()
    if scores is None:
        return [list(map(int, i)) for i in idx]
    vals = scores[mask].tolist()
    return [[*map(int, i), float(v)] for i, v in zip(idx, vals)]


@dataclass
class Circuit(Result):
    """A circuit: edges of an attribution graph kept by :func:`circuits.select`.

    Attributes:
        same_pos: ``[pos sender receiver]`` bool — same-position edges in the circuit.
        cross: ``[layer head kind qpos kpos]`` bool — crossing attention edges in the circuit
            (kind 0 = q, 1 = k, 2 = v).
        same_pos_scores, cross_scores: the attribution scores of the graph the circuit came from
            (zeros where unknown, e.g. after :meth:`from_json` for edges outside the circuit).
        senders, receivers, positions: name lists of the graph (positions: token positions,
            span names or ``["all"]``).
        meta: granularity (``"none" | "position" | "span"``), selection method, requested size,
            the graph's metadata (model, task, ablation, metric, ``prepend_bos``, schema spans …).
    """

    same_pos: Bool[Tensor, "pos sender receiver"]
    cross: Bool[Tensor, "layer head kind qpos kpos"]
    same_pos_scores: Float[Tensor, "pos sender receiver"]
    cross_scores: Float[Tensor, "layer head kind qpos kpos"]
    senders: list[str]
    receivers: list[str]
    positions: list[Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        P, S, R = self.same_pos.shape
        if (len(self.positions), len(self.senders), len(self.receivers)) != (P, S, R):
            raise ValueError(
                f"same_pos has shape {tuple(self.same_pos.shape)} but there are {len(self.positions)} "
                f"positions, {len(self.senders)} senders, {len(self.receivers)} receivers")
        if self.cross.shape[-1] != P or self.cross.shape[-2] != P or self.cross.shape[2] != 3:
            raise ValueError(f"cross must be [layer head 3 {P} {P}], got {tuple(self.cross.shape)}")
        if self.same_pos_scores.shape != self.same_pos.shape or self.cross_scores.shape != self.cross.shape:
            raise ValueError("score tensors must have the shapes of the masks")

    # ------------------------------------------------------------------ sizes
    @property
    def granularity(self) -> str:
        return str(self.meta.get("granularity", "span" if self.positions != ["all"] else "none"))

    @property
    def n_edges(self) -> int:
        """Number of abstract edges (same-position + crossing) in the circuit."""
        return int(self.same_pos.sum()) + int(self.cross.sum())

    @property
    def n_same_pos(self) -> int:
        return int(self.same_pos.sum())

    @property
    def n_cross(self) -> int:
        return int(self.cross.sum())

    @property
    def index(self) -> GraphIndex:
        if not hasattr(self, "_index"):
            self._index = GraphIndex(self.senders, self.receivers, self.cross.shape[0], self.cross.shape[1])
        return self._index

    def nodes(self) -> list[str]:
        """Names ``"{node}@{position}"`` of the nodes touched by the circuit's edges."""
        out: set[str] = set()
        for p, s, r in self.same_pos.nonzero().tolist():
            out.add(f"{self.senders[s]}@{self.positions[p]}")
            out.add(f"{self.receivers[r]}@{self.positions[p]}")
        ix = self.index
        for l, h, k, qp, kp in self.cross.nonzero().tolist():
            out.add(f"L{l}H{h}@{self.positions[qp]}")
            parent = self.receivers[ix.cross_parent[l, h, k]]
            out.add(f"{parent}@{self.positions[qp if k == 0 else kp]}")
        return sorted(out)

    def edges(self) -> list[dict[str, Any]]:
        """Every edge as a dict (``sender``, ``receiver``, ``position`` / ``qpos``, ``kpos``,
        ``kind``, ``score``), sorted by decreasing |score|."""
        out: list[dict[str, Any]] = []
        for (p, s, r), v in zip(self.same_pos.nonzero().tolist(), self.same_pos_scores[self.same_pos].tolist()):
            out.append({"type": "same_pos", "sender": self.senders[s], "receiver": self.receivers[r],
                        "position": self.positions[p], "kind": RECEIVER_KINDS[self.index.recv_kind[r]],
                        "score": float(v)})
        ix = self.index
        for (l, h, k, qp, kp), v in zip(self.cross.nonzero().tolist(), self.cross_scores[self.cross].tolist()):
            out.append({"type": "cross", "sender": self.receivers[ix.cross_parent[l, h, k]],
                        "receiver": f"L{l}H{h}", "qpos": self.positions[qp], "kpos": self.positions[kp],
                        "kind": "qkv"[k], "score": float(v)})
        out.sort(key=lambda e: -abs(e["score"]))
        return out

    def top(self, n: int = 20) -> list[dict[str, Any]]:
        """The ``n`` edges with the largest |score|."""
        return self.edges()[:n]

    def concrete_edges(self, pos_index: Int[Tensor, "batch tok"]) -> Float[Tensor, " batch"]:
        """Number of concrete (token-level) edges the circuit stands for in each example.

        ``pos_index[b, t]`` is the abstract position of token ``t`` of example ``b`` (``-1`` for
        padding). A same-position edge at abstract position ``p`` counts ``|p|_b`` concrete edges;
        a crossing edge (kind, p1, p2) counts the causal token pairs ``(t, t')`` with
        ``t ∈ p1``, ``t' ∈ p2``, ``t' ≤ t`` (Haklay et al. 2025 count ``3·|s1|·|s2|`` for the
        three kinds without the causal restriction; we count the pairs that exist).
        """
        return concrete_edge_counts(self.same_pos, self.cross, pos_index)

    # ------------------------------------------------------------------ json
    def to_json(self) -> dict[str, Any]:
        """Versioned plain-JSON dict: names, shapes, metadata and the circuit's edges (sparse,
        ``[p, s, r, score]`` and ``[l, h, kind, qpos, kpos, score]``)."""
        return {
            "type": "Circuit", "version": CIRCUIT_JSON_VERSION,
            "senders": self.senders, "receivers": self.receivers,
            "positions": list(self.positions),
            "cross_shape": list(self.cross.shape),
            "n_edges": self.n_edges,
            "same_pos_edges": _tensor_to_sparse(self.same_pos, self.same_pos_scores),
            "cross_edges": _tensor_to_sparse(self.cross, self.cross_scores),
            "meta": to_jsonable(self.meta, float_digits=None, lenient=True),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any] | str) -> "Circuit":
        """Inverse of :meth:`to_json` (accepts the dict, a JSON string or a file path)."""
        if isinstance(d, str):
            if d.lstrip().startswith("{"):
                d = json.loads(d)
            else:
                with open(d) as f:
                    d = json.load(f)
        if d.get("type") != "Circuit":
            raise ValueError(f"not a Circuit JSON (type={d.get('type')!r})")
        if int(d.get("version", 0)) > CIRCUIT_JSON_VERSION:
            raise ValueError(f"Circuit JSON version {d['version']} is newer than this code "
                             f"({CIRCUIT_JSON_VERSION}); upgrade interp")
        P, S, R = len(d["positions"]), len(d["senders"]), len(d["receivers"])
        cs = tuple(d["cross_shape"])
        same = torch.zeros(P, S, R, dtype=torch.bool)
        same_sc = torch.zeros(P, S, R)
        for p, s, r, v in d["same_pos_edges"]:
            same[int(p), int(s), int(r)] = True
            same_sc[int(p), int(s), int(r)] = v
        cross = torch.zeros(cs, dtype=torch.bool)
        cross_sc = torch.zeros(cs)
        for l, h, k, qp, kp, v in d["cross_edges"]:
            cross[int(l), int(h), int(k), int(qp), int(kp)] = True
            cross_sc[int(l), int(h), int(k), int(qp), int(kp)] = v
        return cls(same, cross, same_sc, cross_sc, list(d["senders"]), list(d["receivers"]),
                   list(d["positions"]), dict(d.get("meta", {})))

    def __repr__(self) -> str:
        top = "; ".join(f"{e['sender']}→{e['receiver']}@{e.get('position', e.get('qpos'))}={e['score']:.3g}"
                        for e in self.top(3))
        return (f"Circuit({self.n_edges} edges: {self.n_same_pos} same-position + {self.n_cross} crossing; "
                f"granularity={self.granularity!r}, {len(self.positions)} positions, "
                f"method={self.meta.get('method')!r}, {self._bos_model()}, top: {top})")

    def equals(self, other: Any, *, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
        """Same edges (masks), names, positions, metadata and the same scores *on the circuit's
        edges*. Scores of edges outside the circuit are context from the graph it came from and
        are not part of the circuit (its JSON does not keep them), so they are not compared."""
        from interp.results import values_equal

        if type(other) is not type(self):
            return False
        if not (torch.equal(self.same_pos, other.same_pos) and torch.equal(self.cross, other.cross)):
            return False
        return (values_equal(self.same_pos_scores[self.same_pos], other.same_pos_scores[other.same_pos], rtol, atol)
                and values_equal(self.cross_scores[self.cross], other.cross_scores[other.cross], rtol, atol)
                and values_equal([self.senders, self.receivers, [str(p) for p in self.positions], self.meta],
                                  [other.senders, other.receivers, [str(p) for p in other.positions], other.meta],
                                  rtol, atol))

    def to_frame(self) -> Any:
        """Tidy edge table of the circuit (:meth:`edges`): ``type`` (``same_pos``/``cross``),
        ``sender``, ``receiver``, ``kind``, ``position`` (same-position edges), ``qpos``/``kpos``
        (crossing edges), ``score``; sorted by decreasing |score|."""
        from interp.results import require_pandas

        cols = ["type", "sender", "receiver", "kind", "position", "qpos", "kpos", "score"]
        df = require_pandas().DataFrame(self.edges(), columns=cols)
        df["model"], df["prepend_bos"] = self._recorded("model"), self._recorded("prepend_bos")
        return df

    # ------------------------------------------------------------------ plot
    def plot(self, max_edges: int | None = 400, title: str | None = None, stability: Any = None):
        """Interactive plotly graph of the circuit (see :func:`circuits.circuit.plot_circuit`);
        with ``stability`` (a :class:`circuits.stability.Stability`) edge opacity shows how often
        each edge was selected under resampling."""
        return plot_circuit(self, max_edges=max_edges, title=title, stability=stability)


def concrete_edge_counts(
    same_pos: Bool[Tensor, "pos sender receiver"],
    cross: Bool[Tensor, "layer head kind qpos kpos"],
    pos_index: Int[Tensor, "batch tok"],
) -> Float[Tensor, " batch"]:
    """Concrete edges per example of an abstract edge mask; see :meth:`Circuit.concrete_edges`."""
    P = same_pos.shape[0]
    valid_tok = pos_index >= 0
    onehot = torch.zeros(*pos_index.shape, P, dtype=torch.float32)
    onehot[valid_tok] = torch.nn.functional.one_hot(pos_index[valid_tok], P).float()
    size = onehot.sum(1)  # [batch P] tokens per abstract position
    n_same = size @ same_pos.sum((1, 2)).float()
    # causal pairs between abstract positions: pairs[b, p1, p2] = #{(t, t'): t in p1, t' in p2, t' <= t}
    T = pos_index.shape[1]
    causal = torch.tril(torch.ones(T, T))
    pairs = einsum(onehot, causal, onehot, "b query abs_q, query key, b key abs_k -> b abs_q abs_k")
    n_cross = einsum(pairs, cross.sum((0, 1, 2)).float(), "b abs_q abs_k, abs_q abs_k -> b")
    return n_same + n_cross


# ====================================================================== plotting
_KIND_COLOURS = {"q": "#1f77b4", "k": "#2ca02c", "v": "#ff7f0e", "mlp": "#9467bd", "logits": "#d62728"}


def plot_circuit(circuit: Circuit, max_edges: int | None = 400, title: str | None = None,
                 stability: Any = None):
    """Plot a circuit as an interactive layered graph.

    Layout: columns are positions (tokens / spans / "all"), rows are layers — the embedding at the
    bottom, for each layer an attention row (heads side by side inside the column, their q / k / v
    receiver nodes just below) and an MLP row, the logits at the top. Edges: width ∝ |score|
    (4 bins), colour by receiver kind (q blue, k green, v orange, MLP purple, logits red), solid for
    positive and dotted for negative scores; crossing edges run from the key/value node at ``kpos``
    to the head at ``qpos``. Hovering an edge midpoint shows its names and score; hovering a node
    shows its name and position. Only the ``max_edges`` highest-|score| edges are drawn.
    With ``stability`` (:class:`circuits.stability.Stability` of the same graph) each edge's
    opacity is its bootstrap selection frequency (4 bins: < 0.5, < 0.8, < 0.95, ≥ 0.95) and the
    hover text shows it.
    """
    import plotly.graph_objects as go

    ix = circuit.index
    H = max(ix.n_heads, 1)
    P = len(circuit.positions)
    col_w = 1.0
    head_dx = 0.8 / H

    def head_xy(l, h, p):
        return p * col_w - 0.4 + head_dx * (h + 0.5), 3.0 * l + 1.0

    def recv_xy(r, p):
        k, l, h = ix.recv_kind[r], ix.recv_layer[r], ix.recv_head[r]
        if k == 0:
            x, y = head_xy(l, h, p)
            return x, y - 0.55
        if k in (1, 2):
            hs = np.arange(h * ix.group, (h + 1) * ix.group)
            x = float(np.mean([head_xy(l, int(hh), p)[0] for hh in hs]))
            return x + (-0.25 if k == 1 else 0.25) * head_dx * ix.group, 1.0 + 3.0 * l - 0.9
        if k == 3:
            return p * col_w, 3.0 * l + 2.0
        return p * col_w, 3.0 * ix.n_layers + 0.5

    def sender_xy(s, p):
        k, l, h = ix.sender_kind[s], ix.sender_layer[s], ix.sender_head[s]
        if k == 0:
            return p * col_w, -0.5
        if k == 1:
            return head_xy(l, h, p)
        return p * col_w, 3.0 * l + 2.0

    edges = []  # (x0, y0, x1, y1, score, kind, label, freq)
    if stability is not None and (tuple(stability.same_freq.shape) != tuple(circuit.same_pos.shape)
                                  or tuple(stability.cross_freq.shape) != tuple(circuit.cross.shape)):
        raise ValueError("stability= comes from a graph of another shape than the circuit's")

    def fr(idx: tuple, cross: bool) -> float:
        if stability is None:
            return 1.0
        return float((stability.cross_freq if cross else stability.same_freq)[idx])

    def ftxt(f: float) -> str:
        return "" if stability is None else f"<br>selected in {100 * f:.0f}% of resamples"

    for (p, s, r), v in zip(circuit.same_pos.nonzero().tolist(), circuit.same_pos_scores[circuit.same_pos].tolist()):
        x0, y0 = sender_xy(s, p)
        x1, y1 = recv_xy(r, p)
        kind = RECEIVER_KINDS[ix.recv_kind[r]]
        f = fr((p, s, r), False)
        edges.append((x0, y0, x1, y1, v, kind,
                      f"{circuit.senders[s]} → {circuit.receivers[r]} @ {circuit.positions[p]}<br>score {v:+.4g}{ftxt(f)}", f))
    for (l, h, k, qp, kp), v in zip(circuit.cross.nonzero().tolist(), circuit.cross_scores[circuit.cross].tolist()):
        parent = int(ix.cross_parent[l, h, k])
        x0, y0 = recv_xy(parent, qp if k == 0 else kp)
        x1, y1 = head_xy(l, h, qp)
        f = fr((l, h, k, qp, kp), True)
        edges.append((x0, y0, x1, y1, v, "qkv"[k],
                      f"{circuit.receivers[parent]} @ {circuit.positions[kp]} ⇒ L{l}H{h} @ "
                      f"{circuit.positions[qp]} ({'qkv'[k]}, crossing)<br>score {v:+.4g}{ftxt(f)}", f))
    edges.sort(key=lambda e: -abs(e[4]))
    n_total = len(edges)
    if max_edges is not None:
        edges = edges[:max_edges]
    fig = go.Figure()
    if edges:
        mags = np.array([abs(e[4]) for e in edges])
        top = mags.max() if mags.max() > 0 else 1.0
        bins = np.clip((mags / top * 4).astype(int), 0, 3)
        widths = [0.8, 1.6, 3.0, 5.0]
        legend_done: set[tuple[str, int]] = set()
        fbins = np.digitize([e[7] for e in edges], [0.5, 0.8, 0.95]) if stability is not None else np.full(len(edges), 3)
        opac = [0.15, 0.35, 0.6, 0.9] if stability is not None else [0.75] * 4
        for kind in RECEIVER_KINDS:
            for sign in (1, -1):
                for b in range(4):
                    for fb in range(4):
                        xs: list[float | None] = []
                        ys: list[float | None] = []
                        for e, bb, ff in zip(edges, bins, fbins):
                            if e[5] == kind and bb == b and ff == fb and (e[4] >= 0) == (sign > 0):
                                xs += [e[0], e[2], None]
                                ys += [e[1], e[3], None]
                        if xs:
                            fig.add_trace(go.Scatter(
                                x=xs, y=ys, mode="lines", hoverinfo="skip",
                                line=dict(color=_KIND_COLOURS[kind], width=widths[b],
                                          dash="solid" if sign > 0 else "dot"),
                                opacity=opac[fb], legendgroup=f"{kind}{sign}",
                                name=f"{kind} {'+' if sign > 0 else '−'}", showlegend=(kind, sign) not in legend_done))
                            legend_done.add((kind, sign))
        fig.add_trace(go.Scatter(
            x=[(e[0] + e[2]) / 2 for e in edges], y=[(e[1] + e[3]) / 2 for e in edges], mode="markers",
            marker=dict(size=6, color=[_KIND_COLOURS[e[5]] for e in edges], opacity=0.35),
            text=[e[6] for e in edges], hoverinfo="text", name="edge info", showlegend=False))
    # nodes
    nodes: dict[tuple[float, float], str] = {}
    for (p, s, r) in circuit.same_pos.nonzero().tolist():
        nodes[sender_xy(s, p)] = f"{circuit.senders[s]} @ {circuit.positions[p]}"
        nodes[recv_xy(r, p)] = f"{circuit.receivers[r]} @ {circuit.positions[p]}"
    for (l, h, k, qp, kp) in circuit.cross.nonzero().tolist():
        parent = int(ix.cross_parent[l, h, k])
        nodes[recv_xy(parent, qp if k == 0 else kp)] = f"{circuit.receivers[parent]} @ {circuit.positions[qp if k == 0 else kp]}"
        nodes[head_xy(l, h, qp)] = f"L{l}H{h} @ {circuit.positions[qp]}"
    if nodes:
        xy = list(nodes)
        fig.add_trace(go.Scatter(
            x=[a for a, _ in xy], y=[b for _, b in xy], mode="markers",
            marker=dict(size=7, color="#333", symbol="circle"), text=[nodes[k] for k in xy],
            hoverinfo="text", name="nodes", showlegend=False))
    L = ix.n_layers
    # one tick per layer at its attention row (the MLP row sits just above it); hover names nodes
    tickvals = [-0.5] + [3.0 * l + 1.0 for l in range(L)] + [3.0 * L + 0.5]
    ticktext = ["embed"] + [f"L{l}" for l in range(L)] + ["logits"]
    shown = f"{len(edges)} of {n_total}" if len(edges) < n_total else f"{n_total}"
    fig.update_layout(
        title=title or f"Circuit: {shown} edges ({circuit.granularity} granularity, "
                       f"{circuit.meta.get('method', '?')} selection)",
        xaxis=dict(title="position / span", tickvals=[p * col_w for p in range(P)],
                   ticktext=[str(p) for p in circuit.positions], showgrid=False, zeroline=False,
                   range=[-0.6, P - 0.4]),
        yaxis=dict(title="layer (attention row; MLP just above)", tickvals=tickvals, ticktext=ticktext,
                   showgrid=True, zeroline=False),
        height=max(600, 36 * L + 220), width=max(900, 160 * P + 250), hovermode="closest",
        plot_bgcolor="white", legend=dict(title="receiver kind, sign"),
    )
    return fig
