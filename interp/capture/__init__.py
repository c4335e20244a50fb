"""Per-position activation capture over variable-length prompt sets, and the activation engine.

:func:`stream` (``interp/capture/_engine.py``) is the one streaming engine every analysis runs
its forward passes through: an analysis gives a reducer (``StreamBatch -> hooks``) and the engine
tokenises, batches, masks padding, maps padded to own coordinates, streams and frees.
``capture`` is one reducer of it (crop and keep everything).

``capture(model, prompts, hooks)`` runs the model on padded batches (with attention masks; the
bridge derives RoPE position ids from the mask, so left padding gives each prompt the positions
it has unpadded) and keeps every requested hook's activations in each prompt's **own token
coordinates**: position ``t`` of example ``i`` is token ``t`` of that prompt (BOS at 0 when
prepended), padding removed. Attention patterns/scores come back per example as
``[head, len, len]``.

With ``out=DIR`` activations stream to safetensors shards (one per batch) next to a JSON
manifest, so memory stays flat however many prompts there are. The manifest is written first
with ``"complete": false`` and rewritten (atomically) with ``"complete": true`` only after the
last shard; each shard is written to a temporary file and renamed, so a shard on disk is always
whole. Running the same ``capture`` again on an interrupted directory computes only the
missing shards. :meth:`ActivationStore.load` reopens a store lazily (tensors are read from the
shard files on access).

Schema spans (:mod:`interp.schema`; Haklay et al. 2025) give prompts of different lengths a
shared position structure; :meth:`ActivationStore.by_span` reduces every span of every example
to one vector: ``x̄_{i,s} = R(x_i[start_s:end_s])`` with ``R`` one of mean, sum, first, last.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from interp.capture._common import (
    CaptureError, IncompleteStoreError, ManifestMismatchError, UnknownHookError, resolve_hooks,
)
from interp.capture._engine import Hook, Reducer, StreamBatch, stream, valid_mask
from interp.capture._run import capture
from interp.capture._store import ActivationStore

__all__ = [
    "capture", "ActivationStore", "resolve_hooks", "CaptureError", "UnknownHookError",
    "ManifestMismatchError", "IncompleteStoreError", "stream", "StreamBatch", "Hook", "Reducer", "valid_mask",
]


class _CallableModule(types.ModuleType):
    """``interp.capture`` is both this package and the function: once ``import interp.capture``
    has bound the package as ``interp.capture``, ``from interp import capture; capture(...)``
    still works."""

    def __call__(self, *args: Any, **kwargs: Any) -> ActivationStore:
        return capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
