"""Output stores of position-granularity attribution that need not fit in RAM.

Streamed attribution (:mod:`circuits._stream`) hands each receiver layer's position blocks to a
:class:`PositionSink`, which builds one of:

* ``"dense"`` — an :class:`~circuits.graph.AttributionGraph` (``[pos sender receiver]`` and
  ``[layer head kind qpos kpos]`` tensors), as before;
* ``"topk"`` — :class:`SparseAttributionGraph` holding exactly the ``k`` edges of largest
  |score| (over the whole graph, or ``k`` per layer with ``per="layer"``): the same edges, with
  the same scores, as ``dense_graph.top_edges(k)`` (ties aside);
* ``"threshold"`` — :class:`SparseAttributionGraph` holding every edge with |score| ≥ t;
* ``"disk"`` — :class:`ShardedAttributionGraph`: one safetensors shard per piece (a chunk of
  positions of one layer's same-position edges, or a chunk of heads of its crossing edges) in a
  directory, read lazily.

Every store also keeps the exact aggregates (node scores ``[pos sender]``, receiver scores
``[pos receiver]``, crossing totals per head and kind, crossing totals per head and query
position), so node-level plots and summaries do not depend on which edges were kept.
With more than one batch of examples the pieces are first summed in temporary memory-mapped
files (scores are means over examples), then stored.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits._graph import STORE_LOADERS
from interp.results import Result, to_jsonable

__all__ = ["PositionSink", "SparseAttributionGraph", "ShardedAttributionGraph", "STORES"]

STORES = ("dense", "topk", "threshold", "disk")
DENSE_LIMIT = 2 * 2**30  # bytes a sparse graph may materialise as dense tensors


# ----------------------------------------------------------------------------------------------
# shared graph behaviour of the sparse stores
# ----------------------------------------------------------------------------------------------
class _StoredGraph:
    """Methods shared by the sparse and sharded graphs (labels, aggregates, edge decoding)."""

    senders: list[str]
    receivers: list[str]
    positions: list[str]
    valid: Tensor
    cross_valid: Tensor
    span_sizes: Tensor
    cross_pairs: Tensor
    node: Tensor
    recv: Tensor
    head_cross: Tensor
    head_query: Tensor
    meta: dict[str, Any]

    @property
    def n_layers(self) -> int:
        return int(self.head_cross.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.head_cross.shape[1])

    @property
    def granularity(self) -> str:
        return str(self.meta.get("granularity", "position"))

    def node_scores(self) -> Float[Tensor, "pos sender"]:
        """Exact sender node scores (all edges, not only the stored ones)."""
        return self.node.clone()

    def receiver_scores(self) -> Float[Tensor, "pos receiver"]:
        """Exact receiver node scores (all edges)."""
        return self.recv.clone()

    def head_cross_scores(self) -> Float[Tensor, "layer head kind"]:
        """Exact total crossing score per head and kind (all edges)."""
        return self.head_cross.clone()

    def head_query_scores(self) -> Float[Tensor, "layer head qpos"]:
        """Exact crossing score per head and query position, summed over kinds and keys."""
        return self.head_query.clone()

    def n_edges(self) -> int:
        """Abstract edges of the full graph (stored or not)."""
        P = len(self.positions)
        return int(self.valid.sum()) * P + int(self.cross_valid.sum()) * self.n_layers * self.n_heads * 3

    def _dense_bytes(self) -> int:
        P, S, R = len(self.positions), len(self.senders), len(self.receivers)
        return 4 * (P * S * R + self.n_layers * self.n_heads * 3 * P * P)

    def _decode(self, ids: Tensor, scores: Tensor) -> list[Any]:
        from circuits._graph import KINDS, Edge

        P, S, R = len(self.positions), len(self.senders), len(self.receivers)
        H = self.n_heads
        n_same = P * S * R
        out = []
        for i, sc in zip(ids.tolist(), scores.tolist()):
            if i < n_same:
                p, rem = divmod(i, S * R)
                s, r = divmod(rem, R)
                out.append(Edge("same", self.senders[s], self.receivers[r], self.positions[p],
                                self.positions[p], float(sc)))
            else:
                l, rem = divmod(i - n_same, H * 3 * P * P)
                h, rem = divmod(rem, 3 * P * P)
                k, rem = divmod(rem, P * P)
                t, tp = divmod(rem, P)
                lab = f"L{l}H{h}"
                out.append(Edge(KINDS[k], lab, lab, self.positions[t], self.positions[tp], float(sc)))
        return out

    def _filter_ids(self, ids: Tensor, kinds: Iterable[str], positions: Iterable[int | str] | None,
                    layers: Iterable[int] | None, receiver_kinds: Iterable[str] | None) -> Tensor:
        from circuits._graph import node_layer, receiver_kind

        kinds = set(kinds)
        unknown = kinds - {"same", "q", "k", "v"}
        if unknown:
            raise ValueError(f"unknown edge kinds {unknown}; use 'same', 'q', 'k', 'v'")
        P, S, R = len(self.positions), len(self.senders), len(self.receivers)
        H = self.n_heads
        n_same = P * S * R
        same = ids < n_same
        ok = torch.zeros_like(same)
        if "same" in kinds:
            ok |= same
        c = (ids - n_same).clamp(min=0)
        ckind = (c // (P * P)) % 3
        for i, k in enumerate("qkv"):
            if k in kinds:
                ok |= ~same & (ckind == i)
        if positions is not None:
            pos_ok = torch.zeros(P, dtype=torch.bool)
            for p in positions:
                pos_ok[self._pos_index(p)] = True
            qpos = torch.where(same, ids // (S * R), (c // P) % P)
            ok &= pos_ok[qpos]
        if layers is not None:
            ls = set(layers)
            r_lay = torch.tensor([node_layer(r) in ls for r in self.receivers])
            c_lay = torch.tensor([l in ls for l in range(self.n_layers)] + [False])
            lay = torch.where(same, r_lay[ids % R], c_lay[(c // (H * 3 * P * P)).clamp(max=self.n_layers)])
            ok &= lay
        if receiver_kinds is not None:
            rk = set(receiver_kinds)
            r_ok = torch.tensor([receiver_kind(r) in rk for r in self.receivers])
            ok &= ~same | r_ok[ids % R]
        return ok

    def _pos_index(self, pos: int | str) -> int:
        if isinstance(pos, int):
            return pos % len(self.positions)
        if pos in self.positions:
            return self.positions.index(pos)
        raise KeyError(f"unknown position {pos!r}")

    def plot(self, view: str = "nodes") -> Any:
        """Heatmap of exact node scores (see :meth:`circuits.graph.AttributionGraph.plot`)."""
        from circuits._graph import plot_graph

        return plot_graph(self, view)

    @property
    def same_pos(self) -> Tensor:
        """Dense same-position scores (0 for edges not stored); only when they fit."""
        return self.to_dense().same_pos

    @property
    def cross(self) -> Tensor:
        """Dense crossing scores (0 for edges not stored); only when they fit."""
        return self.to_dense().cross

    def to_dense(self, max_bytes: int = DENSE_LIMIT) -> Any:
        """An :class:`~circuits.graph.AttributionGraph` with the stored edges (0 elsewhere)."""
        from circuits._graph import AttributionGraph

        cached = self.__dict__.get("_dense")
        if cached is not None:
            return cached
        need = self._dense_bytes()
        if need > max_bytes:
            raise MemoryError(f"the dense form of this {len(self.positions)}-position graph needs "
                              f"{need / 2**30:.1f} GiB (limit {max_bytes / 2**30:.1f} GiB): use "
                              "top_edges()/edges()/node_scores() on the stored graph, or pass "
                              "max_bytes= to to_dense()")
        P, S, R = len(self.positions), len(self.senders), len(self.receivers)
        L, H = self.n_layers, self.n_heads
        flat = torch.zeros(P * S * R + L * H * 3 * P * P, dtype=torch.float32)
        for ids, sc in self._chunks():
            flat[ids] = sc.float()
        same = rearrange(flat[: P * S * R], "(pos sender receiver) -> pos sender receiver",
                         pos=P, sender=S, receiver=R)
        cross = rearrange(flat[P * S * R:], "(layer head kind qpos kpos) -> layer head kind qpos kpos",
                          layer=L, head=H, kind=3, qpos=P, kpos=P)
        g = AttributionGraph(list(self.senders), list(self.receivers), list(self.positions),
                             same, self.valid.clone(), cross, self.cross_valid.clone(),
                             self.span_sizes.clone(), self.cross_pairs.clone(), dict(self.meta))
        self.__dict__["_dense"] = g
        return g

    def _chunks(self) -> Iterator[tuple[Tensor, Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
# sparse (top-k / threshold) graph
# ----------------------------------------------------------------------------------------------
@dataclass
class SparseAttributionGraph(_StoredGraph, Result):
    """Attribution graph keeping only some edges (``meta["store"]``: ``"topk"`` or
    ``"threshold"``), with exact aggregates. Edge ids follow
    :meth:`~circuits.graph.AttributionGraph.top_edges`: same-position ``(p·S + s)·R + r``,
    crossing ``P·S·R + (((l·H + h)·3 + kind)·P + q)·P + k``."""

    senders: list[str]
    receivers: list[str]
    positions: list[str]
    valid: Bool[Tensor, "sender receiver"]
    cross_valid: Bool[Tensor, "qpos kpos"]
    span_sizes: Float[Tensor, " pos"]
    cross_pairs: Float[Tensor, "qpos kpos"]
    edge_ids: Int[Tensor, " edge"]
    scores: Float[Tensor, " edge"]
    node: Float[Tensor, "pos sender"]
    recv: Float[Tensor, "pos receiver"]
    head_cross: Float[Tensor, "layer head kind"]
    head_query: Float[Tensor, "layer head qpos"]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_stored(self) -> int:
        return int(self.edge_ids.numel())

    def _chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        yield self.edge_ids, self.scores

    def top_edges(self, n: int | None = 20, *, kinds: Iterable[str] = ("same", "q", "k", "v"),
                  positions: Iterable[int | str] | None = None, layers: Iterable[int] | None = None,
                  receiver_kinds: Iterable[str] | None = None, absolute: bool = True) -> list[Any]:
        """The ``n`` stored edges of highest |score| passing the filters (as
        :meth:`AttributionGraph.top_edges`; a top-k graph answers exactly for n ≤ k)."""
        if n is not None and self.meta.get("store") == "topk" and n > self.n_stored \
                and self.n_stored < self.n_edges():
            raise ValueError(f"this top-k graph stores {self.n_stored} edges; asked for {n}. "
                             "Re-run attribute(..., store='topk', k=...) with a larger k")
        ok = self._filter_ids(self.edge_ids, kinds, positions, layers, receiver_kinds)
        ids, sc = self.edge_ids[ok], self.scores[ok]
        key = sc.abs() if absolute else sc
        order = torch.argsort(key, descending=True, stable=True)
        if n is not None:
            order = order[:n]
        return self._decode(ids[order], sc[order])

    def edges(self, **kw: Any) -> list[Any]:
        """All stored edges passing the filters."""
        return self.top_edges(None, **kw)

    def top(self, n: int = 20) -> list[Any]:
        return self.top_edges(n)

    def save(self, path: str | Path) -> Path:
        """One ``.safetensors`` file (labels and meta in its header); read back with :meth:`load`."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        t = {n: getattr(self, n).detach().cpu().contiguous() for n in _SPARSE_TENSORS}
        t["valid"], t["cross_valid"] = t["valid"].to(torch.uint8), t["cross_valid"].to(torch.uint8)
        header = {"type": "SparseAttributionGraph", "version": 1, "senders": self.senders,
                  "receivers": self.receivers, "positions": self.positions,
                  "meta": to_jsonable(self.meta)}
        save_file(t, str(path), metadata={"graph": json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> SparseAttributionGraph:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            h = json.loads((f.metadata() or {}).get("graph", "{}"))
        if h.get("type") != "SparseAttributionGraph":
            raise ValueError(f"{path} is not a saved SparseAttributionGraph")
        t = load_file(str(path))
        t["valid"], t["cross_valid"] = t["valid"].bool(), t["cross_valid"].bool()
        return cls(list(h["senders"]), list(h["receivers"]), list(h["positions"]),
                   **{n: t[n] for n in _SPARSE_TENSORS}, meta=dict(h.get("meta", {})))

    def to_json(self) -> dict[str, Any]:
        """Every field (so :meth:`from_json` rebuilds the graph) plus the stored edges, decoded."""
        return {**Result.to_json(self), "edges": [e._asdict() for e in self.top_edges(None)]}

    def __repr__(self) -> str:
        return (f"SparseAttributionGraph({self.meta.get('method', '?')}, store={self.meta.get('store')}, "
                f"positions={len(self.positions)}, stored={self.n_stored} of {self.n_edges()} edges, "
                f"{self._bos_model()})")


_SPARSE_TENSORS = ("valid", "cross_valid", "span_sizes", "cross_pairs", "edge_ids", "scores", "node",
                   "recv", "head_cross", "head_query")
_AGG = ("valid", "cross_valid", "span_sizes", "cross_pairs", "node", "recv", "head_cross", "head_query")


# ----------------------------------------------------------------------------------------------
# sharded (on-disk) graph
# ----------------------------------------------------------------------------------------------
class ShardedAttributionGraph(_StoredGraph):
    """A position graph stored as safetensors shards in a directory, read lazily.

    ``index.json`` lists the pieces: same-position pieces (receiver columns ``[r0, r1)``,
    senders ``[0, n_send)``, positions ``[c0, c1)``) and crossing pieces (layer, heads
    ``[h0, h1)``); ``aggregates.safetensors`` holds the exact aggregates and masks.
    """

    def __init__(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        self.path = Path(path)
        idx_path = self.path / "index.json"
        if not idx_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a sharded attribution graph (no index.json)")
        h = json.loads(idx_path.read_text())
        self.senders, self.receivers = list(h["senders"]), list(h["receivers"])
        self.positions, self.meta = list(h["positions"]), dict(h.get("meta", {}))
        self.pieces: list[dict[str, Any]] = list(h["pieces"])
        agg = load_file(str(self.path / "aggregates.safetensors"))
        for n in _AGG:
            t = agg[n]
            setattr(self, n, t.bool() if n in ("valid", "cross_valid") else t)

    def piece(self, i: int) -> Tensor:
        """The score block of piece ``i`` (read from disk now)."""
        from safetensors import safe_open

        with safe_open(str(self.path / self.pieces[i]["file"]), framework="pt") as f:
            return f.get_tensor("scores")

    def _piece_ids(self, i: int, block: Tensor) -> Tensor:
        P, S, R = len(self.positions), len(self.senders), len(self.receivers)
        H = self.n_heads
        pc = self.pieces[i]
        if pc["kind"] == "same":
            c0, c1, r0, r1, ns = pc["c0"], pc["c1"], pc["r0"], pc["r1"], pc["n_send"]
            p = torch.arange(c0, c1)[:, None, None]
            s = torch.arange(ns)[None, :, None]
            r = torch.arange(r0, r1)[None, None, :]
            return ((p * S + s) * R + r).reshape(-1)
        l, h0, h1 = pc["layer"], pc["h0"], pc["h1"]
        h = torch.arange(h0, h1)[:, None, None, None]
        k = torch.arange(3)[None, :, None, None]
        q = torch.arange(P)[None, None, :, None]
        kp = torch.arange(P)[None, None, None, :]
        return P * S * R + ((((l * H + h) * 3 + k) * P + q) * P + kp).reshape(-1)

    def _chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(len(self.pieces)):
            b = self.piece(i)
            yield self._piece_ids(i, b), b.reshape(-1)

    def top_edges(self, n: int | None = 20, *, kinds: Iterable[str] = ("same", "q", "k", "v"),
                  positions: Iterable[int | str] | None = None, layers: Iterable[int] | None = None,
                  receiver_kinds: Iterable[str] | None = None, absolute: bool = True) -> list[Any]:
        """Top edges, streaming over the shards (memory: one piece plus ``n`` candidates)."""
        best_i = torch.zeros(0, dtype=torch.long)
        best_s = torch.zeros(0)
        for ids, sc in self._chunks():
            ok = self._filter_ids(ids, kinds, positions, layers, receiver_kinds) & (sc != 0)
            ids, sc = ids[ok], sc[ok].float()
            best_i, best_s = torch.cat([best_i, ids]), torch.cat([best_s, sc])
            if n is not None and best_s.numel() > n:
                key = best_s.abs() if absolute else best_s
                top = torch.topk(key, n).indices
                best_i, best_s = best_i[top], best_s[top]
        key = best_s.abs() if absolute else best_s
        order = torch.argsort(key, descending=True, stable=True)
        return self._decode(best_i[order], best_s[order])

    def edges(self, **kw: Any) -> list[Any]:
        return self.top_edges(None, **kw)

    def __repr__(self) -> str:
        return (f"ShardedAttributionGraph({str(self.path)!r}, positions={len(self.positions)}, "
                f"pieces={len(self.pieces)}, edges={self.n_edges()})")


# ----------------------------------------------------------------------------------------------
# the sink that streamed attribution writes into
# ----------------------------------------------------------------------------------------------
class PositionSink:
    """Collects per-layer position blocks of streamed attribution and builds the store.

    ``add_same(cols, n_send, c0, block [pc n_send n_cols])`` (raw sums over the batch's
    examples) and ``add_cross(layer, h0, block [h 3 w w])``; ``end_batch()`` after every batch;
    ``finish(n)`` returns the graph (scores divided by the number of examples ``n_examples``).
    """

    def __init__(self, *, senders: list[str], receivers: list[str], positions: list[str],
                 n_layers: int, n_heads: int, valid: Tensor, cross_valid: Tensor,
                 span_sizes: Tensor, cross_pairs: Tensor, n_batches: int, n_examples: int,
                 store: str = "dense",
                 k: int | None = None, per: str = "global", threshold: float | None = None,
                 path: str | Path | None = None, meta: dict[str, Any] | None = None,
                 device: torch.device | str = "cpu") -> None:
        if store not in STORES:
            raise ValueError(f"store must be one of {STORES}, got {store!r}")
        if store == "topk" and (k is None or k < 1):
            raise ValueError("store='topk' needs k >= 1 (the number of edges to keep)")
        if store == "threshold" and threshold is None:
            raise ValueError("store='threshold' needs threshold= (keep edges with |score| >= it)")
        if store == "disk" and path is None:
            raise ValueError("store='disk' needs path= (a directory for the shards)")
        if per not in ("global", "layer"):
            raise ValueError(f"per must be 'global' or 'layer', got {per!r}")
        self.senders, self.receivers, self.positions = senders, receivers, positions
        self.L, self.H = n_layers, n_heads
        self.P, self.S, self.R = len(positions), len(senders), len(receivers)
        self.valid, self.cross_valid = valid.cpu(), cross_valid.cpu()
        self.span_sizes, self.cross_pairs = span_sizes.cpu(), cross_pairs.cpu()
        self.store, self.k, self.per, self.threshold = store, k, per, threshold
        self.path = None if path is None else Path(path)
        self.meta = dict(meta or {})
        self.multi = n_batches > 1
        self.dev = device
        self.n = float(n_examples)
        P, S, R, L, H = self.P, self.S, self.R, self.L, self.H
        if store == "dense":
            self.same = torch.zeros(P, S, R, dtype=torch.float32, device=device)
            self.crossd = torch.zeros(L, H, 3, P, P, dtype=torch.float32, device=device)
            return
        self.node = torch.zeros(P, S, dtype=torch.float64)
        self.recv = torch.zeros(P, R, dtype=torch.float64)
        self.head_cross = torch.zeros(L, H, 3, dtype=torch.float64)
        self.head_query = torch.zeros(L, H, P, dtype=torch.float64)
        # per group: candidate ids and scores (top-k: compacted to the k largest |score| only
        # when they exceed 2k — fewer top-k passes) and the admission bar tau (a top-k group's
        # k-th largest |score| at its last compaction; −1 before the group first held k)
        self.best: dict[Any, tuple[Tensor, Tensor]] = {}
        self.tau: dict[Any, float] = {}
        self._mag: Tensor | None = None  # the |block| buffer (_scratch)
        self.pieces: list[dict[str, Any]] = []
        self.tmp: Path | None = None
        self.mm: dict[tuple, np.memmap] = {}
        if store == "disk":
            assert self.path is not None
            self.path.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ receiving blocks
    def add_same(self, cols: slice, n_send: int, c0: int, block: Tensor) -> None:
        if self.store == "dense":
            self.same[c0: c0 + block.shape[0], :n_send, cols] += block.to(self.same.dtype)
            return
        key = ("same", cols.start, cols.stop, n_send, c0, block.shape[0])
        self._piece(key, block)

    def add_cross(self, layer: int, h0: int, block: Tensor) -> None:
        w = block.shape[-1]
        if self.store == "dense":
            self.crossd[layer, h0: h0 + block.shape[0], :, :w, :w] += block.to(self.crossd.dtype)
            return
        if w < self.P:  # a narrower batch: pad to all positions
            full = block.new_zeros(*block.shape[:2], self.P, self.P)
            full[..., :w, :w] = block
            block = full
        self._piece(("cross", layer, h0, h0 + block.shape[0]), block)

    def _piece(self, key: tuple, block: Tensor) -> None:
        if not self.multi:
            self._finalize(key, block.detach().float().cpu())
            return
        if key not in self.mm:
            if self.tmp is None:
                self.tmp = Path(tempfile.mkdtemp(prefix="attr-sink-"))
            self.mm[key] = np.lib.format.open_memmap(self.tmp / f"{len(self.mm)}.npy", mode="w+",
                                                     dtype=np.float32, shape=tuple(block.shape))
        self.mm[key] += block.detach().float().cpu().numpy()

    def end_batch(self) -> None:
        if self.multi and self.store != "dense":
            for m in self.mm.values():
                m.flush()

    # ------------------------------------------------------------------ storing one piece
    def _finalize(self, key: tuple, raw: Tensor) -> None:
        P, S, R, H = self.P, self.S, self.R, self.H
        block = raw / self.n if self.n != 1 else raw  # x / 1 is x: no copy for one example
        if key[0] == "same":
            _, r0, r1, ns, c0, pc = key
            ok = self.valid[:ns, r0:r1][None]
            block = block * ok
            self.node[c0: c0 + pc, :ns] += block.sum(-1).double()
            self.recv[c0: c0 + pc, r0:r1] += block.sum(-2).double()
            okf = ok.expand_as(block)

            def edge_ids(ix: Tensor) -> Tensor:  # flat edge id of block entries ix [n 3]
                return ((c0 + ix[:, 0]) * S + ix[:, 1]) * R + r0 + ix[:, 2]
            from circuits._graph import node_layer

            group = node_layer(self.receivers[r0]) if self.per == "layer" else 0
            meta = {"kind": "same", "r0": r0, "r1": r1, "n_send": ns, "c0": c0, "c1": c0 + pc}
        else:
            _, l, h0, h1 = key
            # crossing blocks are already 0 outside their examples' valid pairs (which
            # cross_valid is the union of): no masking multiply
            ok = self.cross_valid[None, None]
            rows = block.sum(-1)  # [h 3 q]: one pass over the block for both aggregates
            self.head_cross[l, h0:h1] += rows.sum(-1).double()
            self.head_query[l, h0:h1] += rows.sum(1).double()
            okf = ok.expand_as(block)

            def edge_ids(ix: Tensor) -> Tensor:  # flat edge id of block entries ix [n 4]
                return P * S * R + (((l * H + h0 + ix[:, 0]) * 3 + ix[:, 1]) * P + ix[:, 2]) * P + ix[:, 3]
            group = l if self.per == "layer" else 0
            meta = {"kind": "cross", "layer": l, "h0": h0, "h1": h1}
        if self.store == "disk":
            from safetensors.torch import save_file

            assert self.path is not None
            name = f"piece_{len(self.pieces):05d}.safetensors"
            save_file({"scores": block.contiguous()}, str(self.path / name))
            self.pieces.append({**meta, "file": name})
            return
        # candidates: valid entries that can still enter the store — at or above the threshold,
        # or (top-k) strictly above the smallest |score| of a full group's current k (an entry
        # at or below it cannot displace any of them); ids are made for the candidates only
        prev = self.best.get(group)
        mag = self._scratch(block)  # |block| in the one buffer all pieces reuse
        sel = okf
        tau = self.tau.get(group, -1.0)
        if self.store == "threshold":
            sel = okf & (mag >= float(self.threshold))  # type: ignore[arg-type]
        elif tau >= 0:
            # an entry at or below the k-th largest |score| so far cannot enter; an invalid
            # entry is 0 (masked above, or a crossing block's own zeros) and never passes
            # |score| > tau ≥ 0, so the valid mask is not needed
            sel = mag > tau
        elif int(okf.sum()) > int(self.k):  # type: ignore[arg-type]
            # a group not yet full meeting a block with more valid entries than k: only this
            # block's own k largest can enter (ids are made for those k, not for every entry)
            top = torch.topk(mag.masked_fill_(~okf, -1.0).flatten(), int(self.k),  # type: ignore[arg-type]
                             sorted=False).indices
            sel = torch.zeros(block.numel(), dtype=torch.bool).index_fill_(0, top, True).view(block.shape)
        sc, ii = block[sel], edge_ids(torch.nonzero(sel))
        if prev is not None:
            ii, sc = torch.cat([prev[0], ii]), torch.cat([prev[1], sc])
        self.best[group] = (ii, sc)
        if self.store == "topk" and (sc.numel() > 2 * int(self.k)  # type: ignore[arg-type]
                                     or (tau < 0 and sc.numel() >= int(self.k))):  # type: ignore[arg-type]
            self._compact(group)

    def _compact(self, group: Any) -> None:
        """Keep a top-k group's k largest |score| and raise its bar to the k-th of them."""
        ii, sc = self.best[group]
        k = int(self.k)  # type: ignore[arg-type]
        if sc.numel() > k:
            top = torch.topk(sc.abs(), k, sorted=False).indices
            ii, sc = ii[top], sc[top]
        self.best[group] = (ii, sc)
        if sc.numel() >= k:
            self.tau[group] = float(sc.abs().min())

    def _scratch(self, block: Tensor) -> Tensor:
        """``|block|`` written into one flat buffer reused by every piece (grown to the largest
        piece), not a fresh allocation per piece."""
        buf = self._mag
        if buf is None or buf.numel() < block.numel() or buf.dtype != block.dtype:
            buf = self._mag = torch.empty(block.numel(), dtype=block.dtype)
        return torch.abs(block, out=buf[: block.numel()].view(block.shape))

    # ------------------------------------------------------------------ the result
    def finish(self, n: int, meta: dict[str, Any]) -> Any:
        from circuits._graph import AttributionGraph

        self.meta.update(meta)
        if self.store == "dense":
            self.same /= n
            self.crossd /= n
            same = self.same.cpu() * self.valid
            cross = self.crossd.cpu() * self.cross_valid
            return AttributionGraph(self.senders, self.receivers, self.positions, same, self.valid,
                                    cross, self.cross_valid, self.span_sizes, self.cross_pairs,
                                    self.meta)
        if self.multi:
            for key, m in self.mm.items():
                self._finalize(key, torch.from_numpy(np.asarray(m)))
            self.mm.clear()
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.meta.update({"store": self.store, "k": self.k, "per": self.per,
                          "threshold": self.threshold})
        agg = {"valid": self.valid, "cross_valid": self.cross_valid, "span_sizes": self.span_sizes,
               "cross_pairs": self.cross_pairs, "node": self.node.float(), "recv": self.recv.float(),
               "head_cross": self.head_cross.float(), "head_query": self.head_query.float()}
        if self.store == "disk":
            from safetensors.torch import save_file

            assert self.path is not None
            save_file({k: (v.to(torch.uint8) if v.dtype == torch.bool else v).contiguous()
                       for k, v in agg.items()}, str(self.path / "aggregates.safetensors"))
            (self.path / "index.json").write_text(json.dumps({
                "type": "ShardedAttributionGraph", "version": 1, "senders": self.senders,
                "receivers": self.receivers, "positions": self.positions,
                "meta": to_jsonable(self.meta), "pieces": self.pieces}))
            return ShardedAttributionGraph(self.path)
        if self.store == "topk":
            for group in list(self.best):
                self._compact(group)
        ids = [v[0] for v in self.best.values()]
        scs = [v[1] for v in self.best.values()]
        ids_t = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
        sc_t = torch.cat(scs) if scs else torch.zeros(0)
        order = torch.argsort(sc_t.abs(), descending=True, stable=True)
        return SparseAttributionGraph(self.senders, self.receivers, self.positions, **agg,
                                      edge_ids=ids_t[order], scores=sc_t[order].float(), meta=self.meta)


# AttributionGraph.load opens these stores' files (circuits._graph does not import this module)
STORE_LOADERS["sparse"] = SparseAttributionGraph.load
STORE_LOADERS["sharded"] = ShardedAttributionGraph
