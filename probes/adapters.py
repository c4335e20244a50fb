"""Thin adapters from interp's capture/schema objects to probe inputs.

``spans_from`` normalises span descriptions to ``list[dict[name, (start, end)]]`` (one dict per
prompt, half-open, the prompt's own token coordinates). ``probe_data_from_store`` turns an
``interp.capture.ActivationStore`` into :class:`probes.data.ProbeData`.
"""

from __future__ import annotations

from typing import Any, Sequence

from probes.errors import ProbeInputError

__all__ = ["spans_from", "probe_data_from_store"]


def _rows_to_dicts(names: Sequence[str], rows: Sequence[Any]) -> list[dict[str, tuple[int, int]]]:
    out = []
    for i, row in enumerate(rows):
        if row is None:
            raise ProbeInputError(
                f"example {i} does not fit the schema, so its spans are unknown; "
                "keep only fitting examples (spans.subset(spans.valid)) or fix the prompts"
            )
        out.append({str(n): (int(s), int(e)) for n, (s, e) in zip(names, row)})
    return out


def spans_from(spans: Any) -> list[dict[str, tuple[int, int]]]:
    """Per-prompt ``{span name: (start, end)}`` from a list of dicts, an
    ``interp.schema.SchemaSpans`` (``Schema.apply``), or an ``ActivationStore`` captured with a schema."""
    if hasattr(spans, "span_names") and hasattr(spans, "spans"):  # ActivationStore
        if spans.span_names is None or spans.spans is None:
            raise ProbeInputError("this ActivationStore was captured without a schema: pass schema= to interp.capture")
        return _rows_to_dicts(spans.span_names, spans.spans)
    if hasattr(spans, "names") and hasattr(spans, "spans") and not isinstance(spans, (list, tuple)):  # SchemaSpans
        return _rows_to_dicts(spans.names, spans.spans)
    if type(spans).__name__ == "Schema":
        raise ProbeInputError("a Schema has no token positions yet: pass schema.apply(prompts, model) (SchemaSpans)")
    obj = spans
    if not isinstance(obj, (list, tuple)):
        raise ProbeInputError(
            f"cannot read spans from {type(spans).__name__}: pass a list with one "
            "{name: (start, end)} dict per prompt, or interp SchemaSpans"
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


def probe_data_from_store(store: Any, hooks: Sequence[str] | None = None, *, dtype: Any = None):
    """``ProbeData`` from an ``interp.capture.ActivationStore``: :meth:`probes.data.ProbeData.from_store`."""
    from probes.data import ProbeData

    return ProbeData.from_store(store, hooks, dtype=dtype)
