"""Probe metrics in torch (device-agnostic, no scikit-learn needed at run time).

Classification:
    accuracy  = (1/n) sum_i [yhat_i == y_i]
    macro-F1  = (1/|K|) sum_{k in K} 2 P_k R_k / (P_k + R_k), K = classes present in y or yhat
                (a class with P_k + R_k = 0 scores 0; matches ``sklearn.metrics.f1_score(average="macro")``)
    ROC-AUC   = Mann-Whitney U / (n_pos n_neg) with tie-averaged ranks; multiclass: macro mean
                of one-vs-rest AUCs over classes with both positives and negatives in ``y``.
Regression:
    R^2       = 1 - sum (y - yhat)^2 / sum (y - ybar)^2
    MAE       = (1/n) sum |y - yhat|   (in positions for position targets)
    Spearman  = Pearson correlation of tie-averaged ranks.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "accuracy",
    "macro_f1",
    "roc_auc",
    "r2_score",
    "mae",
    "spearman",
    "rankdata",
    "confusion_matrix",
    "classification_metrics",
    "regression_metrics",
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
]

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "roc_auc")
REGRESSION_METRICS = ("r2", "mae", "spearman")


def accuracy(y_true: Int[Tensor, " n"], y_pred: Int[Tensor, " n"]) -> float:
    return float((y_true == y_pred).double().mean())


def macro_f1(y_true: Int[Tensor, " n"], y_pred: Int[Tensor, " n"]) -> float:
    labels = torch.unique(torch.cat([y_true, y_pred]))
    t = y_true[:, None] == labels[None, :]
    p = y_pred[:, None] == labels[None, :]
    tp = (t & p).sum(0).double()
    fp = (~t & p).sum(0).double()
    fn = (t & ~p).sum(0).double()
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    return float(f1.mean())


def rankdata(x: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """1-based ranks with ties given their average rank (``scipy.stats.rankdata`` "average")."""
    n = x.numel()
    order = torch.argsort(x, stable=True)
    xs = x[order]
    _, inverse, counts = torch.unique_consecutive(xs, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2  # average of 1-based ranks within each tie block
    ranks = torch.empty(n, dtype=torch.float64, device=x.device)
    ranks[order] = avg[inverse]
    return ranks


def _binary_auc(pos: Tensor, score: Tensor) -> float:
    n_pos = int(pos.sum())
    n_neg = pos.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(score.double())
    u = r[pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def roc_auc(y_index: Int[Tensor, " n"], proba: Float[Tensor, "n cls"]) -> float:
    """ROC-AUC from class-index labels and per-class scores (binary: column 1 vs rest)."""
    if proba.shape[1] == 2:
        return _binary_auc(y_index == 1, proba[:, 1])
    aucs = [_binary_auc(y_index == k, proba[:, k]) for k in range(proba.shape[1])]
    vals = [a for a in aucs if a == a]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def r2_score(y_true: Float[Tensor, " n"], y_pred: Float[Tensor, " n"]) -> float:
    yt, yp = y_true.double(), y_pred.double()
    ss_res = ((yt - yp) ** 2).sum()
    ss_tot = ((yt - yt.mean()) ** 2).sum()
    if float(ss_tot) == 0.0:
        return float("nan")
    return float(1 - ss_res / ss_tot)


def mae(y_true: Float[Tensor, " n"], y_pred: Float[Tensor, " n"]) -> float:
    return float((y_true.double() - y_pred.double()).abs().mean())


def spearman(y_true: Float[Tensor, " n"], y_pred: Float[Tensor, " n"]) -> float:
    a, b = rankdata(y_true.double()), rankdata(y_pred.double())
    a, b = a - a.mean(), b - b.mean()
    den = (a.norm() * b.norm())
    if float(den) == 0.0:
        return float("nan")
    return float((a @ b) / den)


def confusion_matrix(y_index: Int[Tensor, " n"], pred_index: Int[Tensor, " n"], n_classes: int) -> Int[Tensor, "true pred"]:
    """Counts ``M[i, j]`` = rows of true class i predicted as class j."""
    flat = y_index.long() * n_classes + pred_index.long()
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(
    y_index: Int[Tensor, " n"], proba: Float[Tensor, "n cls"]
) -> dict[str, float]:
    pred = proba.argmax(1)
    return {
        "accuracy": accuracy(y_index, pred),
        "macro_f1": macro_f1(y_index, pred),
        "roc_auc": roc_auc(y_index, proba),
    }


def regression_metrics(y_true: Float[Tensor, " n"], y_pred: Float[Tensor, " n"]) -> dict[str, float]:
    return {"r2": r2_score(y_true, y_pred), "mae": mae(y_true, y_pred), "spearman": spearman(y_true, y_pred)}
