"""circuits — position-aware circuit discovery on TransformerBridge models.

Public API (imported lazily)::

    PatchableModel, Activations          # circuits._forward: functional forward with edge patching
    AttributionGraph, Edge               # circuits.graph: edge scores per position / span
    attribute                            # circuits.attribution: EAP, EAP-IG (positional, spans)
    logit_diff, prob_diff, kl_to_clean   # circuits.metrics (also logprob, token_logit_diff)
    tasks                                # circuits.tasks: IOI, induction, position task, JSONL
    select, Circuit                      # circuits.select / circuits.circuit (selection)
    faithfulness, FaithfulnessEvaluator  # circuits.faithfulness
    faithfulness_curve, plot_curves      # circuits.curves (MIB grid, CPR/CMD)
    exact_node_scores, exact_edge_score  # circuits.attribution: exact patching references
    exact_edge_scores                    # circuits._exact: many edges, batched
    resample, Stability                  # circuits.stability: bootstrap frequencies and CIs
    estimate_memory                      # circuits.memory: bytes per part, max_memory plans
    SparseAttributionGraph, ShardedAttributionGraph  # circuits.stores: top-k / threshold / disk

Definitions and citations: REFERENCES.md (Haklay et al. 2025, arXiv:2502.04577; Hanna et al. 2024, arXiv:2403.17806).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "PatchableModel": "circuits._forward",
    "Activations": "circuits._forward",
    "AttributionGraph": "circuits.graph",
    "Edge": "circuits.graph",
    "attribute": "circuits.attribution",
    "logit_diff": "circuits.metrics",
    "prob_diff": "circuits.metrics",
    "kl_to_clean": "circuits.metrics",
    "Metric": "circuits.metrics",
    "MetricBatch": "circuits.metrics",
    "logprob": "circuits.metrics",
    "token_logit_diff": "circuits.metrics",
    "exact_node_scores": "circuits.attribution",
    "exact_edge_score": "circuits.attribution",
    "select": "circuits.select",
    "Circuit": "circuits.circuit",
    "faithfulness": "circuits.faithfulness",
    "faithfulness_curve": "circuits.curves",
    "Faithfulness": "circuits.faithfulness",
    "FaithfulnessEvaluator": "circuits.faithfulness",
    "FaithfulnessCurve": "circuits.curves",
    "plot_curves": "circuits.curves",
    "MIB_GRID": "circuits.curves",
    "resample": "circuits.stability",
    "Stability": "circuits.stability",
    "exact_edge_scores": "circuits._exact",
    "estimate_memory": "circuits.memory",
    "SparseAttributionGraph": "circuits.stores",
    "ShardedAttributionGraph": "circuits.stores",
}
_SUBMODULES = {"tasks", "graph", "attribution", "metrics", "select", "circuit", "faithfulness",
               "curves", "memory", "stores", "stability"}

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"circuits.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'circuits' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


# ``select`` and ``faithfulness`` name both a function and a submodule: bind the functions now,
# otherwise the first ``import circuits.select`` (e.g. by circuits.curves) would set the package
# attribute to the module and ``circuits.select(graph, ...)`` would fail.
from circuits.faithfulness import faithfulness  # noqa: E402
from circuits.select import select  # noqa: E402
