"""The :class:`Task` container."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from circuits.metrics import Metric


@dataclass
class Task:
    """Clean/counterfactual prompts with their schema and metric, ready for
    :func:`circuits.attribute` (``attribute(model, task)``).

    Attributes:
        name: task name (recorded in results).
        clean, corrupt: ``interp.TokenBatch`` (right padding, BOS policy recorded).
        schema: ``interp.Schema`` whose spans cover every clean and corrupt prompt.
        metric: differentiable metric on logits (per example).
        answers: per example, dict of answer strings/ids (e.g. ``correct``, ``wrong``).
        meta: generator parameters (seed, templates, pools, ...).
    """

    name: str
    clean: Any
    corrupt: Any
    schema: Any
    metric: Metric
    answers: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clean.lengths)

    def __repr__(self) -> str:
        return (f"Task({self.name!r}, n={len(self)}, spans={list(getattr(self.schema, 'names', []))}, "
                f"metric={self.metric.name})")
