"""Where a result came from: the model's display name, prompt hashes and package versions.

One implementation of each, shared by results, reports, the activation store, probes and
circuits. It imports nothing from the rest of ``interp`` but :mod:`interp.types`, so every
module can use it.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from typing import Any

from interp.types import Model

__all__ = ["model_name", "prompt_hash", "package_versions", "VERSIONED_PACKAGES"]

#: the distributions whose versions a report or an activation store records
VERSIONED_PACKAGES: tuple[str, ...] = ("posinterp", "torch", "transformers", "transformer-lens", "safetensors",
                                       "plotly", "numpy", "gguf", "jaxtyping", "typer")


def model_name(model: Model) -> str:
    """The model's display name, the one every result, report and store records.

    In order: the name given to :func:`interp.load_model` (``model.interp_info.name``, e.g.
    ``"smollm2-135m"``), the bridge's ``cfg.model_name``, the HF config's ``_name_or_path``,
    and last the model's class name. Works on a ``TransformerBridge`` and on a bare HF model.
    """
    info = getattr(model, "interp_info", None)
    name = getattr(info, "name", None)
    if name:
        return str(name)
    name = getattr(getattr(model, "cfg", None), "model_name", None)
    if name:
        return str(name)
    hf = getattr(model, "original_model", model)
    name = getattr(getattr(hf, "config", None), "_name_or_path", None)
    if name:
        return str(name)
    return type(model).__name__


def prompt_hash(text: str) -> str:
    """SHA-256 (hex, first 16 characters) of a prompt's UTF-8 text: identifies a prompt in
    metadata without storing it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def package_versions(packages: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, str | None]:
    """``{"python": ..., package: version}`` for ``packages``; ``None`` for one not installed."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out
