"""Report metadata, JSON conversion and atomic file writes."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from interp.provenance import package_versions, prompt_hash
from interp.results import atomic_write_text, to_jsonable
from interp.types import Model

__all__ = ["jsonable", "prompt_hash", "package_versions", "model_metadata", "build_metadata", "atomic_write_text"]


def jsonable(x: Any) -> Any:
    """Report data and metadata as plain JSON values: :func:`interp.results.to_jsonable` with
    floats kept exact and ``lenient=True`` (an object's ``to_json()`` is used, dtypes are written
    without ``torch.``, anything else unknown becomes its ``str``)."""
    return to_jsonable(x, float_digits=None, lenient=True)


def model_metadata(model: Model) -> dict[str, Any]:
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
    model: Model,
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
