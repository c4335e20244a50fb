"""Uncertainty of report numbers: bootstrap intervals over prompts, split-half stability, and the
rule that decides when a number is too noisy to read.

Bootstrap (Efron & Tibshirani 1993): resample the ``n`` prompts with replacement ``B`` times,
recompute the statistic, and take the ``(1−level)/2`` and ``(1+level)/2`` percentiles of the
``B`` replicates as the interval. The statistic is a mean over prompts, or a ratio of sums
Σ_i w_i x_i / Σ_i w_i (a per-token mean when ``w`` counts each prompt's tokens); NaN entries
(a prompt without the position being measured) are left out of that replicate's mean. For a
mean the percentile interval approaches the normal interval x̄ ± z σ̂/√n (σ̂ with denominator n),
which is what the tests check.

Split-half stability: the prompts are split at random into two halves and the statistic is
computed on each. For a mean the difference of the halves has standard deviation 2σ/√n, so
halves further apart than two interval half-widths (≈ 2·1.96 σ/√n) happen with probability
≈ 5 % when the prompts are exchangeable: a larger gap means the number depends on which
prompts were drawn. For a whole map (per-head scores) :func:`split_half_map` gives the
correlation of the two halves and its Spearman–Brown correction 2r/(1+r) (Spearman 1910,
Brown 1910), the reliability of the full-sample map.

Too noisy to read (:func:`too_noisy`): an estimate is reported as a finding only when its
interval half-width is at most ``max(abs_tol, rel_tol·|value|)`` and its two halves agree
(|a−b| ≤ 2·half-width + abs_tol). Otherwise the report says in words that the number is too
noisy to read, and prints the interval instead of a point value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["Estimate", "bootstrap_ci", "estimate", "split_half", "split_half_map", "too_noisy", "describe",
           "group_estimate", "REL_TOL", "N_BOOT"]

N_BOOT = 1000
LEVEL = 0.95
REL_TOL = 0.25


@dataclass
class Estimate:
    """A number with its bootstrap interval over prompts and its two split halves."""

    value: float
    lo: float
    hi: float
    n: int
    level: float = LEVEL
    halves: tuple[float, float] | None = None
    unit: str = "prompts"
    n_boot: int = N_BOOT
    abs_tol: float = 0.0
    rel_tol: float = REL_TOL
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def noisy(self) -> bool:
        return too_noisy(self, abs_tol=self.abs_tol, rel_tol=self.rel_tol)

    def to_json(self) -> dict[str, Any]:
        def f(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else round(float(x), 6)

        return {"value": f(self.value), "ci_lo": f(self.lo), "ci_hi": f(self.hi), "level": self.level,
                "n": self.n, "unit": self.unit, "n_boot": self.n_boot,
                "split_half": None if self.halves is None else [f(self.halves[0]), f(self.halves[1])],
                "too_noisy": self.noisy, **({"meta": self.meta} if self.meta else {})}

    def text(self, fmt: str = ".3f") -> str:
        """``0.512 [0.47, 0.55]`` (or the interval alone when too noisy)."""
        if self.noisy:
            return f"too noisy to read (95% CI [{self.lo:{fmt}}, {self.hi:{fmt}}])"
        return f"{self.value:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}]"


def _as2d(x: Tensor) -> Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    return x.reshape(x.shape[0], -1)


def _stat(x: Tensor, w: Tensor | None, idx: Tensor) -> Tensor:
    """Mean (or weighted ratio of sums) over the prompt axis of ``x[idx]`` for each row of ``idx``.

    ``x``: [n, m]; ``idx``: [B, n] → [B, m]. NaNs are left out.
    """
    xs = x[idx]  # [B, n, m]
    ok = ~torch.isnan(xs)
    ww = torch.ones_like(xs) if w is None else w[idx][..., None].expand_as(xs)
    ww = ww * ok
    num = (torch.nan_to_num(xs) * ww).sum(1)
    den = ww.sum(1)
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.nan)


def bootstrap_ci(
    values: Float[Tensor, "n *rest"],
    *,
    weights: Float[Tensor, " n"] | None = None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Point value, lower and upper percentile-bootstrap bounds of the mean over axis 0.

    ``values[i, ...]`` is prompt ``i``'s measurement (NaN = not measured on that prompt); with
    ``weights`` the statistic is Σ w_i x_i / Σ w_i. Returns three tensors shaped like ``values[0]``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be >= 10, got {n_boot}")
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.ndim == 0 or v.shape[0] < 2:
        raise ValueError(f"a bootstrap over prompts needs at least 2 prompts, got shape {tuple(v.shape)}")
    rest = v.shape[1:]
    x = _as2d(v)
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w is not None and (w.shape != (x.shape[0],) or bool((w < 0).any())):
        raise ValueError(f"weights must be {x.shape[0]} non-negative numbers, got shape {tuple(w.shape)}")
    n = x.shape[0]
    point = _stat(x, w, torch.arange(n)[None])[0]
    g = torch.Generator().manual_seed(seed)
    # chunks keep memory at ~ chunk·n·m doubles
    chunk = max(1, min(n_boot, int(2e7 // max(1, n * x.shape[1]))))
    reps = []
    for s in range(0, n_boot, chunk):
        idx = torch.randint(0, n, (min(chunk, n_boot - s), n), generator=g)
        reps.append(_stat(x, w, idx))
    r = torch.cat(reps)  # [B, m]
    a = (1 - level) / 2
    lo = torch.nanquantile(r, a, dim=0)
    hi = torch.nanquantile(r, 1 - a, dim=0)
    return point.reshape(rest), lo.reshape(rest), hi.reshape(rest)


def split_half(values: Float[Tensor, " n"], *, weights: Float[Tensor, " n"] | None = None,
               seed: int = 0) -> tuple[float, float]:
    """The statistic on two random halves of the prompts (the first gets ⌊n/2⌋ prompts)."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    n = v.shape[0]
    if n < 2:
        raise ValueError("split-half needs at least 2 prompts")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    out = []
    for part in (perm[: n // 2], perm[n // 2:]):
        out.append(float(_stat(v[:, None], w, part[None])[0, 0]))
    return out[0], out[1]


def estimate(values: Float[Tensor, " n"], *, weights: Float[Tensor, " n"] | None = None, n_boot: int = N_BOOT,
             level: float = LEVEL, seed: int = 0, abs_tol: float = 0.0, rel_tol: float = REL_TOL,
             unit: str = "prompts", **meta: Any) -> Estimate:
    """:class:`Estimate` of the mean (or ratio of sums) of per-prompt ``values`` with its bootstrap
    interval and split halves."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    p, lo, hi = bootstrap_ci(v, weights=weights, n_boot=n_boot, level=level, seed=seed)
    n = int((~torch.isnan(v)).sum())
    return Estimate(float(p), float(lo), float(hi), n, level, split_half(v, weights=weights, seed=seed), unit,
                    n_boot, abs_tol, rel_tol, dict(meta))


def group_estimate(values: Sequence[float], *, seed: int = 0, abs_tol: float = 0.0, rel_tol: float = REL_TOL,
                   unit: str = "prompt groups", n_boot: int = N_BOOT, **meta: Any) -> Estimate:
    """:func:`estimate` over the values of disjoint groups of prompts (an analysis run once per group
    when it does not keep per-prompt numbers): the mean of the group values and the bootstrap
    interval of that mean over groups."""
    return estimate(torch.tensor([float(x) for x in values], dtype=torch.float64), seed=seed, abs_tol=abs_tol,
                    rel_tol=rel_tol, unit=unit, n_boot=n_boot, **meta)


def split_half_map(per_prompt: Float[Tensor, "n *rest"], *, seed: int = 0) -> dict[str, float]:
    """Reliability of a map of means (e.g. a score per head): Pearson ``r`` between the maps of two
    random halves of the prompts and the Spearman–Brown full-sample reliability ``2r/(1+r)``."""
    x = _as2d(per_prompt)
    n = x.shape[0]
    if n < 4:
        raise ValueError("split_half_map needs at least 4 prompts")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    a = torch.nanmean(x[perm[: n // 2]], 0)
    b = torch.nanmean(x[perm[n // 2:]], 0)
    ok = ~(torch.isnan(a) | torch.isnan(b))
    a, b = a[ok], b[ok]
    if a.numel() < 3 or float(a.std()) == 0 or float(b.std()) == 0:
        return {"r": float("nan"), "spearman_brown": float("nan"), "n_entries": int(a.numel())}
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return {"r": r, "spearman_brown": 2 * r / (1 + r) if r > -1 else float("nan"), "n_entries": int(a.numel())}


def too_noisy(est: Estimate, *, abs_tol: float = 0.0, rel_tol: float = REL_TOL) -> bool:
    """True when ``est`` should not be read as a finding (see the module docstring):
    a non-finite value or interval, a half-width above ``max(abs_tol, rel_tol·|value|)``, or split
    halves further apart than ``2·half-width + abs_tol``."""
    vals = [est.value, est.lo, est.hi]
    if not all(math.isfinite(x) for x in vals):
        return True
    hw = est.half_width
    if hw > max(abs_tol, rel_tol * abs(est.value)):
        return True
    if est.halves is not None:
        a, b = est.halves
        if not (math.isfinite(a) and math.isfinite(b)) or abs(a - b) > 2 * hw + abs_tol:
            return True
    return False


def describe(name: str, est: Estimate, fmt: str = ".3f") -> str:
    """One sentence for the report: the value with its interval, or that it is too noisy to read."""
    n = f"{est.n} {est.unit}"
    halves = "" if est.halves is None else f"; split halves {est.halves[0]:{fmt}} / {est.halves[1]:{fmt}}"
    if est.noisy:
        return (f"{name} is too noisy to read on {n}: 95% CI [{est.lo:{fmt}}, {est.hi:{fmt}}]{halves} "
                "(read it as unknown, not as a finding).")
    return f"{name} = {est.value:{fmt}} (95% CI [{est.lo:{fmt}}, {est.hi:{fmt}}] over {n}{halves})."
