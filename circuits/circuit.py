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
from dataclasses import dataclass
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


DENSE_CROSS_LIMIT = 64 * 2**20  # elements of [layer head 3 P P] that .cross / .cross_scores densify


def _cross_flat(index: Tensor, shape: Sequence[int]) -> Tensor:
    """Row-major flat ids into ``shape`` of the rows of an ``[n 5]`` crossing-edge index."""
    _, H, K, P, _ = shape
    l, h, k, q, kp = index.long().unbind(-1)
    return (((l * H + h) * K + k) * P + q) * P + kp


def _cross_unflat(flat: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`_cross_flat`: ``[n 5]`` (layer, head, kind, qpos, kpos) rows."""
    _, H, K, P, _ = shape
    flat = flat.long()
    kp = flat % P
    q = (flat // P) % P
    k = (flat // (P * P)) % K
    h = (flat // (K * P * P)) % H
    l = flat // (H * K * P * P)
    return torch.stack([l, h, k, q, kp], dim=-1)


@dataclass(init=False, eq=False)
class Circuit(Result):
    """A circuit: edges of an attribution graph kept by :func:`circuits.select`.

    Storage: same-position edges as a dense mask ``same_pos [pos sender receiver]`` (bool; at
    2 048 positions on SmolLM2 0.3 GB); crossing edges *sparsely*, as the sorted, unique rows
    ``cross_index [n 5]`` = (layer, head, kind, qpos, kpos) of the kept edges of
    ``[layer head kind qpos kpos]`` (shape ``cross_shape``) with their scores ``cross_values [n]``
    — a dense crossing mask grows as ``P²`` (3.4 G entries at 2 048 positions on SmolLM2).
    ``same_values`` are the scores of the kept same-position edges (``same_pos.nonzero()`` order).

    Dense views (back-compatible): ``cross`` (bool) is built on demand when ``[layer head 3 P P]``
    has at most :data:`DENSE_CROSS_LIMIT` entries and raises ``MemoryError`` otherwise (use
    ``cross_index`` / ``cross_values`` / :meth:`cross_layer` / :meth:`cross_pair_counts`); once
    built it is the circuit's crossing mask (in-place edits of ``cross`` or ``same_pos`` edit the
    circuit). ``same_pos_scores`` / ``cross_scores``: the graph's scores when the circuit was
    built from dense score tensors (context for edges outside the circuit), else the circuit's
    edges' scores with zeros elsewhere (e.g. after :meth:`from_json` or for circuits selected
    from a top-k graph).

    Attributes:
        same_pos: ``[pos sender receiver]`` bool — same-position edges in the circuit.
        cross_shape: ``(layer, head, 3, P, P)``, the shape of the (dense) crossing mask.
        cross_index, cross_values, same_values: properties, see above.
        senders, receivers, positions: name lists of the graph (positions: token positions,
            span names or ``["all"]``).
        meta: granularity (``"none" | "position" | "span"``), selection method, requested size,
            the graph's metadata (model, task, ablation, metric, ``prepend_bos``, schema spans …).
    """

    same_pos: Bool[Tensor, "pos sender receiver"]
    cross_shape: tuple[int, int, int, int, int]
    senders: list[str]
    receivers: list[str]
    positions: list[Any]
    meta: dict[str, Any]

    def __init__(
        self,
        same_pos: Bool[Tensor, "pos sender receiver"],
        cross: Bool[Tensor, "layer head kind qpos kpos"] | None = None,
        same_pos_scores: Float[Tensor, "pos sender receiver"] | None = None,
        cross_scores: Float[Tensor, "layer head kind qpos kpos"] | None = None,
        senders: Sequence[str] = (),
        receivers: Sequence[str] = (),
        positions: Sequence[Any] = (),
        meta: dict[str, Any] | None = None,
        *,
        cross_index: Int[Tensor, "edge 5"] | None = None,
        cross_values: Float[Tensor, " edge"] | None = None,
        cross_shape: Sequence[int] | None = None,
        same_values: Float[Tensor, " same_edge"] | None = None,
    ) -> None:
        self.same_pos = same_pos.bool()
        self.senders, self.receivers, self.positions = list(senders), list(receivers), list(positions)
        self.meta = dict(meta) if meta is not None else {}
        P, S, R = self.same_pos.shape
        if (len(self.positions), len(self.senders), len(self.receivers)) != (P, S, R):
            raise ValueError(
                f"same_pos has shape {tuple(self.same_pos.shape)} but there are {len(self.positions)} "
                f"positions, {len(self.senders)} senders, {len(self.receivers)} receivers")
        # scores: a dense context tensor (the graph's scores) or a lookup (sorted flat ids, values)
        # of the circuit's edges; the masks may be edited in place (same_pos, the dense .cross)
        self._same_dense: Tensor | None = None
        self._same_lut: tuple[Tensor, Tensor] | None = None
        self._cross_dense: Tensor | None = None  # dense crossing mask, when it exists (authoritative)
        self._cross_idx: Tensor = torch.zeros(0, 5, dtype=torch.long)
        self._cross_sc_dense: Tensor | None = None
        self._cross_lut: tuple[Tensor, Tensor] | None = None
        if same_pos_scores is not None:
            if same_pos_scores.shape != self.same_pos.shape:
                raise ValueError("score tensors must have the shapes of the masks")
            self._same_dense = same_pos_scores
        else:
            n = int(torch.count_nonzero(self.same_pos))  # (a bool .sum() makes an int64 copy)
            vals = torch.zeros(n) if same_values is None else torch.as_tensor(same_values).reshape(-1)
            if vals.numel() != n:
                raise ValueError(f"same_values has {vals.numel()} scores for {n} same-position edges")
            self._same_lut = (self._same_flat(), vals)
        if cross is not None:
            if cross_index is not None:
                raise ValueError("give the crossing edges as cross= (dense) or cross_index= (sparse), not both")
            cross = cross.bool()
            shape = tuple(int(x) for x in cross.shape)
            if len(shape) != 5 or shape[-1] != P or shape[-2] != P or shape[2] != 3:
                raise ValueError(f"cross must be [layer head 3 {P} {P}], got {shape}")
            self.cross_shape = shape  # type: ignore[assignment]
            self._cross_dense = cross
            idx = cross.nonzero()
            vals = cross_values
        else:
            if cross_shape is None:
                if cross_index is not None:
                    raise ValueError("cross_index= needs cross_shape=(layer, head, 3, P, P)")
                cross_shape = (0, 0, 3, P, P)
            shape = tuple(int(x) for x in cross_shape)
            if len(shape) != 5 or shape[-1] != P or shape[-2] != P or shape[2] != 3:
                raise ValueError(f"cross_shape must be (layer, head, 3, {P}, {P}), got {shape}")
            self.cross_shape = shape  # type: ignore[assignment]
            idx = (torch.zeros(0, 5, dtype=torch.long) if cross_index is None
                   else torch.as_tensor(cross_index).long().reshape(-1, 5))
            vals = cross_values
            if len(idx) and bool(((idx < 0) | (idx >= torch.tensor(shape))).any()):
                raise ValueError(f"cross_index has rows outside {shape}")
        vals = torch.zeros(len(idx)) if vals is None else torch.as_tensor(vals).reshape(-1)
        if len(vals) != len(idx):
            raise ValueError(f"cross_values has {len(vals)} scores for {len(idx)} crossing edges")
        flat = _cross_flat(idx, shape)
        order = torch.argsort(flat, stable=True)
        flat, idx, vals = flat[order], idx[order], vals[order]
        if bool((flat[1:] == flat[:-1]).any()):
            raise ValueError("cross_index has repeated edges")
        self._cross_idx = idx
        if cross_scores is not None:
            if tuple(cross_scores.shape) != shape:
                raise ValueError("score tensors must have the shapes of the masks")
            self._cross_sc_dense = cross_scores
        else:
            self._cross_lut = (flat, vals)

    def _same_flat(self) -> Tensor:
        P, S, R = self.same_pos.shape
        p, s, r = self.same_pos.nonzero(as_tuple=True)
        return (p * S + s) * R + r

    @staticmethod
    def _lookup(lut: tuple[Tensor, Tensor], flat: Tensor) -> Tensor:
        ids, vals = lut
        if not len(ids):
            return torch.zeros(len(flat), dtype=vals.dtype)
        pos = torch.searchsorted(ids, flat).clamp(max=len(ids) - 1)
        return torch.where(ids[pos] == flat, vals[pos], torch.zeros((), dtype=vals.dtype))

    # ------------------------------------------------------------------ edges, sparse
    @property
    def cross_index(self) -> Int[Tensor, "edge 5"]:
        """``[n 5]`` rows (layer, head, kind, qpos, kpos) of the crossing edges, sorted."""
        return self._cross_dense.nonzero() if self._cross_dense is not None else self._cross_idx

    @property
    def cross_values(self) -> Float[Tensor, " edge"]:
        """Scores of the crossing edges, aligned with :attr:`cross_index`."""
        flat = self.cross_flat_ids()
        if self._cross_sc_dense is not None:
            return self._cross_sc_dense.reshape(-1)[flat]
        assert self._cross_lut is not None
        return self._lookup(self._cross_lut, flat)

    @property
    def same_values(self) -> Float[Tensor, " same_edge"]:
        """Scores of the same-position edges, in ``same_pos.nonzero()`` order."""
        if self._same_dense is not None:
            return self._same_dense[self.same_pos]
        assert self._same_lut is not None
        return self._lookup(self._same_lut, self._same_flat())

    # ------------------------------------------------------------------ dense views
    def _check_dense(self, what: str) -> None:
        n = int(np.prod(self.cross_shape))
        if n > DENSE_CROSS_LIMIT:
            raise MemoryError(
                f"Circuit.{what} would be a dense [layer head 3 P P] tensor of {n / 2**20:.0f} Mi entries "
                f"(limit {DENSE_CROSS_LIMIT / 2**20:.0f} Mi): use the sparse crossing edges "
                "cross_index [n 5] / cross_values [n], cross_layer(l), cross_pair_counts() or edges()")

    @property
    def cross(self) -> Bool[Tensor, "layer head kind qpos kpos"]:
        """Dense ``[layer head kind qpos kpos]`` crossing mask (only when small, see the class);
        in-place edits of it edit the circuit."""
        if self._cross_dense is None:
            self._check_dense("cross")
            dense = torch.zeros(self.cross_shape, dtype=torch.bool)
            dense.view(-1)[_cross_flat(self._cross_idx, self.cross_shape)] = True
            self._cross_dense = dense
        return self._cross_dense

    @cross.setter
    def cross(self, value: Bool[Tensor, "layer head kind qpos kpos"]) -> None:
        if tuple(value.shape) != tuple(self.cross_shape):
            raise ValueError(f"cross must have shape {tuple(self.cross_shape)}, got {tuple(value.shape)}")
        if self._cross_lut is None and self._cross_sc_dense is None:
            self._cross_lut = (torch.zeros(0, dtype=torch.long), torch.zeros(0))
        self._cross_dense = value.bool()

    @property
    def cross_scores(self) -> Float[Tensor, "layer head kind qpos kpos"]:
        """Dense crossing scores: the graph's (when the circuit was built from dense scores) or the
        circuit's edges' scores with zeros elsewhere (only when small)."""
        if self._cross_sc_dense is not None:
            return self._cross_sc_dense
        self._check_dense("cross_scores")
        vals = self.cross_values
        out = torch.zeros(self.cross_shape, dtype=vals.dtype)
        out.view(-1)[self.cross_flat_ids()] = vals
        return out

    @property
    def same_pos_scores(self) -> Float[Tensor, "pos sender receiver"]:
        """Dense same-position scores: the graph's (when the circuit was built from dense scores)
        or the circuit's edges' scores with zeros elsewhere."""
        if self._same_dense is not None:
            return self._same_dense
        vals = self.same_values
        out = torch.zeros(self.same_pos.shape, dtype=vals.dtype)
        out[self.same_pos] = vals
        return out

    def cross_layer(self, layer: int) -> Bool[Tensor, "head kind qpos kpos"]:
        """Dense crossing mask of one layer ``[head 3 P P]``."""
        _, H, K, P, _ = self.cross_shape
        idx = self.cross_index[self.cross_index[:, 0] == layer]
        out = torch.zeros(H, K, P, P, dtype=torch.bool)
        out[idx[:, 1], idx[:, 2], idx[:, 3], idx[:, 4]] = True
        return out

    def cross_flat_ids(self) -> Int[Tensor, " edge"]:
        """Row-major flat ids of the crossing edges in ``[layer head kind qpos kpos]`` (sorted)."""
        return _cross_flat(self.cross_index, self.cross_shape)

    def cross_head_kinds(self) -> Bool[Tensor, "layer head kind"]:
        """``[layer head 3]``: the head has some crossing edge of that kind in the circuit."""
        L, H, K = self.cross_shape[:3]
        out = torch.zeros(L, H, K, dtype=torch.bool)
        i = self.cross_index
        out[i[:, 0], i[:, 1], i[:, 2]] = True
        return out

    def cross_pair_counts(self) -> Float[Tensor, "qpos kpos"]:
        """``[P P]``: number of crossing edges (over layers, heads, kinds) per position pair."""
        P = self.cross_shape[-1]
        i = self.cross_index
        return torch.bincount(i[:, 3] * P + i[:, 4], minlength=P * P).reshape(P, P).float()

    # ------------------------------------------------------------------ sizes
    @property
    def granularity(self) -> str:
        return str(self.meta.get("granularity", "span" if self.positions != ["all"] else "none"))

    @property
    def n_edges(self) -> int:
        """Number of abstract edges (same-position + crossing) in the circuit."""
        return self.n_same_pos + self.n_cross

    @property
    def n_same_pos(self) -> int:
        return int(torch.count_nonzero(self.same_pos))

    @property
    def n_cross(self) -> int:
        return int(self.cross_index.shape[0])

    @property
    def index(self) -> GraphIndex:
        if not hasattr(self, "_index"):
            self._index = GraphIndex(self.senders, self.receivers, self.cross_shape[0], self.cross_shape[1])
        return self._index

    def nodes(self) -> list[str]:
        """Names ``"{node}@{position}"`` of the nodes touched by the circuit's edges."""
        out: set[str] = set()
        for p, s, r in self.same_pos.nonzero().tolist():
            out.add(f"{self.senders[s]}@{self.positions[p]}")
            out.add(f"{self.receivers[r]}@{self.positions[p]}")
        ix = self.index
        for l, h, k, qp, kp in self.cross_index.tolist():
            out.add(f"L{l}H{h}@{self.positions[qp]}")
            parent = self.receivers[ix.cross_parent[l, h, k]]
            out.add(f"{parent}@{self.positions[qp if k == 0 else kp]}")
        return sorted(out)

    def edges(self) -> list[dict[str, Any]]:
        """Every edge as a dict (``sender``, ``receiver``, ``position`` / ``qpos``, ``kpos``,
        ``kind``, ``score``), sorted by decreasing |score|."""
        out: list[dict[str, Any]] = []
        for (p, s, r), v in zip(self.same_pos.nonzero().tolist(), self.same_values.tolist()):
            out.append({"type": "same_pos", "sender": self.senders[s], "receiver": self.receivers[r],
                        "position": self.positions[p], "kind": RECEIVER_KINDS[self.index.recv_kind[r]],
                        "score": float(v)})
        ix = self.index
        for (l, h, k, qp, kp), v in zip(self.cross_index.tolist(), self.cross_values.tolist()):
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
        return concrete_edge_counts(self.same_pos, self.cross_index, pos_index)

    # ------------------------------------------------------------------ json
    def to_json(self) -> dict[str, Any]:
        """Versioned plain-JSON dict: names, shapes, metadata and the circuit's edges (sparse,
        ``[p, s, r, score]`` and ``[l, h, kind, qpos, kpos, score]``)."""
        same_idx = self.same_pos.nonzero().tolist()
        return {
            "type": "Circuit", "version": CIRCUIT_JSON_VERSION,
            "senders": self.senders, "receivers": self.receivers,
            "positions": list(self.positions),
            "cross_shape": list(self.cross_shape),
            "n_edges": self.n_edges,
            "same_pos_edges": [[*map(int, i), float(v)] for i, v in zip(same_idx, self.same_values.tolist())],
            "cross_edges": [[*map(int, i), float(v)]
                            for i, v in zip(self.cross_index.tolist(), self.cross_values.tolist())],
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
        cs = tuple(int(x) for x in d["cross_shape"])
        se = d["same_pos_edges"]
        sidx = torch.tensor([[int(x) for x in e[:3]] for e in se], dtype=torch.long).reshape(-1, 3)
        sval = torch.tensor([float(e[3]) for e in se], dtype=torch.float32)
        flat = (sidx[:, 0] * S + sidx[:, 1]) * R + sidx[:, 2]
        flat, first = torch.unique(flat, return_inverse=True)  # sorted, as same_pos.nonzero()
        vals = torch.zeros(len(flat), dtype=torch.float32)
        vals[first] = sval
        same = torch.zeros(P * S * R, dtype=torch.bool)
        same[flat] = True
        same = same.reshape(P, S, R)
        ce = d["cross_edges"]
        cidx = torch.tensor([[int(x) for x in e[:5]] for e in ce], dtype=torch.long).reshape(-1, 5)
        cval = torch.tensor([float(e[5]) for e in ce], dtype=torch.float32)
        return cls(same, None, None, None, list(d["senders"]), list(d["receivers"]),
                   list(d["positions"]), dict(d.get("meta", {})), cross_index=cidx, cross_values=cval,
                   cross_shape=cs, same_values=vals)

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
        if not (torch.equal(self.same_pos, other.same_pos) and tuple(self.cross_shape) == tuple(other.cross_shape)
                and torch.equal(self.cross_index, other.cross_index)):
            return False
        return (values_equal(self.same_values, other.same_values, rtol, atol)
                and values_equal(self.cross_values, other.cross_values, rtol, atol)
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
    cross: Bool[Tensor, "layer head kind qpos kpos"] | Int[Tensor, "edge 5"],
    pos_index: Int[Tensor, "batch tok"],
) -> Float[Tensor, " batch"]:
    """Concrete edges per example of an abstract edge mask; see :meth:`Circuit.concrete_edges`.

    ``cross`` is the dense crossing mask ``[layer head kind qpos kpos]`` or the sparse rows
    ``[n 5]`` of its kept edges (:attr:`Circuit.cross_index`)."""
    P = same_pos.shape[0]
    valid_tok = pos_index >= 0
    onehot = torch.zeros(*pos_index.shape, P, dtype=torch.float32)
    onehot[valid_tok] = torch.nn.functional.one_hot(pos_index[valid_tok], P).float()
    size = onehot.sum(1)  # [batch P] tokens per abstract position
    per_pos = torch.bincount(same_pos.nonzero()[:, 0], minlength=P)  # edges per position, no [P S R] copy
    n_same = size @ per_pos.float()
    # causal pairs between abstract positions: pairs[b, p1, p2] = #{(t, t'): t in p1, t' in p2, t' <= t}
    T = pos_index.shape[1]
    causal = torch.tril(torch.ones(T, T))
    pairs = einsum(onehot, causal, onehot, "b query abs_q, query key, b key abs_k -> b abs_q abs_k")
    if cross.dim() == 5:
        per_pair = cross.sum((0, 1, 2)).float()
    else:
        i = cross.long()
        per_pair = torch.bincount(i[:, 3] * P + i[:, 4], minlength=P * P).reshape(P, P).float()
    n_cross = einsum(pairs, per_pair, "b abs_q abs_k, abs_q abs_k -> b")
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
                                  or tuple(stability.cross_freq.shape) != tuple(circuit.cross_shape)):
        raise ValueError("stability= comes from a graph of another shape than the circuit's")

    def fr(idx: tuple, cross: bool) -> float:
        if stability is None:
            return 1.0
        return float((stability.cross_freq if cross else stability.same_freq)[idx])

    def ftxt(f: float) -> str:
        return "" if stability is None else f"<br>selected in {100 * f:.0f}% of resamples"

    for (p, s, r), v in zip(circuit.same_pos.nonzero().tolist(), circuit.same_values.tolist()):
        x0, y0 = sender_xy(s, p)
        x1, y1 = recv_xy(r, p)
        kind = RECEIVER_KINDS[ix.recv_kind[r]]
        f = fr((p, s, r), False)
        edges.append((x0, y0, x1, y1, v, kind,
                      f"{circuit.senders[s]} → {circuit.receivers[r]} @ {circuit.positions[p]}<br>score {v:+.4g}{ftxt(f)}", f))
    for (l, h, k, qp, kp), v in zip(circuit.cross_index.tolist(), circuit.cross_values.tolist()):
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
    for (l, h, k, qp, kp) in circuit.cross_index.tolist():
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
