"""probes -- linear probes on per-position activations, with control tasks.

Quick start::

    import probes
    from interp import load_model
    model = load_model("smollm2-135m")
    data = probes.collect(model, prompts)                    # hook_embed + every resid_post
    target = probes.absolute_position(data)                  # or relative_position, span_identity,
                                                             #    token_at_offset, labels
    res = probes.probe_sweep(data, target, folds=5)          # grouped CV + controls + CIs
    res.plot(); res.to_json(); res.top(3)

Single probes: ``probes.fit_logistic(x, y, l2=...)``, ``probes.fit_ridge(x, y, l2=...)``,
``probe.save(path)`` / ``probes.load_probe(path)``. Metrics in :mod:`probes.metrics`, controls
in :mod:`probes.controls`, splits and intervals in :mod:`probes.splits`.

References: Alain & Bengio 2016; Hewitt & Liang 2019 (control tasks, selectivity);
Haviv et al. 2022 (position without positional encodings).
"""

from __future__ import annotations

from probes._models import (
    LinearProbe,
    LogisticProbe,
    RidgeProbe,
    Standardizer,
    fit_logistic,
    load_probe,
)
from probes._ridge import fit_ridge, fit_ridge_path
from probes.controls import control_task_labels, random_directions, shuffled_labels
from probes.data import ProbeData, collect, default_hooks, hook_label
from probes.errors import LabelAlignmentError, ProbeInputError
from probes.metrics import accuracy, mae, macro_f1, r2_score, roc_auc, spearman
from probes.results import SweepResult
from probes.splits import group_folds, grouped_split
from probes.sweep import cross_validate, probe_sweep, select_l2
from probes.targets import (
    Target,
    absolute_position,
    labels,
    relative_position,
    span_identity,
    token_at_offset,
)

__all__ = [
    "LinearProbe", "LogisticProbe", "RidgeProbe", "Standardizer", "fit_logistic", "fit_ridge", "fit_ridge_path", "load_probe",
    "control_task_labels", "random_directions", "shuffled_labels",
    "ProbeData", "collect", "default_hooks", "hook_label",
    "LabelAlignmentError", "ProbeInputError",
    "accuracy", "mae", "macro_f1", "r2_score", "roc_auc", "spearman",
    "SweepResult", "group_folds", "grouped_split", "cross_validate", "probe_sweep", "select_l2",
    "Target", "absolute_position", "labels", "relative_position", "span_identity", "token_at_offset",
]
