"""Baselines and controls for probes.

* **Control task** (Hewitt & Liang 2019): every token *type* gets one random label drawn from
  the empirical distribution of the real task's labels; the probe is trained and scored on the
  control labels exactly like on the task. ``selectivity = metric(task) - metric(control)``:
  a good probe is accurate *and* selective (its accuracy does not come from memorising token
  identity).
* **Shuffled labels**: the valid labels permuted across rows -- the chance level of the probe
  with this split and regularisation.
* **Random directions**: the features projected on ``k`` random directions (``k`` = number of
  probe outputs) before fitting -- how much a random linear read-out of that size gets.
* **Embedding layer**: ``hook_embed`` is included in default sweeps as the layer-0 baseline
  (for RoPE/NoPE models it carries no position information).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Int
from torch import Tensor

__all__ = ["control_task_labels", "shuffled_labels", "random_directions"]


def control_task_labels(
    token_types: Int[Tensor, " row"], values: Tensor, valid: Bool[Tensor, " row"], *, seed: int = 0
) -> Tensor:
    """One random label per token type, drawn from the empirical label distribution of the
    valid rows (Hewitt & Liang 2019). Invalid rows keep their value (they are never used)."""
    g = torch.Generator().manual_seed(seed)
    vals = values[valid]
    types = token_types[valid]
    uniq, inverse = torch.unique(types, return_inverse=True)
    draw = torch.randint(0, vals.numel(), (uniq.numel(),), generator=g)
    out = values.clone()
    out[valid] = vals[draw][inverse]
    return out


def shuffled_labels(values: Tensor, valid: Bool[Tensor, " row"], *, seed: int = 0) -> Tensor:
    """The valid labels permuted uniformly at random across the valid rows."""
    g = torch.Generator().manual_seed(seed)
    idx = valid.nonzero().flatten()
    out = values.clone()
    out[idx] = values[idx[torch.randperm(idx.numel(), generator=g)]]
    return out


def random_directions(d: int, k: int, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[d k]`` matrix of ``k`` random unit directions (Gaussian, normalised)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(d, k, generator=g, dtype=torch.float64)
    return (r / r.norm(dim=0, keepdim=True)).to(dtype)
