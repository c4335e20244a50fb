"""Cached activations of one run of :class:`circuits._forward.PatchableModel` (the ablation source).

Sender outputs and per-head q/k/v/z/pattern, with the ablation transforms (mean, zero) and
position re-indexing for counterfactuals of other lengths. Re-exported by ``circuits._forward``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["Activations"]


@dataclass
class Activations:
    """Sender outputs and per-head q/k/v/z/pattern of one run (the ablation source).

    ``q`` and ``k`` are post-rotary (Gemma: after q_norm/k_norm too), what enters
    :math:`q\\cdot k`. A batch of 1 broadcasts over any batch (mean and zero ablations).
    """

    senders: Float[Tensor, "batch pos sender d_model"]
    q: Float[Tensor, "batch layer pos head d_head"]
    k: Float[Tensor, "batch layer pos kv_head d_head"]
    v: Float[Tensor, "batch layer pos kv_head d_head"]
    z: Float[Tensor, "batch layer pos head d_head"]
    pattern: Float[Tensor, "batch layer head qpos kpos"]
    attention_mask: Int[Tensor, "batch pos"]

    @property
    def batch(self) -> int:
        return self.senders.shape[0]

    @property
    def n_pos(self) -> int:
        return self.senders.shape[1]

    def _map(self, fn: Any) -> Activations:
        return Activations(**{f.name: fn(f.name, getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str) -> Activations:
        return self._map(lambda _n, t: t.to(device))

    def detach(self) -> Activations:
        return self._map(lambda _n, t: t.detach())

    def select(self, index: slice | Tensor) -> Activations:
        """Examples ``index`` (a slice or index tensor) of the batch; a batch of 1 is kept."""
        if self.batch == 1:
            return self
        return self._map(lambda _n, t: t[index])

    def zeros_like(self) -> Activations:
        """Zero ablation: every sender output and every q/k/v zero (pattern kept for shape)."""
        return self._map(lambda n, t: t if n in ("attention_mask", "pattern") else torch.zeros_like(t))

    def mean(self) -> Activations:
        """Mean ablation: mean over examples at each position (padding excluded), batch of 1.

        Positions no example reaches get zeros.
        """
        m = self.attention_mask.to(self.senders.dtype)  # [b p]
        cnt = m.sum(0).clamp(min=1)

        def avg(name: str, t: Tensor) -> Tensor:
            if name == "attention_mask":
                return (self.attention_mask.sum(0, keepdim=True) > 0).to(t.dtype)
            if name == "pattern":
                return t.mean(0, keepdim=True)
            if name == "senders":
                w, c = m[:, :, None, None], rearrange(cnt, "pos -> 1 pos 1 1")
            else:  # [b layer pos n e]
                w, c = m[:, None, :, None, None], rearrange(cnt, "pos -> 1 1 pos 1 1")
            return (t * w).sum(0, keepdim=True) / c

        return self._map(avg)

    def align(self, position_map: Int[Tensor, "batch pos_new"]) -> Activations:
        """Re-index positions: entry ``[b, p]`` of the result comes from position
        ``position_map[b, p]`` of this run (e.g. counterfactual tokens of another length,
        aligned through a schema). Patterns are re-indexed on both axes."""
        b, p = position_map.shape
        if self.batch not in (1, b):
            raise ValueError(f"position_map has batch {b} but the activations have {self.batch}")
        pm = position_map.to(self.senders.device).long()
        if self.batch == 1 and b != 1:
            src = self._map(lambda _n, t: t.expand(b, *t.shape[1:]))
        else:
            src = self

        def g(name: str, t: Tensor) -> Tensor:
            if name == "attention_mask":
                return torch.gather(t, 1, pm)
            if name == "senders":
                idx = pm[:, :, None, None].expand(b, p, *t.shape[2:])
                return torch.gather(t, 1, idx)
            if name == "pattern":
                if t.shape[-1] == 0:  # not recorded (record_pattern=False)
                    return t.new_zeros(b, *t.shape[1:3], 0, 0)
                i1 = pm[:, None, None, :, None].expand(b, *t.shape[1:3], p, t.shape[4])
                t1 = torch.gather(t, 3, i1)
                i2 = pm[:, None, None, None, :].expand(b, *t.shape[1:3], p, p)
                return torch.gather(t1, 4, i2)
            idx = pm[:, None, :, None, None].expand(b, t.shape[1], p, *t.shape[3:])
            return torch.gather(t, 2, idx)

        return src._map(g)
