"""Probe sweeps over hooks (layers) x {all tokens, each position, each span}, with grouped k-fold
cross-validation, controls and confidence intervals.

For every hook (and every cell: one position, one span, or all tokens) and every fold ``f``:
fit the probe on the rows whose prompt is not in fold ``f``, score it on the rows whose prompt
is (so no prompt -- and no duplicate of a prompt -- is ever on both sides). Metrics per fold are
stored; intervals are t-intervals over folds or a bootstrap over prompts
(:mod:`probes.splits`). With ``by="layer"`` the controls of :mod:`probes.controls` are run on
the same folds and ``selectivity = metric(task) - metric(control task)`` is computed per fold
(accuracy for classification, as in Hewitt & Liang 2019; for regression ``R^2(task) -
max(R^2(control), 0)``: a control R^2 below the predict-the-mean level of 0 is clipped there, so a
badly overfitted control cannot inflate selectivity).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import Tensor

from probes._models import Standardizer, _small_problem_threads, check_features, fit_logistic
from probes._ridge import fit_ridge, fit_ridge_path
from probes.controls import control_task_labels, random_directions, shuffled_labels
from probes.data import ProbeData, hook_label, hook_layer
from probes.errors import ProbeInputError
from probes.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    classification_metrics,
    accuracy,
    confusion_matrix,
    macro_f1,
    mae,
    r2_score,
    regression_metrics,
    roc_auc,
    spearman,
)
from probes.results import SweepResult
from probes.splits import group_folds, percentile_interval, t_interval
from probes.targets import Target

__all__ = ["probe_sweep", "cross_validate", "select_l2", "CONTROLS", "AUTO_L2"]

CONTROLS = ("control_task", "shuffled", "random_direction")
PRIMARY = {"classification": "accuracy", "regression": "r2"}


AUTO_L2 = {"regression": (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0), "classification": (1e-4, 1e-3, 1e-2, 1e-1)}
DEFAULT_L2 = {"classification": 1e-3}


def _score(kind: str, y: Tensor, pred: Tensor) -> float:
    if kind == "classification":
        return float((pred.argmax(1) == y).double().mean())
    from probes.metrics import r2_score

    v = r2_score(y, pred)
    return v if v == v else -1e300


def select_l2(
    x: Tensor, y: Tensor, groups: Tensor, l2s: Sequence[float], *, kind: str, n_classes: int,
    rank: int | None = None, inner_folds: int = 3, seed: int = 0, fit_kw: dict[str, Any] | None = None,
    decompositions: dict | None = None,
) -> float:
    """Penalty with the best mean inner grouped-CV score (accuracy / R^2) on these rows; ties
    go to the larger penalty. Ridge paths share one eigendecomposition per inner fold;
    ``decompositions`` (a dict, keyed by inner fold) keeps them for another target on the same
    rows (see :func:`probes.fit_ridge_path`)."""
    fit_kw = fit_kw or {}
    n_groups = int(torch.unique(groups).numel())
    k = min(inner_folds, n_groups)
    if k < 2 or len(l2s) == 1:
        return float(l2s[-1] if k < 2 else l2s[0])
    folds = group_folds(groups, k, seed=seed + 17)
    totals = torch.zeros(len(l2s), dtype=torch.float64)
    for f in range(k):
        te, tr = folds == f, folds != f
        if kind == "regression":
            path = fit_ridge_path(x[tr], y[tr], list(l2s), device=fit_kw.get("device"),
                                  decomposition=None if decompositions is None else decompositions.setdefault(f, {}))
            for i, p in enumerate(path):
                totals[i] += _score(kind, y[te].cpu(), p.predict(x[te]).double().cpu())
        else:
            for i, l2 in enumerate(l2s):
                pred = _fit_predict(x[tr], y[tr], x[te], kind=kind, n_classes=n_classes, l2=float(l2),
                                    rank=rank, project=None, fit_kw=fit_kw).cpu()
                totals[i] += _score(kind, y[te].cpu(), pred)
    best = float(totals.max())
    idx = max(i for i in range(len(l2s)) if float(totals[i]) >= best - 1e-12)
    return float(l2s[idx])


def _fit_predict(
    xtr: Tensor,
    ytr: Tensor,
    xte: Tensor,
    *,
    kind: str,
    n_classes: int,
    l2: float,
    rank: int | None,
    project: Tensor | None,
    fit_kw: dict[str, Any],
) -> Tensor:
    """Fit on train rows, return test predictions: ``[n_test cls]`` probabilities
    (classification, global class columns) or ``[n_test]`` values (regression)."""
    if project is not None:
        std = Standardizer.fit(xtr)
        xtr = std.transform(xtr) @ project.to(xtr)
        xte = std.transform(xte) @ project.to(xte)
    if kind == "classification":
        present = torch.unique(ytr)
        proba = torch.zeros(xte.shape[0], n_classes, dtype=torch.float64, device=xte.device)
        if present.numel() < 2:  # one class in this training fold: constant prediction
            proba[:, int(present[0])] = 1.0
            return proba
        probe = fit_logistic(xtr, ytr, l2=l2, rank=rank, classes=present, **fit_kw)
        proba[:, present.to(xte.device)] = probe.predict_proba(xte).double()
        return proba
    probe = fit_ridge(xtr, ytr, l2=l2, rank=None, device=fit_kw.get("device"))
    return probe.predict(xte).double()


def _metrics(kind: str, y: Tensor, pred: Tensor) -> dict[str, float]:
    if kind == "classification":
        return classification_metrics(y, pred)
    return regression_metrics(y, pred)


def cross_validate(
    x: Tensor,
    y: Tensor,
    folds: Tensor,
    *,
    kind: str,
    n_classes: int = 0,
    l2: float | Sequence[float] = 1e-3,
    rank: int | None = None,
    project: Tensor | None = None,
    fit_kw: dict[str, Any] | None = None,
    groups: Tensor | None = None,
    chosen: list[float] | None = None,
    decompositions: dict | None = None,
) -> tuple[dict[str, list[float]], Tensor]:
    """k-fold CV given a fold id per row. Returns per-fold metrics and out-of-fold predictions
    (``[row cls]`` probabilities or ``[row]`` values). With several ``l2`` values the penalty is
    chosen inside each training fold by :func:`select_l2` (grouped by ``groups``) and appended
    to ``chosen``. ``decompositions``: a dict shared by calls with the same ``x``, ``folds`` and
    ``groups`` (other targets, e.g. label controls) so that the ridge Gram eigendecompositions of
    the inner folds are computed once (results bit-identical)."""
    fit_kw = fit_kw or {}
    names = CLASSIFICATION_METRICS if kind == "classification" else REGRESSION_METRICS
    out: dict[str, list[float]] = {m: [] for m in names}
    n_folds = int(folds.max()) + 1 if folds.numel() else 0
    oof = (torch.full((x.shape[0], n_classes), float("nan"), dtype=torch.float64)
           if kind == "classification" else torch.full((x.shape[0],), float("nan"), dtype=torch.float64))
    for f in range(n_folds):
        te = folds == f
        tr = ~te
        if int(te.sum()) == 0 or int(tr.sum()) == 0:
            for m in names:
                out[m].append(float("nan"))
            continue
        xtr, ytr = x[tr], y[tr]
        if isinstance(l2, (int, float)):
            lam = float(l2)
        else:
            if groups is None:
                raise ProbeInputError("choosing l2 by inner CV needs the rows' groups")
            xs = xtr
            if project is not None:
                st = Standardizer.fit(xtr)
                xs = st.transform(xtr) @ project.to(xtr)
            lam = select_l2(xs, ytr, groups[tr], list(l2), kind=kind, n_classes=n_classes, rank=rank,
                            seed=int(fit_kw.get("seed", 0)), fit_kw=fit_kw,
                            decompositions=None if decompositions is None or project is not None
                            else decompositions.setdefault(f, {}))
        if chosen is not None:
            chosen.append(lam)
        pred = _fit_predict(xtr, ytr, x[te], kind=kind, n_classes=n_classes, l2=lam, rank=rank,
                            project=project, fit_kw=fit_kw).cpu()
        oof[te.cpu()] = pred
        for m, v in _metrics(kind, y[te].cpu(), pred).items():
            out[m].append(v)
    return out, oof


def _bootstrap(kind: str, y: Tensor, oof: Tensor, groups: Tensor, n_boot: int, seed: int,
               metric_names: Sequence[str], n_classes: int) -> dict[str, Tensor]:
    """Metric samples over bootstrap resamples of prompts (split groups)."""
    g = torch.Generator().manual_seed(seed)
    uniq, inv = torch.unique(groups, return_inverse=True)
    rows_of = [torch.nonzero(inv == i).flatten() for i in range(uniq.numel())]
    skip_auc = kind == "classification" and n_classes > 10
    samples: dict[str, list[float]] = {m: [] for m in metric_names}
    for _ in range(n_boot):
        pick = torch.randint(0, uniq.numel(), (uniq.numel(),), generator=g)
        idx = torch.cat([rows_of[int(i)] for i in pick])
        if kind == "classification":
            p = oof[idx]
            pred = p.argmax(1)
            fns = {"accuracy": lambda: accuracy(y[idx], pred), "macro_f1": lambda: macro_f1(y[idx], pred),
                   "roc_auc": lambda: float("nan") if skip_auc else roc_auc(y[idx], p)}
        else:
            yt, yp = y[idx], oof[idx]
            fns = {"r2": lambda: r2_score(yt, yp), "mae": lambda: mae(yt, yp), "spearman": lambda: spearman(yt, yp)}
        for m in metric_names:  # only the metrics asked for (the controls need just the primary one)
            samples[m].append(fns[m]())
    return {m: torch.tensor(v, dtype=torch.float64) for m, v in samples.items()}


def probe_sweep(
    data: ProbeData,
    target: Target,
    *,
    hooks: Sequence[str] | None = None,
    by: Literal["layer", "position", "span"] = "layer",
    spans: Any = None,
    folds: int = 5,
    l2: float | Sequence[float] | Literal["auto"] | None = None,
    rank: int | None = None,
    controls: Sequence[str] = CONTROLS,
    ci: Literal["t", "bootstrap"] = "t",
    level: float = 0.95,
    n_boot: int = 200,
    min_rows_per_cell: int = 0,
    seed: int = 0,
    device: str | torch.device | None = None,
    max_iter: int = 500,
    tol: float = 1e-4,
    progress: bool = False,
) -> SweepResult:
    """Fit and score a probe for ``target`` at every hook (x position / span).

    Probe: logistic (L2, L-BFGS) for classification targets, ridge for regression targets
    (:mod:`probes._models`), with standardisation fitted on each training fold.

    Args:
        data: activations (:func:`probes.collect` or :meth:`ProbeData.from_tensors`).
        target: labels built from ``data`` (:mod:`probes.targets`); its rows must align.
        hooks: which hooks of ``data`` to probe (default: all, in order).
        by: ``"layer"`` -- one probe per hook on all valid tokens (controls, confusion matrix,
            intervals); ``"position"`` -- one probe per hook and absolute position (heatmap);
            ``"span"`` -- one probe per hook and schema span (``spans`` required).
        folds: k of the grouped k-fold CV (folds are over prompts; identical prompts share one).
        l2: penalty (see :func:`probes.fit_logistic` / :func:`probes.fit_ridge`): a number, a
            list of candidates or ``"auto"`` (:data:`AUTO_L2`) -- then chosen inside every
            training fold by an inner 3-fold grouped CV (never looking at the test fold).
            Default: ``"auto"`` for ridge (cheap: one eigendecomposition per inner fold),
            ``1e-3`` for logistic.
        controls: any of ``"control_task"``, ``"shuffled"``, ``"random_direction"`` (``by="layer"`` only).
        ci: ``"t"`` (t-interval over folds) or ``"bootstrap"`` (resampling prompts, ``n_boot``).
        min_rows_per_cell: skip cells (positions/spans) with fewer valid rows (NaN).
        device: fit on this device (e.g. ``"cuda"``); features are moved there per hook.
    """
    target.check_aligned(data)
    hooks = list(hooks) if hooks is not None else data.hooks
    unknown = [h for h in hooks if h not in data.features]
    if unknown:
        raise KeyError(f"hooks {unknown} are not in the data; captured hooks: {data.hooks}")
    bad_controls = [c for c in controls if c not in CONTROLS]
    if bad_controls:
        raise ProbeInputError(f"unknown controls {bad_controls}; choose from {CONTROLS}")
    valid = target.valid
    if int(valid.sum()) == 0:
        raise ProbeInputError(f"target {target.name!r} has no valid rows")
    kind = target.kind
    y_all = target.values[valid]
    n_classes = 0
    classes: Tensor | None = None
    if kind == "classification":
        classes, y = torch.unique(y_all, return_inverse=True)
        n_classes = classes.numel()
        if n_classes < 2:
            raise ProbeInputError(
                f"target {target.name!r} has a single class ({classes.tolist()}) on its valid rows: nothing to probe"
            )
    else:
        y = y_all.double()
        if float(y.std()) == 0.0:
            raise ProbeInputError(f"target {target.name!r} is constant on its valid rows: nothing to probe")
    split_groups = data.split_groups[valid]
    fold = group_folds(split_groups, folds, seed=seed)
    tokens = data.tokens[valid]
    positions = data.positions[valid]

    # cells -----------------------------------------------------------------------------
    if by == "layer":
        cell_names = ["all"]
        cell_of = torch.zeros(y.shape[0], dtype=torch.long)
    elif by == "position":
        pos_u = torch.unique(positions)
        cell_names = [str(int(p)) for p in pos_u]
        cell_of = torch.searchsorted(pos_u, positions)
    elif by == "span":
        if spans is None:
            raise ProbeInputError("by='span' needs spans (one {name: (start, end)} dict per prompt, or a Schema)")
        from probes.targets import span_identity

        sid = span_identity(data, spans)
        cell_names = list(sid.class_names or [])
        cell_of = torch.where(sid.valid, sid.values, torch.full_like(sid.values, -1))[valid]
    else:
        raise ProbeInputError(f"by must be 'layer', 'position' or 'span', got {by!r}")

    metric_names = CLASSIFICATION_METRICS if kind == "classification" else REGRESSION_METRICS
    primary = PRIMARY[kind]
    if l2 is None:
        l2 = DEFAULT_L2.get(kind, "auto")
    if isinstance(l2, str):
        if l2 != "auto":
            raise ProbeInputError(f"l2 must be a number, a list of numbers or 'auto', got {l2!r}")
        l2 = AUTO_L2[kind]
    l2_arg: float | list[float] = float(l2) if isinstance(l2, (int, float)) else [float(v) for v in l2]
    l2_chosen = torch.full((len(hooks), len(cell_names), folds), float("nan"), dtype=torch.float64)
    fit_kw = {"max_iter": max_iter, "tol": tol, "device": device, "seed": seed}
    n_h, n_c = len(hooks), len(cell_names)
    grid = {m: torch.full((n_h, n_c, folds), float("nan"), dtype=torch.float64) for m in metric_names}
    ctrl_names = list(controls) if by == "layer" else []
    ctrl = {c: {m: torch.full((n_h, folds), float("nan"), dtype=torch.float64) for m in metric_names}
            for c in ctrl_names}
    confusion = (torch.zeros(n_h, n_classes, n_classes, dtype=torch.long)
                 if by == "layer" and kind == "classification" and n_classes <= 256 else None)
    ci_out: dict[str, Tensor] = {}
    ctrl_labels = {}
    if "control_task" in ctrl_names:
        ctrl_labels["control_task"] = control_task_labels(tokens, y, torch.ones_like(y, dtype=torch.bool), seed=seed + 1)
    if "shuffled" in ctrl_names:
        ctrl_labels["shuffled"] = shuffled_labels(y, torch.ones_like(y, dtype=torch.bool), seed=seed + 2)
    boot: dict[str, Tensor] = {}

    def _sweep_hook(hi: int, x_full: Tensor) -> None:
        for ci_, _ in enumerate(cell_names):
            rows = (cell_of == ci_).nonzero().flatten()
            if rows.numel() < max(min_rows_per_cell, 2):
                continue
            x, yy, ff = x_full[rows.to(x_full.device)], y[rows], fold[rows]
            if kind == "regression" and float(yy.std()) == 0.0:
                continue  # a single position has a constant absolute-position target
            chosen: list[float] = []
            shared: dict = {}  # the inner-fold Gram eigendecompositions, reused by the label controls
            res, oof = cross_validate(x, yy, ff, kind=kind, n_classes=n_classes, l2=l2_arg, rank=rank,
                                      fit_kw=fit_kw, groups=split_groups[rows], chosen=chosen,
                                      decompositions=shared)
            present_folds = [f for f in range(folds) if bool(((ff == f).any()) and bool((ff != f).any()))]
            for f, lam in zip(present_folds, chosen):
                l2_chosen[hi, ci_, f] = lam
            for m in metric_names:
                grid[m][hi, ci_] = torch.tensor(res[m], dtype=torch.float64)
            if by != "layer":
                continue
            if confusion is not None:
                ok = ~torch.isnan(oof[:, 0])
                confusion[hi] = confusion_matrix(yy[ok], oof[ok].argmax(1), n_classes)
            oofs = {"task": oof}
            for c in ctrl_names:
                if c == "random_direction":
                    k = 1 if (kind == "regression" or n_classes == 2) else min(n_classes, x.shape[1])
                    proj = random_directions(x.shape[1], k, seed=seed + 3 + hi, dtype=x.dtype)
                    cres, coof = cross_validate(x, yy, ff, kind=kind, n_classes=n_classes, l2=l2_arg,
                                                project=proj, fit_kw=fit_kw, groups=split_groups[rows])
                else:
                    cres, coof = cross_validate(x, ctrl_labels[c][rows], ff, kind=kind, n_classes=n_classes,
                                                l2=l2_arg, rank=rank, fit_kw=fit_kw, groups=split_groups[rows],
                                                decompositions=shared)
                oofs[c] = coof
                for m in metric_names:
                    ctrl[c][m][hi] = torch.tensor(cres[m], dtype=torch.float64)
            if ci == "bootstrap":
                bt = _bootstrap(kind, yy, oof, split_groups[rows], n_boot, seed, metric_names, n_classes)
                for m, s in bt.items():
                    boot.setdefault(m, torch.full((n_h, n_boot), float("nan"), dtype=torch.float64))[hi] = s
                for c in ctrl_names:
                    lab = ctrl_labels.get(c, y)[rows]
                    bc = _bootstrap(kind, lab, oofs[c], split_groups[rows], n_boot, seed, [primary], n_classes)
                    boot.setdefault(f"{c}.{primary}", torch.full((n_h, n_boot), float("nan"), dtype=torch.float64))[hi] = bc[primary]


    it = enumerate(hooks)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(list(it), desc=f"probe {target.name}")
    for hi, hook in it:
        x_full = data.features[hook][valid]
        check_features(x_full, name=f"features[{hook!r}]")
        if device is not None:
            x_full = x_full.to(device)
        with _small_problem_threads(float(x_full.shape[0]) * float(x_full.shape[1]) * 8):
            _sweep_hook(hi, x_full)

    scores = {m: g[:, 0, :] for m, g in grid.items()} if by == "layer" else {}
    selectivity = None
    if by == "layer":
        if "control_task" in ctrl_names:
            control = ctrl["control_task"][primary]
            if kind == "regression":  # R^2 below 0 is worse than predicting the mean: clip at chance
                control = control.clamp_min(0.0)
            selectivity = scores[primary] - control
        for name, arr in [*scores.items(), *((f"{c}.{primary}", ctrl[c][primary]) for c in ctrl_names)] + (
            [("selectivity", selectivity)] if selectivity is not None else []
        ):
            if ci == "bootstrap" and name in boot:
                ci_out[name] = torch.tensor([percentile_interval(boot[name][h], level) for h in range(n_h)])
            elif ci == "bootstrap" and name == "selectivity":
                cb = boot[f"control_task.{primary}"]
                diff = boot[primary] - (cb.clamp_min(0.0) if kind == "regression" else cb)
                ci_out[name] = torch.tensor([percentile_interval(diff[h], level) for h in range(n_h)])
            else:
                ci_out[name] = torch.tensor([t_interval(arr[h], level) for h in range(n_h)])

    meta = {
        "model": data.meta.get("model", "unknown"),
        "prepend_bos": bool(data.prepend_bos),
        "dtype": data.meta.get("dtype", str(next(iter(data.features.values())).dtype)),
        "probe": "logistic" if kind == "classification" else "ridge",
        "l2": l2_arg,
        "l2_selection": "inner 3-fold grouped CV per training fold" if isinstance(l2_arg, list) else "fixed",
        "rank": rank,
        "folds": folds,
        "ci": ci,
        "level": level,
        "n_boot": n_boot if ci == "bootstrap" else None,
        "seed": seed,
        "n_rows": int(y.shape[0]),
        "n_prompts": int(torch.unique(data.groups[valid]).numel()),
        "n_split_groups": int(torch.unique(split_groups).numel()),
        "target_meta": target.meta,
        "split": "grouped k-fold over prompts (identical token sequences share a group)",
    }
    class_names = target.class_names
    if kind == "classification" and classes is not None:
        if class_names is not None:
            class_names = [class_names[int(c)] for c in classes]
        else:
            class_names = [str(int(c)) for c in classes]
    return SweepResult(
        target=target.name,
        kind=kind,
        by=by,
        hooks=hooks,
        labels=[hook_label(h) for h in hooks],
        layers=[hook_layer(h) for h in hooks],
        cells=cell_names,
        primary=primary,
        scores=scores,
        grid=grid if by != "layer" else {},
        controls=ctrl,
        selectivity=selectivity,
        ci=ci_out,
        confusion=confusion,
        class_names=class_names,
        meta=meta,
        l2_chosen=l2_chosen[:, 0, :] if by == "layer" else l2_chosen,
    )
