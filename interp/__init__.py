"""interp — position-aware mechanistic interpretability on TransformerLens.

Public API (imported lazily so ``import interp`` stays fast)::

    load_model, known_models            # interp.models
    tokenize, TokenBatch                # interp.tokens
    model_spec, ModelSpec, RopeSpec     # interp.spec
    Schema, SchemaSpans                 # interp.schema
    capture, ActivationStore            # interp.capture

``interp.atlas(model, task)`` joins them head by head (:mod:`interp.atlas`).

Analysis modules: ``interp.sinks``, ``interp.heads``, ``interp.neurons``, ``interp.rope``,
``interp.zoo``; sister packages ``probes`` and ``circuits``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "load_model": "interp.models",
    "known_models": "interp.models",
    "tokenize": "interp.tokens",
    "TokenBatch": "interp.tokens",
    "model_spec": "interp.spec",
    "ModelSpec": "interp.spec",
    "RopeSpec": "interp.spec",
    "Schema": "interp.schema",
    "SchemaSpans": "interp.schema",
    "capture": "interp.capture",
    "ActivationStore": "interp.capture",
}

_SUBMODULES = {"atlas", "sinks", "heads", "scan", "prompts", "neurons", "rope", "zoo", "plots", "results", "errors", "spec", "families",
               "schema", "capture", "models", "tokens", "cli", "reports"}

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"interp.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'interp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
