"""Shift invariance of RoPE attention under low precision (Wang et al. 2024).

RoPE attention depends only on relative positions, so moving every position m to m + Δ leaves
the attention patterns unchanged *in exact arithmetic*. Wang et al. ("When Precision Meets
Position: BFloat16 Breaks Down RoPE in Long-Context Training", 2024) measure the deviation

    D = Σ_{l,h} Σ_i Σ_j |A^{l,h}_{ij}(Δ₁) − A^{l,h}_{ij}(Δ₂)|

(summed over real query rows i and keys j; REFERENCES.md carries an extra row weight n_i whose
meaning is uncertain — we use n_i = 1 and also report D per (layer, head) and the mean per-row L1
distance) and find it ~0 in float32 but not in bfloat16, with the first token carrying a large
part of the error. The shift is applied by hooking each layer's ``attn.hook_cos``/``hook_sin``
with cos/sin recomputed at positions m + Δ exactly as HF computes them (float32 angles, cast to
the model dtype), so nothing else in the model changes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from interp.capture import StreamBatch, stream
from interp.results import Result
from interp.rope._common import (
    as_mask, batch_of, exposes_rotated, has_cos_sin, name_of, rope_model, rotation_hooks, shift_hooks,
)
from interp.types import Model

__all__ = ["ShiftInvarianceResult", "shift_invariance"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
           "float64": torch.float64}


@dataclass
class ShiftInvarianceResult(Result):
    """Deviation D between attention at offsets Δ₁ and Δ₂, per dtype.

    ``D[d]`` total; ``per_head[d, l, h]`` its split; ``row_l1[d]`` = D / (L·H·rows), the mean L1
    distance between attention rows; ``first_token_share[d]`` = share of D on key 0 (the first
    token: BOS when prepended).
    """

    model: str
    prepend_bos: bool
    n_prompts: int
    deltas: tuple[int, int]
    dtypes: list[str]
    unrotated_chunks: list[int]
    D: Float[Tensor, "dtype"]
    row_l1: Float[Tensor, "dtype"]
    first_token_share: Float[Tensor, "dtype"]
    per_head: Float[Tensor, "dtype layer head"]

    def plot(self) -> go.Figure:
        """Bars of D per layer for each dtype."""
        fig = go.Figure()
        for i, d in enumerate(self.dtypes):
            fig.add_bar(x=[f"L{l}" for l in range(self.per_head.shape[1])], y=self.per_head[i].sum(-1).numpy(),
                        name=f"{d} (first-token share {self.first_token_share[i]:.2f})")
        fig.update_layout(title=f"{self.model}: attention change when all positions shift "
                                f"{self.deltas[0]} → {self.deltas[1]}", xaxis_title="layer",
                          yaxis_title="D = Σ|A(Δ₁) − A(Δ₂)|", barmode="group", yaxis_type="log")
        return fig


def _as_dtype(model: Any, dtype: torch.dtype) -> Any:
    current = next(model.parameters()).dtype
    if current == dtype:
        return model
    return copy.deepcopy(model).to(dtype)


def shift_invariance(
    model: Model,
    prompts: Any = None,
    *,
    deltas: tuple[int, int] = (0, 1000),
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    unrotated: Any = None,
    prepend_bos: bool = True,
    batch_size: int = 8,
) -> ShiftInvarianceResult:
    """Measure D (Wang et al. 2024) for each dtype; models in other dtypes are deep copies.

    ``unrotated`` (chunk indices or bool mask): also remove rotation from those chunks (via
    :func:`interp.rope.band_ablation`'s ``"unrotate"`` hooks); with every chunk unrotated the
    attention no longer depends on position and D is exactly 0.
    """
    spec, rope = rope_model(model)
    for d in dtypes:
        if d not in _DTYPES:
            raise ValueError(f"unknown dtype {d!r}; choose from {sorted(_DTYPES)}")
    batch = batch_of(model, prompts, prepend_bos)
    removed = as_mask(rope, unrotated) if unrotated is not None else torch.zeros(rope.n_chunks, dtype=torch.bool)
    L, H = spec.n_layers, spec.n_heads
    exposed, cos_sin = exposes_rotated(model), has_cos_sin(model)
    Ds, rows, firsts, per = [], [], [], []
    n_rows = sum(batch.lengths)
    for dname in dtypes:
        m = _as_dtype(model, _DTYPES[dname])
        per_head = torch.zeros(L, H, dtype=torch.float64)
        first = torch.zeros((), dtype=torch.float64)
        store: dict[int, Tensor] = {}

        def make(delta: int, compare: bool):
            def hooks(sb: StreamBatch) -> list[Any]:
                toks, lengths = sb.tokens, sb.lengths
                valid = torch.arange(toks.shape[1])[None, :] < torch.tensor(lengths)[:, None]
                vq = valid[:, None, :, None].to(toks.device)

                def pat(a: Tensor, hook: Any) -> None:
                    nonlocal first
                    l = int(hook.name.split(".")[1])
                    a = a.detach().double() * vq
                    if not compare:
                        store[l] = a
                        return
                    diff = (a - store.pop(l)).abs()
                    per_head[l] += diff.sum((0, 2, 3)).cpu()
                    first = first + diff[..., 0].sum().cpu()

                if rope.pairing == "half" and cos_sin and exposed:
                    h = shift_hooks(spec, delta)
                    if removed.any():
                        h += rotation_hooks(spec, removed, "unrotate", position_offset=delta)
                else:  # re-rotate q/k at m + Δ (kept chunks only)
                    h = rotation_hooks(spec, removed, "unrotate", position_offset=delta, exposed=exposed)
                return h + [(f"blocks.{l}.attn.hook_pattern", pat) for l in range(L)]
            return hooks

        # interleave the two offsets per mini-batch so only one mini-batch of patterns is stored
        for start in range(0, len(batch), batch_size):
            sub = type(batch)(batch.tokens[start:start + batch_size], batch.attention_mask[start:start + batch_size],
                              batch.lengths[start:start + batch_size], [], batch.prepend_bos)
            stream(m, sub, make(deltas[0], False), batch_size=batch_size)
            stream(m, sub, make(deltas[1], True), batch_size=batch_size)
        D = float(per_head.sum())
        Ds.append(D)
        rows.append(D / (L * H * n_rows))
        firsts.append(float(first) / D if D > 0 else 0.0)
        per.append(per_head.float())
        if m is not model:
            del m
    return ShiftInvarianceResult(
        model=name_of(model), prepend_bos=batch.prepend_bos, n_prompts=len(batch), deltas=tuple(deltas),
        dtypes=list(dtypes), unrotated_chunks=removed.nonzero()[:, 0].tolist(), D=torch.tensor(Ds),
        row_l1=torch.tensor(rows), first_token_share=torch.tensor(firsts), per_head=torch.stack(per),
    )
