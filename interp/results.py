"""Base class for analysis results: small dataclasses of named-axis tensors.

Every result is a ``@dataclass`` subclassing :class:`Result`. ``to_json()`` turns it into plain
JSON-serialisable Python (tensors become nested lists, rounded to ``float_digits``); ``save_json``
writes it atomically. Subclasses add ``plot() -> plotly.graph_objects.Figure`` and, where a
ranking makes sense, ``top(n)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Result", "to_jsonable", "head_label", "atomic_write_text"]


def head_label(layer: int, head: int) -> str:
    """The project-wide head label, ``L{layer}H{head}`` (0-indexed)."""
    return f"L{layer}H{head}"


def to_jsonable(obj: Any, float_digits: int | None = 6) -> Any:
    """Convert tensors, arrays, dataclasses, paths and dtypes into JSON-serialisable values.

    Non-finite floats become ``None`` (JSON has no NaN/Inf).
    """

    def fix(x: float) -> float | None:
        if not math.isfinite(x):
            return None
        return round(x, float_digits) if float_digits is not None else x

    if isinstance(obj, Result):
        return obj.to_json()
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        if obj.dtype in (torch.bfloat16, torch.float16):
            obj = obj.float()
        obj = obj.numpy()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            return to_jsonable(obj.tolist(), float_digits)
        return obj.tolist()
    if isinstance(obj, (np.floating, float)):
        return fix(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, float_digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, float_digits) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name), float_digits) for f in dataclasses.fields(obj)}
    if isinstance(obj, (Path, torch.dtype, torch.device)):
        return str(obj)
    return obj


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@dataclasses.dataclass
class Result:
    """Mixin for result dataclasses: JSON export with metadata."""

    def to_json(self) -> dict[str, Any]:
        """All fields as JSON-serialisable values, plus ``"type"``: the class name."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):
            if f.metadata.get("json", True):
                out[f.name] = to_jsonable(getattr(self, f.name))
        return out

    def save_json(self, path: str | os.PathLike[str], **dumps_kwargs: Any) -> Path:
        """Write :meth:`to_json` to ``path`` atomically."""
        return atomic_write_text(path, json.dumps(self.to_json(), **dumps_kwargs))
