"""Circuit masks of a batch stored sparsely, and the patched forward's sparse corrections.

The dense patched forward (:meth:`circuits._forward.PatchableModel.forward` with ``keep`` /
``keep_cross``) holds ``keep [b T S R]`` and ``keep_cross [b L H 3 T T]`` and corrects every
receiver over all upstream senders:
:math:`x_r[t] = \\mathrm{resid}[t] - \\sum_{s} (1-\\mathrm{keep}[t,s,r])\\,\\delta_s[t]`,
:math:`\\delta_s = z_s - z^*_s` (Haklay et al. 2025, arXiv:2502.04577; MIB, Mueller et al. 2025,
arXiv:2504.13151). :class:`SparseMasks` keeps the *abstract* circuit (``same_pos [P S R]``,
``cross [L H 3 P P]``) plus each token's abstract position, and per receiver uses whichever of
the two equal forms has fewer terms:

.. math:: x_r[t] = \\mathrm{resid}[t] - \\sum_{s \\notin C_r} \\delta_s[t]
          = \\underbrace{\\mathrm{resid}[t] - \\sum_{s} \\delta_s[t]}_{\\text{ablated residual}}
          + \\sum_{s \\in C_r} \\delta_s[t]

(kept edges ``C_r`` for a small circuit, ablated ones for a large one); the ablated residual is
one running sum. Tokens that keep every edge (BOS unless ``include_bos``, padding) read the
current residual. Only the senders some correction needs have their ``δ`` stored.

Crossing edges: for each head and kind (q, k, v) the abstract mask restricted to the position
pairs that occur in the batch (causal pairs of non-protected tokens) is mostly constant (all
kept or all ablated — always at granularity ``"none"``); such heads take their query / key /
value from the current or the ablated run with one score and one value product, and only the
rows and columns of protected tokens are recomputed with the current q/k/v. Heads whose mask
varies over pairs are computed block-wise when the batch's tokens form few runs of one abstract
position shared by every example (span circuits): for each (query run, key run) block the q, k
and v sources of every head are fixed by the abstract mask at the runs' positions, so each block
takes one score product and one value product with the chosen sources (the same work as one
unpatched attention; blocks whose keys all follow their queries are skipped). Without a
soft-cap and when no pattern is asked for, each query run (in chunks of ``_QCHUNK`` rows) is one
fused ``F.scaled_dot_product_attention`` call over the keys before its end, its key and value
columns assembled from those blocks (a head whose q source varies over key runs, or that reads
the ablated q while protected key columns need the current one, scores ``[q ‖ q*]`` against
``[k·m ‖ k·(1−m)]``: exactly the chosen ``q·k``). Otherwise (e.g.
examples whose spans sit at different tokens, or position granularity at long context) those
heads use the dense four-combination formula, for those heads only, with the masks expanded to
tokens one layer (and one head set) at a time, never all at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["SparseMasks"]

_BUDGET = 1 << 23  # elements of the gathered [tokens senders d] block of one same-position product
_QCHUNK = 256  # query rows per fused attention call (its keys end with the chunk: causal work only)
_MAX_RUNS = 32  # block-wise crossing path when the tokens form at most this many position runs


def _pick(m: Tensor, cur: Tensor, abl: Tensor) -> Tensor:
    """``cur`` where ``m`` (broadcast over heads: ``[H]`` or ``[... H 1]``) else ``abl``."""
    if m.dim() == 1:
        if bool(m.all()):
            return cur
        if not bool(m.any()):
            return abl
        m = m[None, None, :, None]
    return torch.where(m, cur, abl)


@dataclass
class SparseMasks:
    """Concrete circuit masks of one batch, stored as the abstract circuit and token positions.

    ``keep[b, t, s, r] = same_pos[pos_index[b, t], s, r] or full[b, t]`` and
    ``keep_cross[b, l, h, k, t, t'] = cross[l, h, k, pos_index[b, t], pos_index[b, t']]`` or
    ``full[b, t]`` or ``full[b, t']`` — exactly :func:`circuits.faithfulness.expand_masks`
    (``full`` = padding or protected); neither is ever materialised for the whole model. The
    abstract crossing mask ``cross`` is held sparsely: the sorted rows ``cross_index [n 5]``
    (layer, head, kind, qpos, kpos) of its kept edges, ``cross_shape`` its dense shape.
    """

    same_pos: Bool[Tensor, "pos sender receiver"]
    cross_index: Int[Tensor, "edge 5"]
    cross_shape: tuple[int, int, int, int, int]
    pos_index: Int[Tensor, "batch tok"]
    full: Bool[Tensor, "batch tok"]
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    need_pattern: bool = False  # attend must return the pattern (else the fused path returns None)

    @classmethod
    def build(cls, same_pos: Bool[Tensor, "pos sender receiver"],
              cross: Bool[Tensor, "layer head kind qpos kpos"] | Int[Tensor, "edge 5"],
              pos_index: Int[Tensor, "batch tok"], protect: Bool[Tensor, "batch tok"] | None = None,
              *, cross_shape: tuple[int, ...] | None = None) -> "SparseMasks":
        """``cross``: the dense abstract crossing mask, or the sorted unique rows ``[n 5]`` of its
        kept edges with ``cross_shape`` (as :attr:`circuits.circuit.Circuit.cross_index`)."""
        full = pos_index < 0
        if protect is not None:
            full = full | protect.to(full.device)
        if cross.dim() == 5:
            shape = tuple(int(x) for x in cross.shape)
            index = cross.bool().nonzero()
        else:
            if cross_shape is None:
                raise ValueError("a sparse crossing mask [n 5] needs cross_shape=(layer, head, 3, P, P)")
            shape, index = tuple(int(x) for x in cross_shape), cross.long().reshape(-1, 5)
        return cls(same_pos.bool(), index, shape, pos_index.long(), full)  # type: ignore[arg-type]

    @property
    def n_kept(self) -> int:
        """Abstract edges kept (same-position + crossing)."""
        return int(torch.count_nonzero(self.same_pos)) + int(self.cross_index.shape[0])

    def _layer_edges(self, layer: int) -> Tensor:
        """Rows of ``cross_index`` of one layer (``[n 5]``; the index is sorted by layer)."""
        if "layer_starts" not in self._cache:
            L = self.cross_shape[0]
            col = self.cross_index[:, 0].contiguous()
            self._cache["layer_starts"] = torch.searchsorted(col, torch.arange(L + 1)).tolist()
        st = self._cache["layer_starts"]
        return self.cross_index[st[layer]: st[layer + 1]]

    # ------------------------------------------------------------------ same-position edges
    def _tokens_by_position(self) -> tuple[Tensor, Tensor, Tensor]:
        """Non-full tokens (flat ``b·T + t``) sorted by abstract position, with per-position
        start offsets and counts ``[P]``."""
        if "tok" not in self._cache:
            P = self.same_pos.shape[0]
            pi = self.pos_index.reshape(-1)
            ok = ~self.full.reshape(-1)
            flat = torch.nonzero(ok).flatten()
            p_of = pi[flat]
            order = torch.argsort(p_of, stable=True)
            flat, p_of = flat[order], p_of[order]
            counts = torch.bincount(p_of, minlength=P)
            starts = torch.cumsum(counts, 0) - counts
            self._cache["tok"] = (flat, starts, counts)
        return self._cache["tok"]

    def _group(self, r0: int, r1: int, n_up: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Abstract terms of receivers ``r0:r1`` with senders ``< n_up``: ``(kept_mode [Rl],
        p, s, r_local)`` (cached)."""
        key = ("g", r0, r1, n_up)
        if key not in self._cache:
            _, _, counts = self._tokens_by_position()
            sp = self.same_pos[:, :n_up, r0:r1]  # [P s Rl]
            w = counts.to(torch.float64)  # tokens per abstract position
            kept_w = einsum(sp.to(torch.float64), w, "abs sender receiver, abs -> receiver")
            total = float(w.sum()) * n_up
            kept_mode = kept_w <= total / 2
            sel = torch.where(kept_mode[None, None, :], sp, ~sp)
            p, s, r = sel.nonzero(as_tuple=True)
            self._cache[key] = (kept_mode, p, s, r)
        return self._cache[key]

    def senders_needed(self, groups: list[tuple[int, int, int]], n_senders: int) -> Tensor:
        """Slot of every sender whose δ some correction of ``groups`` needs (``-1``: none)."""
        used = torch.zeros(n_senders, dtype=torch.bool)
        for r0, r1, n_up in groups:
            _, _, s, _ = self._group(r0, r1, n_up)
            used[s] = True
        slot = torch.full((n_senders,), -1, dtype=torch.long)
        slot[used] = torch.arange(int(used.sum()))
        return slot

    @staticmethod
    def store(dstore: Tensor, slot: Tensor, s0: int, deltas: Tensor) -> None:
        """Keep ``δ`` of senders ``s0 : s0 + n`` (``deltas [b T n d]``) that have a slot."""
        sl = slot[s0: s0 + deltas.shape[2]]
        m = sl >= 0
        if bool(m.any()):
            dstore[:, :, sl[m].to(dstore.device)] = deltas[:, :, m.to(deltas.device)]

    def _group_products(self, r0: int, r1: int, n_up: int) -> list[tuple[int, Tensor, Tensor, tuple[int, int] | None]]:
        """Same-position terms of receivers ``r0:r1`` as one small product per abstract position
        ``p``: ``(p, senders [u], W [u Rl], run)`` with ``W[i, r] = ±1`` when sender ``i``'s
        ``δ`` enters receiver ``r`` (+1 kept edge in kept mode, −1 ablated edge) and ``run`` the
        flat token range ``(start, stop)`` when ``p``'s tokens are consecutive (cached)."""
        key = ("gp", r0, r1, n_up)
        if key not in self._cache:
            kept_mode, p, s, r = self._group(r0, r1, n_up)
            flat, starts, counts = self._tokens_by_position()
            sign = torch.where(kept_mode, 1.0, -1.0).to(torch.float64)
            out = []
            for pp in torch.unique(p).tolist():
                n = int(counts[pp])
                if n == 0:
                    continue
                m = p == pp
                snd, inv = torch.unique(s[m], return_inverse=True)
                W = torch.zeros(len(snd), r1 - r0, dtype=torch.float64)
                W[inv, r[m]] = sign[r[m]]  # (s, r) pairs are distinct at one position
                tok = flat[int(starts[pp]): int(starts[pp]) + n]
                t0 = int(tok[0])
                run = (t0, t0 + n) if int(tok[-1]) - t0 + 1 == n else None  # sorted: consecutive
                out.append((pp, snd, W, run))
            self._cache[key] = out
        return self._cache[key]

    def receiver_inputs(
        self, resid: Float[Tensor, "batch tok d_model"], dcum: Float[Tensor, "batch tok d_model"],
        delta: Float[Tensor, "batch tok slot d_model"], slot: Int[Tensor, " sender"],
        r0: int, r1: int, n_up: int,
    ) -> Float[Tensor, "batch tok recv d_model"]:
        """Inputs of receivers ``r0:r1`` (senders ``< n_up`` upstream): ``resid`` is the current
        residual they read, ``dcum = Σ_{s < n_up} δ_s`` (so ``resid − dcum`` is the ablated
        residual) and ``delta`` the stored ``δ`` of the needed senders (``slot``).

        The edges of one abstract position ``p`` are the same at each of its tokens, so its
        correction is one product ``x[t, r] += Σ_i δ_{s_i}[t] · W[i, r]`` over ``p``'s tokens
        (``W`` of :meth:`_group_products`)."""
        b, T, d = resid.shape
        Rl = r1 - r0
        dev = resid.device
        kept_mode, _, _, _ = self._group(r0, r1, n_up)
        use_abl = kept_mode.to(dev)[None, None, :] & ~self.full.to(dev)[:, :, None]  # [b T Rl]
        x = torch.where(use_abl[..., None], (resid - dcum)[:, :, None], resid[:, :, None])  # [b T Rl d]
        groups = self._group_products(r0, r1, n_up)
        if groups:
            xf = x.view(b * T, Rl, d)
            df = delta.reshape(b * T, delta.shape[2], d)
            flat, starts, counts = self._tokens_by_position()
            for pp, snd, W, run in groups:
                sl = slot[snd].to(dev)
                Wd = W.to(dev, x.dtype)
                step = max(1, _BUDGET // (len(sl) * d))
                if run is not None:
                    for t0 in range(run[0], run[1], step):
                        t1 = min(run[1], t0 + step)
                        xf[t0:t1] += einsum(df[t0:t1, sl], Wd, "tok slot d_model, slot recv -> tok recv d_model")
                else:
                    tok = flat[int(starts[pp]): int(starts[pp]) + int(counts[pp])].to(dev)
                    for i in range(0, len(tok), step):
                        tk = tok[i: i + step]
                        xf.index_add_(0, tk, einsum(df[tk[:, None], sl[None, :]], Wd,
                                                    "tok slot d_model, slot recv -> tok recv d_model"))
        return x

    # ------------------------------------------------------------------ crossing edges
    def _pair_occurs(self) -> Tensor:
        """``[P P]``: abstract pair ``(p, p')`` has a causal token pair ``t' ≤ t`` of non-full
        tokens with ``pos_index`` ``p`` at ``t`` and ``p'`` at ``t'`` in some example."""
        if "occ" not in self._cache:
            P = self.same_pos.shape[0]
            b, T = self.pos_index.shape
            ok = ~self.full
            pi = torch.where(ok, self.pos_index, P)  # P: a dump slot
            t = torch.arange(T).expand(b, T)
            big = torch.full((b, P + 1), T, dtype=torch.long)
            first = big.scatter_reduce(1, pi, t, "amin", include_self=True)[:, :P]
            last = torch.full((b, P + 1), -1, dtype=torch.long).scatter_reduce(1, pi, t, "amax",
                                                                                include_self=True)[:, :P]
            occ = (first[:, None, :] <= last[:, :, None]) & (last[:, :, None] >= 0) & (first[:, None, :] < T)
            self._cache["occ"] = occ.any(0)
        return self._cache["occ"]

    def _head_status(self, layer: int) -> Tensor:
        """``[H 3]`` int: 1 = every occurring pair kept, 0 = every one ablated, −1 = mixed."""
        occ = self._pair_occurs()
        H = self.cross_shape[1]
        n = int(occ.sum())
        if n == 0:
            return torch.ones(H, 3, dtype=torch.long)
        e = self._layer_edges(layer)
        hit = occ[e[:, 3], e[:, 4]]
        kept = torch.bincount(e[hit, 1] * 3 + e[hit, 2], minlength=H * 3).reshape(H, 3)
        return torch.where(kept == n, 1, torch.where(kept == 0, 0, -1))

    def _concrete(self, layer: int, heads: Tensor, kind: int) -> Tensor:
        """Concrete ``[b n q k]`` crossing mask of ``heads`` (full rows/columns kept)."""
        pi = self.pos_index.clamp(min=0)
        H, P = self.cross_shape[1], self.cross_shape[-1]
        n, (bsz, T) = len(heads), pi.shape
        slot = torch.full((H,), -1, dtype=torch.long)
        slot[heads.long()] = torch.arange(n)
        e = self._layer_edges(layer)
        e = e[(e[:, 2] == kind) & (slot[e[:, 1]] >= 0)]
        cr = torch.zeros(n, P, P, dtype=torch.bool)  # these heads' abstract masks, one layer
        cr[slot[e[:, 1]], e[:, 3], e[:, 4]] = True
        rows = cr[:, pi]  # [n b q P]: one gather per query, then one per key
        m = rearrange(torch.gather(rows, 3, pi[None, :, None, :].expand(n, bsz, T, T)),
                      "n b query key -> b n query key")
        f = self.full
        return m | f[:, None, :, None] | f[:, None, None, :]

    def _abstract(self, layer: int) -> Bool[Tensor, "head kind qpos kpos"]:
        """Abstract crossing mask ``[H 3 P P]`` of one layer (built once from its sparse rows)."""
        key = ("abstract", layer)
        if key not in self._cache:
            _, H, K, P, P2 = self.cross_shape
            e = self._layer_edges(layer)
            cr = torch.zeros(H, K, P, P2, dtype=torch.bool)
            cr[e[:, 1], e[:, 2], e[:, 3], e[:, 4]] = True
            self._cache[key] = cr
        return self._cache[key]

    def _runs(self) -> list[tuple[int, int, int]] | None:
        """The token axis as runs ``(start, stop, p)`` of consecutive tokens with abstract position
        ``p`` in every example of the batch (a token that is full in every example joins the run
        before it, or the first run), or ``None`` when the examples disagree at some token, every
        token is full, or there are more than ``_MAX_RUNS`` runs (cached)."""
        if "runs" not in self._cache:
            pi, full = self.pos_index, self.full
            T = pi.shape[1]
            some = (~full).any(0)  # [T]
            hi = torch.where(full, -1, pi).amax(0)
            lo = torch.where(full, torch.iinfo(torch.long).max, pi).amin(0)
            runs: list[tuple[int, int, int]] | None = None
            if bool(some.any()) and not bool((some & (hi != lo)).any()):
                p = [int(x) if ok else None for x, ok in zip(hi.tolist(), some.tolist())]
                first = next(x for x in p if x is not None)
                runs, cur = [], first
                for t in range(T):
                    cur = cur if p[t] is None else p[t]
                    if runs and runs[-1][2] == cur:
                        runs[-1] = (runs[-1][0], t + 1, cur)
                    else:
                        runs.append((t, t + 1, cur))
                if len(runs) > _MAX_RUNS:
                    runs = None
            self._cache["runs"] = runs
        return self._cache["runs"]

    def _block_scores(self, layer: int, runs: list[tuple[int, int, int]], q: Tensor, qa: Tensor,
                      kh: Tensor, kah: Tensor) -> Tensor:
        """Scores ``[b H T T]`` with each (query run, key run) block's q and k source from the
        abstract mask at the runs' positions: one product per causal block (blocks with every key
        after every query are left at 0; the causal mask removes them). Rows and columns of full
        tokens are not yet right (the caller recomputes them)."""
        b, T, H, _ = q.shape
        ab = self._abstract(layer).to(q.device)  # [H 3 P P]
        scores = q.new_zeros(b, H, T, T)
        for a0, a1, pq in runs:
            for c0, c1, pk in runs:
                if c0 >= a1:  # every key after every query
                    break
                mq, mk = ab[:, 0, pq, pk], ab[:, 1, pq, pk]  # [H]
                qs = _pick(mq, q[:, a0:a1], qa[:, a0:a1])
                ks = _pick(mk, kh[:, c0:c1], kah[:, c0:c1])
                scores[:, :, a0:a1, c0:c1] = einsum(qs, ks, "b query head e, b key head e -> b head query key")
        return scores

    def _block_values(self, layer: int, runs: list[tuple[int, int, int]], A: Tensor, vh: Tensor,
                      vah: Tensor) -> Tensor:
        """``z [b T H e]`` with each block's v source from the abstract mask (full key columns read
        the current v; rows of full queries are not yet right)."""
        b, H, T, _ = A.shape
        ab = self._abstract(layer).to(A.device)
        full = self.full.to(A.device)
        z = vh.new_zeros(b, T, H, vh.shape[-1])
        has_full = [bool(full[:, c0:c1].any()) for c0, c1, _ in runs]
        for a0, a1, pq in runs:
            for (c0, c1, pk), hf in zip(runs, has_full):
                if c0 >= a1:
                    break
                mv = ab[:, 2, pq, pk]  # [H]
                if hf:  # full key columns: current v
                    mv = mv[None, None, :, None] | full[:, c0:c1, None, None]  # [b key H 1]
                vs = _pick(mv, vh[:, c0:c1], vah[:, c0:c1])
                z[:, a0:a1] += einsum(A[:, :, a0:a1, c0:c1], vs, "b head query key, b key head e -> b query head e")
        return z

    def _attend_fused(self, pm: Any, layer: int, runs: list[tuple[int, int, int]], q: Tensor, qa: Tensor,
                      kh: Tensor, kah: Tensor, vh: Tensor, vah: Tensor, allowed: Tensor) -> Tensor:
        """``z [b T H e]`` of one layer by fused attention (``F.scaled_dot_product_attention``,
        no pattern materialised), one call per query run over the keys before its end.

        Within a (query run, key run) block every head's q, k and v sources are fixed by the
        abstract mask. A head whose query run reads one q source everywhere takes
        ``softmax(scale · q_s k_s^T) v_s`` directly; one that needs both q's (its q mask varies
        over key runs, or it reads the ablated q while full key columns need the current one)
        scores ``[q ‖ q*] · [k_s·m ‖ k_s·(1−m)]`` (``m``: the block keeps q), which is
        ``q_s · k_s`` exactly (the other half multiplies zeros). Full key columns read the
        current q, k and v; full query rows are recomputed explicitly by the caller."""
        b, T, H, e = q.shape
        dev = q.device
        ab = self._abstract(layer).to(dev)  # [H 3 P P]
        full = self.full.to(dev)
        z = vh.new_empty(b, T, H, vh.shape[-1])
        has_full = [bool(full[:, c0:c1].any()) for c0, c1, _ in runs]
        for a0, a1, pq in runs:
            js = [j for j, (c0, _, _) in enumerate(runs) if c0 < a1]
            mq = torch.stack([ab[:, 0, pq, runs[j][2]] for j in js], 1)  # [H J]
            cur_any = mq.any(1) | any(has_full[j] for j in js)  # head needs the current q
            dbl = cur_any & (~mq).any(1)  # head needs both
            kc, ka_, vs = [], [], []
            for j in js:
                c0, c1, pk = runs[j]
                c1 = min(c1, a1)
                ks = _pick(ab[:, 1, pq, pk], kh[:, c0:c1], kah[:, c0:c1])  # [b n H e]
                vv = _pick(ab[:, 2, pq, pk], vh[:, c0:c1], vah[:, c0:c1])
                cur = ab[:, 0, pq, pk][None, None, :, None]
                if has_full[j]:  # full key columns: current q, k and v
                    fc = full[:, c0:c1, None, None]
                    ks = torch.where(fc, kh[:, c0:c1], ks)
                    vv = torch.where(fc, vh[:, c0:c1], vv)
                    cur = cur | fc
                kc.append(torch.where(cur, ks, 0.0))
                ka_.append(torch.where(cur, 0.0, ks))
                vs.append(vv)
            Kc, Ka, V = torch.cat(kc, 1), torch.cat(ka_, 1), torch.cat(vs, 1)  # [b a1 H e]
            for heads, two in ((torch.nonzero(~dbl).flatten(), False), (torch.nonzero(dbl).flatten(), True)):
                if not len(heads):
                    continue
                hs = heads if len(heads) < H else slice(None)
                if two:
                    Q = torch.cat((q[:, a0:a1, hs], qa[:, a0:a1, hs]), -1)
                    K = torch.cat((Kc[:, :, hs], Ka[:, :, hs]), -1)
                else:
                    c = cur_any[heads][None, None, :, None]
                    Q = torch.where(c, q[:, a0:a1, hs], qa[:, a0:a1, hs])
                    K = torch.where(c, Kc[:, :, hs], Ka[:, :, hs])
                Q, K = rearrange(Q, "b query head e -> b head query e"), rearrange(K, "b key head e -> b head key e")
                Vh = rearrange(V[:, :, hs], "b key head e -> b head key e")
                for t0 in range(a0, a1, _QCHUNK):  # query chunks: keys up to the chunk's end only
                    t1 = min(a1, t0 + _QCHUNK)
                    zz = F.scaled_dot_product_attention(Q[:, :, t0 - a0: t1 - a0], K[:, :, :t1], Vh[:, :, :t1],
                                                        attn_mask=allowed[:, :, t0:t1, :t1], scale=pm.scale)
                    z[:, t0:t1, hs] = rearrange(zz, "b head query e -> b query head e")
        return z

    def _token_of(self) -> Tensor | None:
        """``[b P]``: the one non-full token of abstract position p in example b (−1: none), or
        ``None`` when some example has several tokens at one position (cached)."""
        if "tok_of" not in self._cache:
            P = self.same_pos.shape[0]
            b, T = self.pos_index.shape
            ok = ~self.full
            pi = torch.where(ok, self.pos_index, P)
            cnt = torch.zeros(b, P + 1, dtype=torch.long).scatter_add_(1, pi, torch.ones_like(pi))
            tok = None
            if not bool((cnt[:, :P] > 1).any()):
                t = torch.arange(T).expand(b, T)
                tok = torch.full((b, P + 1), -1, dtype=torch.long).scatter_(1, pi, t)[:, :P]
                tok = torch.where(cnt[:, :P] > 0, tok, -1)
            self._cache["tok_of"] = tok
        return self._cache["tok_of"]

    def _kept_pairs(self, layer: int, st: Tensor) -> dict[int, Tensor] | None:
        """Concrete kept crossing pairs of the heads whose mask is mixed, as rows
        ``(b, head, query, key)`` per kind (0 q, 1 k, 2 v) — causal pairs of non-full tokens —
        when every abstract position has at most one token per example (position granularity)
        and the pairs are few (≤ 1/16 of the mixed heads' concrete pairs); else ``None``."""
        key = ("pairs", layer)
        if key in self._cache:
            return self._cache[key]
        self._cache[key] = out = self._find_kept_pairs(layer, st)
        return out

    def _find_kept_pairs(self, layer: int, st: Tensor) -> dict[int, Tensor] | None:
        tok = self._token_of()
        if tok is None:
            return None
        b, T = self.pos_index.shape
        e = self._layer_edges(layer)
        e = e[st[e[:, 1], e[:, 2]].cpu() < 0]  # edges of mixed (head, kind)
        n_mixed = int((st < 0).sum())
        if n_mixed == 0 or len(e) * b > max(1, n_mixed * b * T * (T + 1) // 32):
            return None
        tq, tk = tok[:, e[:, 3]], tok[:, e[:, 4]]  # [b n]
        ok = (tq >= 0) & (tk >= 0) & (tk <= tq)
        bi, ei = ok.nonzero(as_tuple=True)
        rows = torch.stack([bi, e[ei, 1], tq[bi, ei], tk[bi, ei]], dim=1)
        kind = e[ei, 2]
        return {c: rows[kind == c] for c in range(3)}

    def _pair_scores(self, layer: int, st: Tensor, rows: Tensor, scores: Tensor, q: Tensor, qa: Tensor,
                     kh: Tensor, kah: Tensor) -> None:
        """Overwrite ``scores[b, h, t, t']`` (raw q·k) at the kept pairs ``rows (b, h, t, t')`` of
        mixed heads with the product of their own sources: the current query where the q edge
        is kept (or the head keeps every q edge), the ablated one otherwise; the same for k."""
        dev = scores.device
        bb, hh, tq, tk = rows.unbind(1)
        e = self._layer_edges(layer)
        P = self.same_pos.shape[0]
        pi = self.pos_index.to(dev)
        for c in (0, 1):
            ec = e[e[:, 2] == c]
            flat = ((ec[:, 1] * P + ec[:, 3]) * P + ec[:, 4]).to(dev)
            look = ((hh * P + pi[bb, tq]) * P + pi[bb, tk])
            kept = torch.isin(look, flat) | (st[hh, c] == 1)
            if c == 0:
                qs = torch.where(kept[:, None], q[bb, tq, hh], qa[bb, tq, hh])
            else:
                ks = torch.where(kept[:, None], kh[bb, tk, hh], kah[bb, tk, hh])
        scores[bb, hh, tq, tk] = (qs * ks).sum(-1)

    def attend(self, pm: Any, layer: int, q: Tensor, k: Tensor, v: Tensor, qa: Tensor, ka: Tensor,
               va: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor | None]:
        """Attention of one layer with its crossing edges patched. ``q [b T H e]``, ``k``/``v``
        ``[b T G e]`` (current run), ``qa``/``ka``/``va`` the ablated ones (same shapes),
        ``allowed [b 1 T T]``. Returns ``z [b T H e]`` and the pattern ``[b H T T]`` — ``None``
        on the fused path (token runs shared by the batch, no soft-cap, ``need_pattern`` unset)."""
        b, T, H, e = q.shape
        G = k.shape[2]
        rep = H // G
        dev = q.device
        hk = torch.arange(H, device=dev) // rep
        kh, vh, kah, vah = k[:, :, hk], v[:, :, hk], ka[:, :, hk], va[:, :, hk]  # per query head
        st = self._head_status(layer).to(dev)  # [H 3]
        full = self.full.to(dev)
        QK = "b query head e, b key head e -> b head query key"  # scores
        PV = "b head query key, b key head e -> b query head e"  # pattern-weighted values
        sel = lambda c, cur, abl: torch.where((c == 1)[None, None, :, None], cur, abl)  # noqa: E731
        if pm.attn_softcap is None and not self.need_pattern and self._runs() is not None:
            z = self._attend_fused(pm, layer, self._runs(), q, qa, kh, kah, vh, vah, allowed)
            rows = torch.nonzero(full.any(0)).flatten()
            if len(rows):  # full query rows: every edge kept (current q, k, v)
                s_r = pm.score(einsum(q[:, rows], kh, QK)).masked_fill(~allowed[:, :, rows], float("-inf"))
                zr = einsum(torch.softmax(s_r, dim=-1), vh, PV)
                z[:, rows] = torch.where(full[:, rows][:, :, None, None], zr, z[:, rows])
            return z, None
        runs = self._runs() if bool((st < 0).any()) else None
        kst, vst = (rearrange(st[:, i], "(kv_head rep) -> kv_head rep", rep=rep) for i in (1, 2))
        if runs is not None and bool((st[:, :2] < 0).any()):  # mixed q/k masks: block-wise
            scores = self._block_scores(layer, runs, q, qa, kh, kah)
        else:
            qs = sel(st[:, 0], q, qa)
            if bool((kst == kst[:, :1]).all()):  # one key source per KV group: the forward's grouped product
                ks = sel(kst[:, 0], k, ka)
                qg = rearrange(qs, "b query (kv_head rep) e -> b query kv_head rep e", rep=rep)
                scores = rearrange(einsum(qg, ks, "b query kv_head rep e, b key kv_head e -> b kv_head rep query key"),
                                   "b kv_head rep query key -> b (kv_head rep) query key")
            else:
                scores = einsum(qs, sel(st[:, 1], kh, kah), QK)
            def sc(a: Tensor, c: Tensor) -> Tensor:
                return einsum(a, c, QK)

            # heads whose q or k mask varies over position pairs: only the products they use —
            # or, when their kept pairs are few (position granularity), each kept pair's score
            # with its own q and k source over the ablated-source product computed above
            pairs = self._kept_pairs(layer, st) if bool((st < 0).any()) else None
            if pairs is not None:
                qk_rows = torch.cat([pairs[0], pairs[1]]).unique(dim=0).to(dev)
                if len(qk_rows):
                    self._pair_scores(layer, st, qk_rows, scores, q, qa, kh, kah)
            both = torch.nonzero((st[:, 0] < 0) & (st[:, 1] < 0)).flatten()
            q_only = torch.nonzero((st[:, 0] < 0) & (st[:, 1] >= 0)).flatten()
            k_only = torch.nonzero((st[:, 0] >= 0) & (st[:, 1] < 0)).flatten()
            if pairs is not None:  # done pair by pair
                both = q_only = k_only = both[:0]
            if len(both):
                Mq = self._concrete(layer, both.cpu(), 0).to(dev)
                Mk = self._concrete(layer, both.cpu(), 1).to(dev)
                qm, qam, km_, kam = q[:, :, both], qa[:, :, both], kh[:, :, both], kah[:, :, both]
                scores[:, both] = torch.where(Mq, torch.where(Mk, sc(qm, km_), sc(qm, kam)),
                                              torch.where(Mk, sc(qam, km_), sc(qam, kam)))
            if len(q_only):  # the key source is constant: ks
                Mq = self._concrete(layer, q_only.cpu(), 0).to(dev)
                kk = sel(st[:, 1], kh, kah)[:, :, q_only]
                scores[:, q_only] = torch.where(Mq, sc(q[:, :, q_only], kk), sc(qa[:, :, q_only], kk))
            if len(k_only):  # the query source is constant: qs
                Mk = self._concrete(layer, k_only.cpu(), 1).to(dev)
                qq = qs[:, :, k_only]
                scores[:, k_only] = torch.where(Mk, sc(qq, kh[:, :, k_only]), sc(qq, kah[:, :, k_only]))
        # protected / padding rows and columns keep every edge: current q and k
        rows = torch.nonzero(full.any(0)).flatten()
        if len(rows):
            fr = full[:, rows]  # [b n]
            s_c = einsum(q, kh[:, rows], QK)  # columns
            scores[:, :, :, rows] = torch.where(fr[:, None, None, :], s_c, scores[:, :, :, rows])
            s_r = einsum(q[:, rows], kh, QK)  # rows
            scores[:, :, rows, :] = torch.where(fr[:, None, :, None], s_r, scores[:, :, rows, :])
        scores = pm.score(scores).masked_fill(~allowed, float("-inf"))
        A = torch.softmax(scores, dim=-1)
        if runs is not None and bool((st[:, 2] < 0).any()):  # mixed v masks: block-wise
            z = self._block_values(layer, runs, A, vh, vah)
            if len(rows):  # full query rows: all current
                zr = einsum(A[:, :, rows], vh, PV)
                z[:, rows] = torch.where(full[:, rows][:, :, None, None], zr, z[:, rows])
            return z, A
        if bool((vst == vst[:, :1]).all()):
            Ag = rearrange(A, "b (kv_head rep) query key -> b kv_head rep query key", rep=rep)
            z = rearrange(einsum(Ag, sel(vst[:, 0], v, va),
                                 "b kv_head rep query key, b key kv_head e -> b query kv_head rep e"),
                          "b query kv_head rep e -> b query (kv_head rep) e")
        else:
            z = einsum(A, sel(st[:, 2], vh, vah), PV)
        if len(rows):
            # full key columns read the current v (heads that read the ablated one)
            ab = (st[:, 2] != 1)
            if bool(ab.any()):
                fr = full[:, rows].to(A.dtype)  # [b n]
                dv = (vh - vah)[:, rows] * ab.to(A.dtype)[None, None, :, None]  # [b n H e]
                z = z + einsum(A[:, :, :, rows], fr, dv, "b head query row, b row, b row head e -> b query head e")
            zr = einsum(A[:, :, rows], vh, PV)  # full query rows: all current
            z[:, rows] = torch.where(full[:, rows][:, :, None, None], zr, z[:, rows])
        vmix = torch.nonzero(st[:, 2] < 0).flatten()
        pairs_v = self._kept_pairs(layer, st) if len(vmix) else None
        if pairs_v is not None:  # kept v pairs over the ablated value: A_tt' (v − v*)_t'
            r = pairs_v[2].to(dev)
            if len(r):
                bb, hh, tq, tk = r.unbind(1)
                add = A[bb, hh, tq, tk][:, None] * (vh - vah)[bb, tk, hh]
                z.index_put_((bb, tq, hh), add, accumulate=True)
            vmix = vmix[:0]
        if len(vmix):
            Mv = self._concrete(layer, vmix.cpu(), 2).to(dev).to(A.dtype)
            Am = A[:, vmix]
            z[:, :, vmix] = (einsum(Am * Mv, vh[:, :, vmix], PV)
                             + einsum(Am * (1 - Mv), vah[:, :, vmix], PV))
        return z, A
