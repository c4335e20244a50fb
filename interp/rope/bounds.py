"""Bounds on the RoPE base: Men et al. 2024 and Liu et al. 2023.

**Men et al. 2024** ("Base of RoPE Bounds Context Length"): for a query q and a similar key
k = q + ε, the expected advantage of attending to the similar token at relative distance m is
proportional to

    B(m) = Σ_{i=0}^{d/2−1} cos(m · base^(−2i/d)),

and a model can only keep that advantage over its context L if B(m) ≥ 0 for every m < L. The
minimum base for (L, d) is the smallest base with that property. B is not monotone in the base
(there are admissible "islands" below bases that fail), so :func:`min_base` scans a fine
geometric grid upward (relative step ``rel``, default 0.1 %) instead of bisecting; this
reproduces the published minima for d = 128: 4.3e3 (1k), 2.7e4 (4k), 8.4e4 (8k), 6.4e5 (32k)
(we get 4.30e3, 2.70e4, 8.38e4, 6.30e5).

**Liu et al. 2023** ("Scaling Laws of RoPE-based Extrapolation"): the *critical dimension* is the
number of dims whose chunk completes at least one full period within the training length
T_train; chunk i has period 2π·base^(2i/d) ≤ T_train ⇔ i ≤ (d/2)·log_base(T_train/2π), so
counting chunks i = 0 … d/2−1 with i < (d/2)·log_base(T_train/2π) and doubling gives

    d_extra = 2 · ⌈(d/2) · log_base(T_train / 2π)⌉

(clipped to [0, d]; LLaMA-2: d = 128, base 1e4, T = 4096 → 92, as in the paper).
:func:`critical_dimension` counts from the definition; the test checks the closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from interp.results import Result
from interp.rope._common import name_of, rope_model
from interp.types import Model

__all__ = ["men_b", "min_base", "critical_dimension", "BaseBoundsResult", "base_bounds"]


def men_b(base: float, d: int, length: int) -> Float[Tensor, "m"]:
    """B(m) = Σ_{i<d/2} cos(m·base^(−2i/d)) for m = 0 … length−1 (float64)."""
    if d < 2 or d % 2:
        raise ValueError(f"d must be a positive even number, got {d}")
    th = float(base) ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    m = torch.arange(length, dtype=torch.float64)
    return torch.cos(m[:, None] * th[None, :]).sum(-1)


def first_negative(base: float, d: int, length: int) -> int | None:
    """Smallest m < length with B(m) < 0, or ``None``."""
    b = men_b(base, d, length)
    neg = (b < 0).nonzero()
    return int(neg[0, 0]) if len(neg) else None


def min_base(length: int, d: int, *, lo: float = 10.0, hi: float = 1e12, rel: float = 1e-3,
             chunk: int = 512) -> float:
    """Smallest base (on a geometric grid lo·(1+rel)^j) with B(m) ≥ 0 for all m < ``length``.

    Bases are screened in blocks with early elimination (most fail at small m). Raises
    ``ValueError`` if no base up to ``hi`` qualifies.
    """
    if length < 1:
        raise ValueError("length must be >= 1")
    n = int(math.log(hi / lo) / math.log1p(rel)) + 1
    k = torch.arange(0, d, 2, dtype=torch.float64) / d
    for s in range(0, n, chunk):
        bases = lo * (1 + rel) ** torch.arange(s, min(n, s + chunk), dtype=torch.float64)
        th = bases[:, None] ** (-k)
        alive = torch.ones(len(bases), dtype=torch.bool)
        m0, blk = 0, 16
        while m0 < length:
            idx = alive.nonzero()[:, 0]
            if len(idx) == 0:
                break
            m = torch.arange(m0, min(length, m0 + blk), dtype=torch.float64)
            bv = torch.cos(m[None, :, None] * th[idx][:, None, :]).sum(-1)
            alive[idx] = (bv >= 0).all(-1)
            m0 += blk
            blk = min(2 * blk, 1024)
        if alive.any():
            return float(bases[alive.nonzero()[0, 0]])
    raise ValueError(f"no base below {hi:g} keeps B(m) >= 0 up to {length}")


def critical_dimension(base: float, d: int, train_length: int) -> int:
    """Liu et al. 2023: 2 × the number of chunks whose period 2π·base^(2i/d) is < T_train.

    Equals 2·⌈(d/2)·log_base(T_train/2π)⌉ clipped to [0, d] (see the module docstring).
    """
    i = torch.arange(d // 2, dtype=torch.float64)
    period = 2 * math.pi * float(base) ** (2 * i / d)
    return int(2 * (period < train_length).sum())


@dataclass
class BaseBoundsResult(Result):
    """Men et al. / Liu et al. bounds for each layer type of a model (or one given base).

    Per layer type: ``bases``, ``first_negative`` (first m with B(m) < 0 below ``length``, or
    ``None`` when the base satisfies the bound), ``min_base`` for (``length``, d_rot) (``None``
    when not computed), ``critical_dim`` for ``train_length``. ``curves[t]`` is B(m), m < length.
    """

    model: str
    rotary_dim: int
    length: int
    train_length: int
    layer_types: list[str]
    bases: list[float]
    first_negative: list[int | None]
    satisfied: list[bool]
    min_base: float | None
    critical_dim: list[int]
    curves: list[Tensor]

    def to_frame(self) -> Any:
        """One row per (layer type, m): ``layer_type``, ``base``, ``m`` (relative distance), ``B``
        (the bound curve B(m)), ``satisfied``, ``first_negative``."""
        from interp.results import require_pandas

        rows = []
        for i, t in enumerate(self.layer_types):
            c = self.curves[i].detach().double().reshape(-1)
            rows += [dict(layer_type=t, base=self.bases[i], m=m, B=float(c[m]), satisfied=self.satisfied[i],
                          first_negative=self.first_negative[i]) for m in range(c.numel())]
        df = require_pandas().DataFrame(rows, columns=["layer_type", "base", "m", "B", "satisfied", "first_negative"])
        df["model"] = self.model
        return df

    def plot(self) -> go.Figure:
        """B(m) for each layer type's base (and at the minimum base), zero line, model base in the legend."""
        fig = go.Figure()
        step = max(1, self.length // 4000)
        m = list(range(0, self.length, step))
        for t, b, c in zip(self.layer_types, self.bases, self.curves):
            fig.add_scatter(x=m, y=c[::step].numpy(), mode="lines", name=f"{t}: model base {b:.3g}")
        if self.min_base is not None:
            c = men_b(self.min_base, self.rotary_dim, self.length)
            fig.add_scatter(x=m, y=c[::step].numpy(), mode="lines", line=dict(dash="dot"),
                            name=f"minimum base {self.min_base:.3g}")
        fig.add_hline(y=0, line_dash="dash")
        fig.update_layout(title=f"{self.model}: Men et al. B(m) = Σ cos(m·θ_i), d={self.rotary_dim}, "
                                f"L={self.length}", xaxis_title="relative distance m", yaxis_title="B(m)")
        return fig

    def plot_min_base(self, lengths: Sequence[int] = (512, 1024, 2048, 4096, 8192)) -> go.Figure:
        """Minimum base against context length (log–log), with the model's bases marked."""
        mins = [min_base(L, self.rotary_dim) for L in lengths]
        fig = go.Figure(go.Scatter(x=list(lengths), y=mins, mode="lines+markers", name="minimum base"))
        for t, b in zip(self.layer_types, self.bases):
            fig.add_hline(y=b, line_dash="dash", annotation_text=f"{t} base {b:.3g}")
        fig.update_layout(title=f"{self.model}: minimum RoPE base for B(m) ≥ 0 (d={self.rotary_dim})",
                          xaxis_title="context length", yaxis_title="base", xaxis_type="log", yaxis_type="log")
        return fig


def base_bounds(
    model: Model = None,
    *,
    base: float | None = None,
    d: int | None = None,
    length: int | None = None,
    train_length: int | None = None,
    compute_min_base: bool = True,
) -> BaseBoundsResult:
    """Men et al. B(m) check, minimum base and Liu et al. critical dimension.

    Either pass a rotary ``model`` (its bases per layer type, d_rot, and ``length`` defaulting to
    its ``max_position_embeddings``), or ``base`` and ``d`` (and ``length``).
    """
    if model is not None:
        spec, rope = rope_model(model)
        # NoPE layers (rope key "no_rope", base NaN) rotate nothing: no bound applies to them
        types = [t for t in dict.fromkeys(rope.layer_types) if rope.rope_types.get(t) != "no_rope"]
        bases = [rope.bases[rope.layer_types.index(t)] for t in types]
        d = rope.rotary_dim
        length = length or rope.max_position_embeddings or spec.n_ctx
        name = name_of(model)
    else:
        if base is None or d is None or length is None:
            raise ValueError("pass a model, or base=, d= and length=")
        types, bases, name = ["rope"], [float(base)], f"base {base:g}"
    assert d is not None and length is not None
    train_length = train_length or length
    curves = [men_b(b, d, length).float() for b in bases]
    fn = [first_negative(b, d, length) for b in bases]
    return BaseBoundsResult(
        model=name, rotary_dim=int(d), length=int(length), train_length=int(train_length), layer_types=types,
        bases=bases, first_negative=fn, satisfied=[f is None for f in fn],
        min_base=min_base(length, d) if compute_min_base else None,
        critical_dim=[critical_dimension(b, d, train_length) for b in bases], curves=curves,
    )
