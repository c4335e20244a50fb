"""Mechanism atlas: the five analyses explain each other on the same prompts.

Three lines in a notebook::

    m = interp.load_model("toy-induction")
    a = interp.atlas(m)                 # the toy's own task; "ioi" etc. on real models
    a.card("L1H1")["label"]; a.plot(); a.save_html("atlas.html")

``interp.atlas`` is both this module and its entry point: calling the module calls
:func:`atlas`. See :mod:`interp.atlas._build` for the definitions and citations.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from interp.atlas._build import atlas
from interp.atlas.result import Atlas, CausalCheck

__all__ = ["atlas", "Atlas", "CausalCheck"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Atlas:
        return atlas(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
