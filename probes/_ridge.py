"""Closed-form ridge probes (see :mod:`probes._models` for the objective and conventions).

``fit_ridge``: ``W = (Z^T Z + n l2 I)^{-1} Z^T (y - ybar)`` on standardised, centred ``Z`` --
``sklearn.linear_model.Ridge(alpha=l2 * n)`` on the standardised features. ``fit_ridge_path``:
all penalties from one eigendecomposition (primal ``d x d``, or the ``n x n`` dual when n < d).
Reduced-rank ridge: Mukherjee & Zhu 2011.
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from probes._models import RidgeProbe, Standardizer, _threads_for_small, check_features
from probes.errors import ProbeInputError

__all__ = ["fit_ridge", "fit_ridge_path"]


def _ridge_inputs(x: Tensor, y: Tensor, device) -> tuple[Tensor, Tensor, bool, torch.device]:
    """Validate features/targets; return ``x`` on the device, targets as float64 ``[row out]``,
    whether they were 1-D, and the device."""
    check_features(x)
    if y.shape[0] != x.shape[0]:
        raise ProbeInputError(f"{y.shape[0]} targets for {x.shape[0]} feature rows: targets are misaligned")
    if y.ndim not in (1, 2):
        raise ProbeInputError(f"ridge targets must be [row] or [row out], got {tuple(y.shape)}")
    dev = torch.device(device) if device is not None else x.device
    y2 = y.to(dev).double().reshape(y.shape[0], -1)
    if not bool(torch.isfinite(y2).all()):
        raise ProbeInputError("ridge targets contain NaN/inf")
    return x.to(dev), y2, y.ndim == 1, dev


def _ridge_stats(x: Tensor, y: Tensor, *, standardize: bool, device, chunk: int = 8192):
    """Standardiser, target mean, Gram ``Z^T Z`` and ``Z^T (y - ybar)`` (float64) of centred ``Z``."""
    x, y2, squeeze, dev = _ridge_inputs(x, y, device)
    std = Standardizer.fit(x, enabled=standardize)
    ybar = y2.mean(0)
    gram = _gram(x, std, chunk=chunk)
    xty = _xty(x, y2 - ybar, std, chunk=chunk)
    return std, ybar, gram, xty, x.shape[0], squeeze


def _chunks(x: Tensor, std: Standardizer, chunk: int):
    """``(start, z)`` over row chunks of the standardised features, in the compute dtype
    (float64 for float64 inputs, else float32)."""
    m32, s32 = std.mean.to(x.dtype), std.scale.to(x.dtype)
    cdt = _compute_dtype(x)
    for start in range(0, x.shape[0], chunk):
        yield start, ((x[start : start + chunk] - m32) / s32).to(cdt)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float64 for float64 features, else float32 (the Gram matrix is accumulated in float64)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _gram(x: Tensor, std: Standardizer, *, chunk: int = 8192) -> Float[Tensor, "d d"]:
    """``Z^T Z`` (float64), accumulated over row chunks (BLAS ``?syrk`` on the CPU)."""
    d = x.shape[1]
    gram = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    syrk = _cpu_syrk(_compute_dtype(x)) if x.device.type == "cpu" else None
    for _, z in _chunks(x, std, chunk):
        gram += syrk(z) if syrk is not None else (z.T @ z).double()
    return gram


def _xty(x: Tensor, yc: Tensor, std: Standardizer, *, chunk: int = 8192) -> Float[Tensor, "d out"]:
    """``Z^T yc`` (float64) for centred targets ``yc [row out]``, over the same row chunks."""
    xty = torch.zeros(x.shape[1], yc.shape[1], dtype=torch.float64, device=x.device)
    for start, z in _chunks(x, std, chunk):
        xty += (z.T @ yc[start : start + chunk].to(z.dtype)).double()
    return xty


def _cpu_syrk(dtype: torch.dtype):
    """``z -> z^T z`` (float64) with BLAS ``?syrk`` (half the flops of a GEMM) when scipy is
    installed; ``None`` otherwise."""
    try:
        from scipy.linalg import blas
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return None
    fn = blas.ssyrk if dtype == torch.float32 else blas.dsyrk

    def syrk(z: Tensor) -> Tensor:
        a = z.contiguous().numpy().T  # [d n], Fortran-ordered view: no copy
        upper = torch.from_numpy(fn(1.0, a, trans=0, lower=0)).double()
        return upper + upper.triu(1).T

    return syrk


@_threads_for_small
def fit_ridge_path(
    x: Float[Tensor, "row d"],
    y: Float[Tensor, "row *out"],
    l2s: Sequence[float],
    *,
    standardize: bool = True,
    device: str | torch.device | None = None,
    decomposition: dict | None = None,
) -> list[RidgeProbe]:
    """Ridge probes for several penalties from one eigendecomposition of the Gram matrix:
    ``W(l2) = U diag(1 / (lambda + n l2)) U^T Z^T y`` (same solutions as :func:`fit_ridge`).

    ``decomposition``: a dict that keeps the standardiser and ``Z^T Z = U diag(lambda) U^T`` of
    these rows between calls. Pass the same (initially empty) dict for the same ``x`` with other
    targets -- e.g. a task and its label controls on the same fold -- and the Gram matrix and its
    eigendecomposition are computed once; the probes are bit-identical to separate calls.
    """
    if x.shape[0] < x.shape[1]:  # fewer rows than features: dual (kernel) form, n x n
        return _ridge_path_dual(x, y, l2s, standardize=standardize, device=device)
    x, y2, squeeze, _ = _ridge_inputs(x, y, device)
    n = x.shape[0]
    if decomposition is not None and decomposition:
        if decomposition["shape"] != tuple(x.shape) or decomposition["standardize"] != standardize:
            raise ValueError(f"this decomposition was computed for {decomposition['shape']} features "
                             f"(standardize={decomposition['standardize']}), not {tuple(x.shape)}: "
                             "pass a new dict for new rows")
        std, evals, evecs = decomposition["std"], decomposition["evals"], decomposition["evecs"]
    else:
        std = Standardizer.fit(x, enabled=standardize)
        evals, evecs = torch.linalg.eigh(_gram(x, std))
        if decomposition is not None:
            decomposition.update(shape=tuple(x.shape), standardize=standardize, std=std, evals=evals, evecs=evecs)
    ybar = y2.mean(0)
    xty = _xty(x, y2 - ybar, std)
    proj = evecs.T @ xty
    out = []
    for l2 in l2s:
        w = evecs @ (proj / (evals.clamp_min(0) + n * l2)[:, None])
        out.append(_ridge_probe(w, ybar, std, float(l2), None, n, squeeze, x.dtype))
    return out


def _ridge_path_dual(x: Tensor, y: Tensor, l2s: Sequence[float], *, standardize: bool, device) -> list[RidgeProbe]:
    """``W(l2) = Z^T (Z Z^T + n l2 I)^{-1} yc`` via one eigendecomposition of the n x n kernel."""
    x, y2, squeeze, _ = _ridge_inputs(x, y, device)
    n = x.shape[0]
    std = Standardizer.fit(x, enabled=standardize)
    z = std.transform(x).double()
    ybar = y2.mean(0)
    evals, evecs = torch.linalg.eigh(z @ z.T)
    proj = evecs.T @ (y2 - ybar)
    out = []
    for l2 in l2s:
        w = z.T @ (evecs @ (proj / (evals.clamp_min(0) + n * l2)[:, None]))
        out.append(_ridge_probe(w, ybar, std, float(l2), None, n, squeeze, x.dtype))
    return out


@_threads_for_small
def fit_ridge(
    x: Float[Tensor, "row d"],
    y: Float[Tensor, "row *out"],
    *,
    l2: float = 1e-3,
    rank: int | None = None,
    standardize: bool = True,
    device: str | torch.device | None = None,
    chunk: int = 8192,
) -> RidgeProbe:
    """Closed-form ridge probe: ``W = (Z^T Z + n l2 I)^{-1} Z^T (y - ybar)`` on centred ``Z``.

    Equals ``sklearn.linear_model.Ridge(alpha=l2 * n)`` fitted on the standardised features.
    ``y`` may be ``[row]`` (one target) or ``[row out]``. ``rank`` gives reduced-rank ridge.
    The Gram matrix is accumulated in float64 over row chunks (no float64 copy of ``x``).
    """
    std, ybar, gram, xty, n, squeeze = _ridge_stats(x, y, standardize=standardize, device=device, chunk=chunk)
    gram.diagonal().add_(n * l2)
    try:
        chol = torch.linalg.cholesky(gram)
        w = torch.cholesky_solve(xty, chol)
    except RuntimeError:  # pragma: no cover - l2 == 0 with singular gram
        w = torch.linalg.lstsq(gram, xty).solution
    if rank is not None and rank < min(w.shape):
        # reduced-rank ridge: project onto top right-singular vectors of the fitted values
        # (Z W)^T (Z W) = W^T (Z^T Z) W  (gram without the ridge term)
        gram.diagonal().sub_(n * l2)
        fitted = w.T @ gram @ w
        evals, evecs = torch.linalg.eigh(fitted)
        v = evecs[:, -rank:]
        w = w @ v @ v.T
    return _ridge_probe(w, ybar, std, l2, rank, n, squeeze, x.dtype)


def _ridge_probe(w, ybar, std, l2, rank, n, squeeze, dtype) -> RidgeProbe:
    weight = w.T.to(dtype).contiguous()
    bias = ybar.to(dtype)
    return RidgeProbe(
        kind="ridge",
        weight=weight,
        bias=bias,
        standardizer=std,
        classes=None,
        l2=l2,
        rank=rank,
        n_iter=0,
        converged=True,
        meta={"n_train": n, "squeeze": squeeze},
    )
