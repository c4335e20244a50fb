"""Report metadata, JSON conversion and atomic file writes."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import platform
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

_VERSIONED = ("posinterp", "torch", "transformers", "transformer-lens", "plotly", "numpy", "gguf",
              "jaxtyping", "typer")


def jsonable(x: Any) -> Any:
    """Convert tensors, numpy values, dataclasses and paths to plain JSON values.

    Non-finite floats become ``None`` (JSON has no NaN/Inf); a ``.to_json()`` method is used
    when an object has one.
    """
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "to_json") and callable(x.to_json) and not isinstance(x, type):
        return jsonable(x.to_json())
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return jsonable(x.detach().cpu().tolist())
        if isinstance(x, torch.dtype):
            return str(x).replace("torch.", "")
    except ImportError:  # pragma: no cover
        pass
    try:
        import numpy as np

        if isinstance(x, np.ndarray):
            return jsonable(x.tolist())
        if isinstance(x, np.generic):
            return jsonable(x.item())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, Path):
        return str(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, Sequence) or isinstance(x, (set, frozenset)):
        return [jsonable(v) for v in x]
    return str(x)


def prompt_hash(text: str) -> str:
    """SHA-256 (hex, first 16 chars) of a prompt's UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def model_metadata(model: Any) -> dict[str, Any]:
    """dtype, device and a few config fields of a TransformerBridge (best effort, never raises)."""
    meta: dict[str, Any] = {}
    try:
        p = next(model.parameters())
        meta["dtype"] = str(p.dtype).replace("torch.", "")
        meta["device"] = str(p.device)
    except Exception:  # pragma: no cover - a model without parameters
        meta["dtype"] = meta["device"] = None
    cfg = getattr(model, "cfg", None)
    for key in ("n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab"):
        meta[key] = getattr(cfg, key, None)
    return meta


def build_metadata(
    *,
    model: Any,
    model_name: str,
    prompts: Sequence[Any],
    seed: int,
    prepend_bos: bool,
    sections: Sequence[str],
    hooks: Sequence[str],
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    return {
        "model": model_name,
        **model_metadata(model),
        "prepend_bos": prepend_bos,
        "seed": seed,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "platform": platform.platform(),
        "argv": list(argv if argv is not None else sys.argv),
        "sections": list(sections),
        "hooks": sorted(set(hooks)),
        "n_prompts": len(prompts),
        "prompts": [
            {"sha256_16": prompt_hash(p.text), "domain": p.domain, "n_chars": len(p.text)} for p in prompts
        ],
    }


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``.

    A reader never sees a half-written file: either the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; a report is a normal readable file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
