"""Thin adapters from interp's capture/schema objects to probe inputs.

``spans_from`` normalises span descriptions to ``list[dict[name, (start, end)]]`` (one dict per
prompt, half-open, the prompt's own token coordinates). ``probe_data_from_store`` turns an
``interp.capture.ActivationStore`` into :class:`probes.data.ProbeData`.
"""

from __future__ import annotations

from typing import Any, Sequence

from probes.errors import ProbeInputError

__all__ = ["spans_from", "probe_data_from_store"]


def spans_from(spans: Any) -> list[dict[str, tuple[int, int]]]:
    """Per-prompt ``{span name: (start, end)}`` from a list of dicts or a schema-like object."""
    obj = spans
    for attr in ("to_spans", "span_dicts"):
        if hasattr(obj, attr) and callable(getattr(obj, attr)):
            obj = getattr(obj, attr)()
            break
    else:
        if hasattr(obj, "spans") and not isinstance(obj, (list, tuple)):
            obj = obj.spans
    if not isinstance(obj, (list, tuple)):
        raise ProbeInputError(
            f"cannot read spans from {type(spans).__name__}: pass a list with one "
            "{name: (start, end)} dict per prompt"
        )
    out: list[dict[str, tuple[int, int]]] = []
    for i, d in enumerate(obj):
        if isinstance(d, dict):
            out.append({str(k): (int(v[0]), int(v[1])) for k, v in d.items()})
        elif isinstance(d, (list, tuple)):  # [(name, start, end), ...]
            out.append({str(n): (int(s), int(e)) for n, s, e in d})
        else:
            raise ProbeInputError(f"spans of prompt {i} must be a dict name -> (start, end), got {type(d).__name__}")
    return out


def probe_data_from_store(store: Any, hooks: Sequence[str] | None = None):
    """``ProbeData`` from an ``interp.capture.ActivationStore``."""
    raise NotImplementedError("ActivationStore adapter: filled in once interp.capture lands")
