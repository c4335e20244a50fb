"""Types shared by the public signatures of ``interp``, ``probes`` and ``circuits``.

``Model`` is the model every analysis takes: the ``transformer_lens.model_bridge.TransformerBridge``
returned by :func:`interp.load_model` (the HF model is ``model.original_model``; architecture facts
come from :func:`interp.families.family_of`). For static type checkers it *is* ``TransformerBridge``.
At run time it is ``Any``: importing TransformerLens costs seconds, and several entry points also
accept a ``circuits.PatchableModel`` or a bare HF model where they say so, so the test suite's
runtime checker (beartype through jaxtyping's import hook) does not check it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Model"]

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

    Model = TransformerBridge
else:
    Model = Any
