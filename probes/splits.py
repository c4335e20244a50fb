"""Grouped train/test splits, k-fold CV over prompts, and confidence intervals.

Rows of one prompt are correlated (and identical prompts give identical rows), so splits are
made over *split groups* (``ProbeData.split_groups``: prompts with identical token sequences
share one) -- never over rows. Hewitt & Liang 2019 (arXiv:1909.03368); see REFERENCES.md.

Confidence intervals (95 % by default):
* ``"t"``: over the k fold scores, ``mean +- t_{k-1, 0.975} * sd / sqrt(k)`` (sd with k-1).
  Folds share training data, so this interval is somewhat optimistic (Bengio & Grandvalet 2004).
* ``"bootstrap"``: percentile interval of the metric recomputed on the pooled out-of-fold
  predictions after resampling *prompts* (split groups) with replacement.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Int
from torch import Tensor

from probes.errors import ProbeInputError

__all__ = ["group_folds", "grouped_split", "t_interval", "percentile_interval", "t_quantile"]

_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]


def t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided Student-t quantile ``t_{df, (1+level)/2}``."""
    if df < 1:
        return float("nan")
    if abs(level - 0.95) < 1e-12:
        return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df
    try:
        from scipy.stats import t as student_t

        return float(student_t.ppf((1 + level) / 2, df))
    except ImportError as e:  # pragma: no cover
        raise ProbeInputError("levels other than 0.95 need scipy for t quantiles") from e


def group_folds(split_groups: Int[Tensor, " row"], k: int, *, seed: int = 0) -> Int[Tensor, " row"]:
    """Fold id (0..k-1) per row: split groups are shuffled (seeded) and dealt round-robin,
    so every row of a group sits in exactly one fold."""
    uniq = torch.unique(split_groups)
    if k < 2:
        raise ProbeInputError(f"k-fold CV needs k >= 2, got {k}")
    if uniq.numel() < k:
        raise ProbeInputError(
            f"only {uniq.numel()} distinct prompts for {k}-fold CV; use more prompts or fewer folds"
        )
    g = torch.Generator().manual_seed(seed)
    perm = uniq[torch.randperm(uniq.numel(), generator=g)]
    fold_of = torch.empty(int(uniq.max()) + 1, dtype=torch.long)
    fold_of[perm] = torch.arange(uniq.numel()) % k
    return fold_of[split_groups]


def grouped_split(
    split_groups: Int[Tensor, " row"], *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[Int[Tensor, " train"], Int[Tensor, " test"]]:
    """Row indices of a single train/test split by group (``test_fraction`` of the groups)."""
    uniq = torch.unique(split_groups)
    if uniq.numel() < 2:
        raise ProbeInputError("a grouped split needs at least 2 distinct prompts")
    g = torch.Generator().manual_seed(seed)
    perm = uniq[torch.randperm(uniq.numel(), generator=g)]
    n_test = min(max(1, round(test_fraction * uniq.numel())), uniq.numel() - 1)
    test_groups = perm[:n_test]
    is_test = torch.isin(split_groups, test_groups)
    return (~is_test).nonzero().flatten(), is_test.nonzero().flatten()


def t_interval(scores: Tensor, level: float = 0.95) -> tuple[float, float]:
    """``mean +- t * sd / sqrt(k)`` over fold scores (NaN folds ignored)."""
    s = scores[~torch.isnan(scores)].double()
    k = s.numel()
    if k == 0:
        return float("nan"), float("nan")
    m = float(s.mean())
    if k == 1:
        return m, m
    half = t_quantile(k - 1, level) * float(s.std(unbiased=True)) / math.sqrt(k)
    return m - half, m + half


def percentile_interval(samples: Tensor, level: float = 0.95) -> tuple[float, float]:
    s = samples[~torch.isnan(samples)].double()
    if s.numel() == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(torch.quantile(s, a)), float(torch.quantile(s, 1 - a))
