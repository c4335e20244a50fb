"""Linear probes in torch: L2 logistic regression (binary / multinomial) and closed-form ridge.

Objectives (``n`` training rows, standardised features ``z = (x - mu) / sigma``)::

    logistic:  L(W, b) = (1/n) sum_i CE(softmax(W z_i + b), y_i) + (l2 / 2) ||W||_F^2
               (binary: one weight vector, logistic loss; the bias is never penalised)
    ridge:     L(W, b) = (1/n) sum_i ||y_i - W z_i - b||^2 + l2 ||W||_F^2

The logistic objective equals scikit-learn's ``C * sum_i loss_i + ||W||^2 / 2`` with
``C = 1 / (l2 * n)``; the ridge one equals ``sklearn.linear_model.Ridge(alpha=l2 * n)`` on the
standardised features. Standardisation (``mu``, ``sigma``) is fitted on the training rows only and
folded into the weights, so raw features are never copied. Logistic probes are fitted with
L-BFGS (:mod:`probes._lbfgs`, Armijo backtracking); on large inputs a warm start fitted on a random subsample
of rows (same objective, looser tolerance) comes first and the full-data L-BFGS then only
refines it -- the optimum is unchanged, only reached in fewer full passes. Ridge is solved in
closed form (Cholesky, float64 Gram accumulated in chunks) in :mod:`probes._ridge`.

Optional low rank (``rank=r``): logistic uses ``W = A B`` (A: [out r], B: [r d]) with the
penalty ``(l2/2)(||A||^2 + ||B||^2)`` (a variational nuclear-norm penalty, non-convex);
ridge uses reduced-rank ridge regression (project the ridge solution onto the top ``r`` right
singular vectors of the fitted values, Mukherjee & Zhu 2011).

References: Alain & Bengio 2016 (linear classifier probes); Hewitt & Liang 2019 (control tasks).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from probes._lbfgs import lbfgs
from probes.errors import ProbeInputError

__all__ = [
    "LinearProbe",
    "LogisticProbe",
    "RidgeProbe",
    "Standardizer",
    "fit_logistic",
    "load_probe",
    "check_features",
]

ProbeKind = Literal["logistic", "ridge"]


def _colsum(x: Tensor, chunk: int = 65536) -> Tensor:
    """Column sums in float64 via BLAS gemv over row chunks (a strided ``x.sum(0)`` is ~10x slower)."""
    out = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for c in x.split(chunk):
        out += (torch.ones(1, c.shape[0], dtype=c.dtype, device=c.device) @ c)[0].double()
    return out


def check_features(x: Tensor, name: str = "features") -> None:
    """Raise :class:`ProbeInputError` if ``x`` is not a finite 2-D floating tensor."""
    if x.ndim != 2:
        raise ProbeInputError(f"{name} must be 2-D [row, d], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ProbeInputError(f"{name} must be floating point, got {x.dtype}")
    if x.shape[0] == 0:
        raise ProbeInputError(f"{name} has no rows")
    if bool(torch.isfinite(_colsum(x)).all()):  # fast path: a NaN/inf poisons its column sum
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.any(dim=1).nonzero().flatten()
        raise ProbeInputError(
            f"{name} contain {int(bad.sum())} NaN/inf values in {rows.numel()} rows "
            f"(first rows: {rows[:5].tolist()}); drop or repair those rows (e.g. fully masked "
            "positions, fp16 overflow) before probing"
        )


@dataclass
class Standardizer:
    """Per-feature standardisation ``z = (x - mean) / scale``, fitted on training rows only.

    ``scale`` is the population std clamped below at ``eps * max(std)`` (constant features get
    scale 1 so they contribute 0).
    """

    mean: Float[Tensor, " d"]
    scale: Float[Tensor, " d"]

    @classmethod
    def fit(cls, x: Float[Tensor, "row d"], *, enabled: bool = True, eps: float = 1e-6) -> Standardizer:
        d = x.shape[1]
        if not enabled:
            return cls(torch.zeros(d, dtype=x.dtype, device=x.device), torch.ones(d, dtype=x.dtype, device=x.device))
        # shifted two-moment pass with BLAS gemv (float64 accumulation): fast and stable even
        # for "massive" dims whose mean dwarfs their spread
        shift = x[: min(x.shape[0], 1024)].double().mean(0).to(x.dtype)
        n = x.shape[0]
        s1 = torch.zeros(d, dtype=torch.float64, device=x.device)
        s2 = torch.zeros(d, dtype=torch.float64, device=x.device)
        for c in x.split(8192):  # small chunks: temporaries are recycled, not page-faulted in
            cc = c - shift
            ones = torch.ones(1, c.shape[0], dtype=c.dtype, device=c.device)
            s1 += (ones @ cc)[0].double()
            s2 += (ones @ cc.square_())[0].double()
        m1 = s1 / n
        var = (s2 / n - m1 * m1).clamp_min(0)
        mean = m1 + shift.double()
        std = var.sqrt()
        floor = eps * float(std.max()) if std.numel() else eps
        scale = torch.where(std > floor, std, torch.ones_like(std))
        return cls(mean.to(x.dtype), scale.to(x.dtype))

    def transform(self, x: Float[Tensor, "row d"]) -> Float[Tensor, "row d"]:
        return (x - self.mean.to(x)) / self.scale.to(x)


@dataclass
class LinearProbe:
    """A fitted linear probe. ``weight``/``bias`` act on standardised features.

    ``scores(x) = standardize(x) @ weight.T + bias`` -- logits (logistic) or predictions (ridge).
    ``raw_weight``/``raw_bias`` are the same map on raw features (the probe *direction* in
    activation space is ``raw_weight[c]``).
    """

    kind: ProbeKind
    weight: Float[Tensor, "out d"]
    bias: Float[Tensor, " out"]
    standardizer: Standardizer
    classes: Tensor | None = None  # label value of each class (logistic only)
    l2: float = 0.0
    rank: int | None = None
    n_iter: int = 0
    converged: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- maps --------------------------------------------------------------------------
    @property
    def raw_weight(self) -> Float[Tensor, "out d"]:
        return self.weight / self.standardizer.scale.to(self.weight)

    @property
    def raw_bias(self) -> Float[Tensor, " out"]:
        return self.bias - self.raw_weight @ self.standardizer.mean.to(self.weight)

    @property
    def d_in(self) -> int:
        return int(self.weight.shape[1])

    def scores(self, x: Float[Tensor, "row d"]) -> Float[Tensor, "row out"]:
        """Logits (logistic; one column for binary) or predictions (ridge)."""
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ProbeInputError(f"probe expects features [row, {self.d_in}], got {tuple(x.shape)}")
        w = self.raw_weight
        return x.to(w) @ w.T + self.raw_bias

    def to(self, device: str | torch.device) -> LinearProbe:
        self.weight, self.bias = self.weight.to(device), self.bias.to(device)
        self.standardizer = Standardizer(self.standardizer.mean.to(device), self.standardizer.scale.to(device))
        return self

    # ---- persistence -------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {
            "format": "probes.LinearProbe/1",
            "kind": self.kind,
            "l2": self.l2,
            "rank": self.rank,
            "n_iter": self.n_iter,
            "converged": self.converged,
            "d_in": self.d_in,
            "n_out": int(self.weight.shape[0]),
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.safetensors, metadata JSON in its header) and ``path.json`` beside it."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "weight": self.weight.detach().cpu().contiguous(),
            "bias": self.bias.detach().cpu().contiguous(),
            "mean": self.standardizer.mean.detach().cpu().contiguous(),
            "scale": self.standardizer.scale.detach().cpu().contiguous(),
        }
        if self.classes is not None:
            tensors["classes"] = self.classes.detach().cpu().contiguous()
        meta = json.dumps(self.metadata())
        save_file(tensors, str(path), metadata={"probe": meta})
        path.with_suffix(".json").write_text(json.dumps(self.metadata(), indent=2))
        return path


@dataclass
class LogisticProbe(LinearProbe):
    """L2-regularised logistic probe (binary when ``classes`` has 2 entries, else multinomial)."""

    @property
    def n_classes(self) -> int:
        assert self.classes is not None
        return int(self.classes.numel())

    def predict_proba(self, x: Float[Tensor, "row d"]) -> Float[Tensor, "row cls"]:
        s = self.scores(x)
        if self.n_classes == 2:
            p1 = torch.sigmoid(s[:, 0])
            return torch.stack([1 - p1, p1], dim=1)
        return torch.softmax(s, dim=1)

    def predict_index(self, x: Float[Tensor, "row d"]) -> Int[Tensor, " row"]:
        s = self.scores(x)
        if self.n_classes == 2:
            return (s[:, 0] > 0).long()
        return s.argmax(1)

    def predict(self, x: Float[Tensor, "row d"]) -> Tensor:
        """Predicted label values (elements of ``classes``)."""
        assert self.classes is not None
        return self.classes.to(x.device)[self.predict_index(x)]


@dataclass
class RidgeProbe(LinearProbe):
    """Closed-form ridge probe; ``predict`` returns ``[row]`` for one target, else ``[row out]``."""

    def predict(self, x: Float[Tensor, "row d"]) -> Tensor:
        s = self.scores(x)
        return s[:, 0] if self.meta.get("squeeze", False) else s


def load_probe(path: str | Path, device: str | torch.device = "cpu") -> LinearProbe:
    """Load a probe written by :meth:`LinearProbe.save`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists() and path.with_suffix(".safetensors").exists():
        path = path.with_suffix(".safetensors")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if "probe" not in header:
        raise ProbeInputError(f"{path} has no probe metadata; was it written by LinearProbe.save?")
    meta = json.loads(header["probe"])
    t = load_file(str(path), device=str(device))
    cls = LogisticProbe if meta["kind"] == "logistic" else RidgeProbe
    return cls(
        kind=meta["kind"],
        weight=t["weight"],
        bias=t["bias"],
        standardizer=Standardizer(t["mean"], t["scale"]),
        classes=t.get("classes"),
        l2=meta["l2"],
        rank=meta["rank"],
        n_iter=meta["n_iter"],
        converged=meta["converged"],
        meta=meta.get("meta", {}),
    )


# ---------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _small_problem_threads(work: float, threshold: float = 3e7):
    """Run tiny fits single-threaded: on a busy CPU, intra-op thread hand-offs cost far more
    than the arithmetic of a few-hundred-row problem (measured 15x slower with 2 threads)."""
    if work >= threshold or torch.get_num_threads() == 1:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _encode_classes(y: Tensor, classes: Tensor | None) -> tuple[Tensor, Tensor]:
    if y.ndim != 1:
        raise ProbeInputError(f"logistic labels must be 1-D [row], got shape {tuple(y.shape)}")
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise ProbeInputError("logistic labels must be integer class ids; use fit_ridge for real-valued targets")
    y = y.long()
    if classes is None:
        classes = torch.unique(y)
    classes = classes.to(y.device).long()
    if classes.numel() < 2:
        raise ProbeInputError(
            f"logistic probe needs at least 2 classes in the training labels, got only {classes.tolist()}; "
            "check the target (a constant label cannot be probed) or the split"
        )
    idx = torch.searchsorted(classes, y)
    idx = idx.clamp(max=classes.numel() - 1)
    if not bool((classes[idx] == y).all()):
        raise ProbeInputError("labels contain values outside `classes`")
    return idx, classes


def _threads_for_small(fn):
    """Decorator: run ``fn(x, ...)`` single-threaded when ``x`` is small (see above)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        x = args[0] if args else kwargs["x"]
        work = float(x.shape[0]) * float(x.shape[-1]) * 8 if isinstance(x, Tensor) and x.ndim == 2 else 0.0
        with _small_problem_threads(work):
            return fn(*args, **kwargs)

    return wrapper


@_threads_for_small
def fit_logistic(
    x: Float[Tensor, "row d"],
    y: Int[Tensor, " row"],
    *,
    l2: float = 1e-4,
    rank: int | None = None,
    standardize: bool = True,
    classes: Tensor | None = None,
    max_iter: int = 500,
    tol: float = 1e-4,
    warm_start_rows: int | None = 20_000,
    precondition: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> LogisticProbe:
    """Fit an L2 logistic probe by L-BFGS (see module docstring for the objective).

    Args:
        x: features, raw (standardisation is fitted here, on these rows only).
        y: integer labels; two distinct values give a binary probe, more a multinomial one.
        l2: penalty on the mean loss; scikit-learn's ``C = 1 / (l2 * n_rows)``.
        rank: optional low rank of the weight matrix (multinomial only).
        classes: the label values to use as classes (default: the sorted unique labels).
        max_iter, tol: L-BFGS stops at ``max|grad| <= tol`` (gradient of the mean loss in the
            optimiser's coordinates; scikit-learn's lbfgs uses the same rule with 1e-4, max_iter=100).
        warm_start_rows: if ``x`` has more than 4x this many rows, first fit on a random
            subsample of this size (``None`` disables).
        device: where to fit (default: ``x.device``); e.g. ``"cuda"``.
    """
    check_features(x)
    if y.shape[0] != x.shape[0]:
        raise ProbeInputError(f"{y.shape[0]} labels for {x.shape[0]} feature rows: labels are misaligned")
    dev = torch.device(device) if device is not None else x.device
    x = x.to(dev)
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x = x.to(dtype)
    yi, classes = _encode_classes(y.to(dev), classes)
    n, d = x.shape
    n_cls = classes.numel()
    binary = n_cls == 2
    n_out = 1 if binary else n_cls
    if rank is not None and (binary or rank >= min(n_out, d)):
        rank = None  # full rank already
    std = Standardizer.fit(x, enabled=standardize)
    inv = 1.0 / std.scale
    gen = torch.Generator(device="cpu").manual_seed(seed)

    counts = torch.bincount(yi, minlength=n_cls).to(dtype).clamp_min(0.5)
    prior = (counts / counts.sum()).log()
    b = (prior[1:2] - prior[0:1]) if binary else prior - prior.mean()
    b = b.clone().to(dev)
    if rank is None:
        shapes = [(n_out, d), (n_out,)]
        init = [torch.zeros(n_out * d, dtype=dtype, device=dev), b]
    else:
        shapes = [(n_out, rank), (rank, d), (n_out,)]
        init = [
            (torch.randn(n_out, rank, generator=gen, dtype=dtype) * 0.01).flatten().to(dev),
            (torch.randn(rank, d, generator=gen, dtype=dtype) * 0.01).flatten().to(dev),
            b,
        ]
    sizes = [math.prod(sh) for sh in shapes]
    # Preconditioning: optimise V with W = V P, P = (Sigma + eps I)^(-1/2) from the standardised
    # features' covariance (estimated on <= 4096 rows). The objective is unchanged (the penalty is
    # still on W); only the coordinates the optimiser sees are better conditioned.
    P = None
    if precondition and rank is None:
        g2 = torch.Generator(device="cpu").manual_seed(seed + 1)
        rows = torch.randperm(n, generator=g2)[: min(n, 4096)].to(dev)
        z = (x[rows] - std.mean) * inv
        cov = (z.T.double() @ z.double()) / max(rows.numel() - 1, 1)
        evals, evecs = torch.linalg.eigh(cov)
        eps = max(10.0 * l2, 1e-3 * float(evals.clamp_min(0).mean()), 1e-8)
        P = ((evecs * (evals.clamp_min(0) + eps).rsqrt()) @ evecs.T).to(dtype)
    mean = std.mean

    def unpack(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(full weight [out d], bias [out], penalty) from the flat parameter vector."""
        parts = [p.view(sh) for p, sh in zip(torch.split(w, sizes), shapes)]
        if rank is None:
            W = parts[0] @ P if P is not None else parts[0]
            return W, parts[1], 0.5 * l2 * (W * W).sum()
        pen = 0.5 * l2 * ((parts[0] ** 2).sum() + (parts[1] ** 2).sum())
        return parts[0] @ parts[1], parts[2], pen

    def make_fg(xs: Tensor, ys: Tensor):
        ysf = ys.to(dtype)

        def fg(w: Tensor) -> tuple[float, Tensor]:
            w = w.detach().requires_grad_(True)
            W, bias, pen = unpack(w)
            wr = W * inv  # fold standardisation into the weights: no copy of x
            logits = xs @ wr.T + (bias - wr @ mean)
            if binary:
                ce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], ysf)
            else:
                ce = torch.nn.functional.cross_entropy(logits, ys)
            loss = ce + pen
            (grad,) = torch.autograd.grad(loss, w)
            return float(loss.detach()), grad

        return fg

    w = torch.cat(init)
    n_iter_total = 0
    state: dict[str, Any] = {}  # L-BFGS curvature pairs carried from the subsample to the full fit
    if warm_start_rows is not None and n > 4 * warm_start_rows:
        sub = torch.randperm(n, generator=gen)[:warm_start_rows].to(dev)
        w, it, _ = lbfgs(make_fg(x[sub], yi[sub]), w, max_iter=max_iter, tol=tol * 10, state=state)
        n_iter_total += it
    w, it, converged = lbfgs(make_fg(x, yi), w, max_iter=max_iter, tol=tol, state=state)
    n_iter_total += it

    with torch.no_grad():
        W, bias, _ = unpack(w)
        w, bias = W.detach().clone(), bias.detach().clone()
    return LogisticProbe(
        kind="logistic",
        weight=w,
        bias=bias,
        standardizer=std,
        classes=classes,
        l2=l2,
        rank=rank,
        n_iter=it,
        converged=converged,
        meta={"n_train": n, "n_iter_total": n_iter_total},
    )
