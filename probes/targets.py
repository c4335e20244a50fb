"""Probe targets aligned with :class:`probes.data.ProbeData` rows.

A :class:`Target` holds one label per row plus a ``valid`` mask (rows where the label is
undefined -- e.g. the token 3 ahead of the last token -- are excluded from fitting and scoring)
and the row keys ``(groups, positions)`` it was built for; sweeps refuse a target whose keys
differ from the data's (:class:`~probes.errors.LabelAlignmentError`).

Builders:
    absolute_position   y = position of the token in its prompt (BOS = 0 when prepended)
    relative_position   y = position - anchor of a schema span (start, or end - 1)
    span_identity       y = index of the schema span containing the token
    token_at_offset     y = token id at position + k (k < 0: previous tokens, k > 0: future)
    labels              any user label, per example (broadcast to its tokens) or per token

Spans are given per prompt as ``{name: (start, end)}`` (half-open, own token coordinates, BOS
included) or as anything with a ``spans`` attribute / ``to_spans()`` method (see
:mod:`probes.adapters` for ``interp.Schema``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from probes.data import ProbeData
from probes.errors import LabelAlignmentError, ProbeInputError

__all__ = [
    "Target",
    "absolute_position",
    "relative_position",
    "span_identity",
    "token_at_offset",
    "labels",
    "SpanList",
]

TargetKind = Literal["classification", "regression"]
SpanList = Sequence[dict[str, tuple[int, int]]]


@dataclass
class Target:
    """One label per probe row. ``values`` are long class labels or float regression targets."""

    name: str
    kind: TargetKind
    values: Tensor
    valid: Bool[Tensor, " row"]
    groups: Int[Tensor, " row"]
    positions: Int[Tensor, " row"]
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.groups.shape[0]
        if self.values.shape[0] != n or self.valid.shape[0] != n or self.positions.shape[0] != n:
            raise LabelAlignmentError("target values/valid/groups/positions must all have one entry per row")
        if self.kind == "classification":
            self.values = self.values.long()
        else:
            self.values = self.values.double()
            self.valid = self.valid & torch.isfinite(self.values)

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def check_aligned(self, data: ProbeData) -> None:
        """Raise :class:`LabelAlignmentError` unless this target was built for ``data``'s rows."""
        if self.groups.shape[0] != data.n_rows:
            raise LabelAlignmentError(
                f"target {self.name!r} has {self.groups.shape[0]} rows but the activations have {data.n_rows}; "
                "build the target from the same ProbeData (e.g. probes.absolute_position(data))"
            )
        if not (torch.equal(self.groups, data.groups) and torch.equal(self.positions, data.positions)):
            bad = ((self.groups != data.groups) | (self.positions != data.positions)).nonzero().flatten()
            i = int(bad[0])
            raise LabelAlignmentError(
                f"target {self.name!r} is not aligned with the activations: row {i} is "
                f"(prompt {int(self.groups[i])}, pos {int(self.positions[i])}) in the target but "
                f"(prompt {int(data.groups[i])}, pos {int(data.positions[i])}) in the data "
                f"({bad.numel()} rows differ); build it from the same ProbeData"
            )

    def with_values(self, values: Tensor, name: str | None = None, **meta: Any) -> Target:
        return Target(name or self.name, self.kind, values, self.valid.clone(), self.groups, self.positions,
                      self.class_names, {**self.meta, **meta})

    def restrict(self, mask: Bool[Tensor, " row"]) -> Target:
        """Same rows, fewer valid ones."""
        return Target(self.name, self.kind, self.values, self.valid & mask, self.groups, self.positions,
                      self.class_names, dict(self.meta))


def _base(data: ProbeData, name: str, kind: TargetKind, values: Tensor, valid: Tensor, **kw: Any) -> Target:
    return Target(name, kind, values, valid, data.groups, data.positions, **kw)


def absolute_position(
    data: ProbeData,
    *,
    kind: TargetKind = "regression",
    exclude_bos: bool = True,
    max_position: int | None = None,
) -> Target:
    """Absolute position of each token (BOS at 0 when prepended).

    Args:
        kind: ``"regression"`` (ridge; R^2 / MAE in positions) or ``"classification"``
            (one class per position; accuracy / confusion matrix).
        exclude_bos: drop the BOS row (position 0) when ``data.prepend_bos`` -- it is the same
            token in every prompt, so it is trivially identifiable.
        max_position: drop rows beyond this position (keeps classes populated).
    """
    valid = torch.ones(data.n_rows, dtype=torch.bool)
    if exclude_bos and data.prepend_bos:
        valid &= data.positions != 0
    if max_position is not None:
        valid &= data.positions <= max_position
    vals = data.positions.clone() if kind == "classification" else data.positions.double()
    return _base(data, "absolute_position", kind, vals, valid, meta={"exclude_bos": exclude_bos and data.prepend_bos})


def _spans_list(spans: Any, n_prompts: int) -> list[dict[str, tuple[int, int]]]:
    from probes.adapters import spans_from

    out = spans_from(spans)
    if len(out) != n_prompts:
        raise LabelAlignmentError(f"got spans for {len(out)} prompts but the data has {n_prompts} prompts")
    return out


def relative_position(
    data: ProbeData,
    spans: Any,
    span: str,
    *,
    anchor: Literal["start", "end"] = "start",
    kind: TargetKind = "regression",
    window: tuple[int, int] | None = None,
) -> Target:
    """Signed distance ``position - anchor`` to span ``span`` (anchor = its first token, or its
    last token with ``anchor="end"``). ``window=(lo, hi)`` keeps rows with ``lo <= y <= hi``."""
    sp = _spans_list(spans, data.n_prompts)
    anchors = torch.empty(data.n_prompts, dtype=torch.long)
    for g, d in enumerate(sp):
        if span not in d:
            raise ProbeInputError(f"prompt {g} has no span {span!r}; its spans are {list(d)}")
        s, e = d[span]
        anchors[g] = s if anchor == "start" else e - 1
    rel = data.positions - anchors[data.groups]
    valid = torch.ones(data.n_rows, dtype=torch.bool)
    if window is not None:
        valid &= (rel >= window[0]) & (rel <= window[1])
    vals = rel if kind == "classification" else rel.double()
    return _base(data, f"relative_position[{span}.{anchor}]", kind, vals, valid)


def span_identity(data: ProbeData, spans: Any, *, names: Sequence[str] | None = None) -> Target:
    """Class = which span contains the token. Tokens in no span are invalid."""
    sp = _spans_list(spans, data.n_prompts)
    if names is None:
        names = list(dict.fromkeys(k for d in sp for k in d))
    index = {n: i for i, n in enumerate(names)}
    lab = torch.full((data.n_rows,), -1, dtype=torch.long)
    g_list, p_list = data.groups.tolist(), data.positions.tolist()
    for r, (g, p) in enumerate(zip(g_list, p_list)):
        for n, (s, e) in sp[g].items():
            if s <= p < e and n in index:
                lab[r] = index[n]
                break
    valid = lab >= 0
    return _base(data, "span_identity", "classification", lab.clamp_min(0), valid, class_names=list(names))


def token_at_offset(data: ProbeData, k: int, *, top_k: int | None = None) -> Target:
    """Class = token id at ``position + k`` in the same prompt (``k=-1``: previous token,
    ``k=0``: current, ``k=+1``: next). Rows whose offset falls outside the prompt are invalid;
    with ``top_k`` only rows whose target is one of the ``top_k`` most frequent ids are kept."""
    idx = data.row_index()
    lab = torch.full((data.n_rows,), -1, dtype=torch.long)
    toks = data.tokens.tolist()
    for r, (g, p) in enumerate(zip(data.groups.tolist(), data.positions.tolist())):
        j = idx.get((g, p + k))
        if j is not None:
            lab[r] = toks[j]
    valid = lab >= 0
    if top_k is not None:
        ids, counts = torch.unique(lab[valid], return_counts=True)
        keep = ids[torch.argsort(counts, descending=True, stable=True)[:top_k]]
        valid &= torch.isin(lab, keep)
    return _base(data, f"token_at_offset[{k:+d}]", "classification", lab.clamp_min(0), valid, meta={"offset": k})


def labels(
    data: ProbeData,
    values: Any,
    *,
    name: str = "label",
    kind: TargetKind | None = None,
) -> Target:
    """A user label, per example or per token.

    ``values`` may be:
      * one value per prompt (length ``n_prompts``) -- broadcast to all its tokens;
      * one sequence per prompt with one value per token (lengths must match the prompts);
      * a flat tensor with one value per row (same order as ``data``).
    Strings become classes (``class_names``); floats give a regression target unless ``kind``
    says otherwise. ``None``/NaN entries mark rows invalid.
    """
    n_rows, n_prompts = data.n_rows, data.n_prompts
    lengths = data.lengths.tolist()
    flat: list[Any]

    def _is_seq(v: Any) -> bool:
        return (isinstance(v, Tensor) and v.ndim > 0) or (isinstance(v, (list, tuple)))

    if isinstance(values, Tensor) and values.ndim == 1 and values.shape[0] == n_rows:
        flat = values.tolist()  # one per row (if n_rows == n_prompts both readings agree)
    elif isinstance(values, Tensor) and values.ndim == 1 and values.shape[0] == n_prompts:
        per = values.tolist()
        flat = [per[g] for g in data.groups.tolist()]
    elif isinstance(values, (list, tuple)) and len(values) == n_prompts and not any(_is_seq(v) for v in values):
        per = [v.item() if isinstance(v, Tensor) else v for v in values]
        flat = [per[g] for g in data.groups.tolist()]
    elif isinstance(values, (list, tuple)) and len(values) == n_prompts and all(_is_seq(v) for v in values):
        per_tok = [v.tolist() if isinstance(v, Tensor) else list(v) for v in values]
        for g, (v, L) in enumerate(zip(per_tok, lengths)):
            if len(v) != L:
                raise LabelAlignmentError(
                    f"prompt {g} has {L} captured tokens but {len(v)} labels; per-token labels need one "
                    f"entry per token{' (BOS included)' if data.prepend_bos else ''} -- use None for unlabelled tokens"
                )
        flat = [per_tok[g][p] for g, p in zip(data.groups.tolist(), data.positions.tolist())]
    elif isinstance(values, (list, tuple)) and len(values) == n_rows and n_rows != n_prompts:
        flat = [v.item() if isinstance(v, Tensor) else v for v in values]
    else:
        got = tuple(values.shape) if isinstance(values, Tensor) else (len(values) if hasattr(values, "__len__") else type(values).__name__)
        raise LabelAlignmentError(
            f"labels do not align with the captured activations: got {got}, expected {n_prompts} values "
            f"(one per prompt), {n_prompts} per-token sequences (lengths {lengths[:5]}...), or {n_rows} "
            "values (one per row, in ProbeData order)"
        )
    valid = torch.tensor([v is not None and not (isinstance(v, float) and v != v) for v in flat], dtype=torch.bool)
    present = [v for v in flat if v is not None and not (isinstance(v, float) and v != v)]
    class_names = None
    if present and all(isinstance(v, str) for v in present):
        class_names = sorted(set(present))
        cidx = {c: i for i, c in enumerate(class_names)}
        vals = torch.tensor([cidx[v] if isinstance(v, str) else 0 for v in flat], dtype=torch.long)
        kind = kind or "classification"
        if kind != "classification":
            raise ProbeInputError("string labels need kind='classification'")
    else:
        is_float = any(isinstance(v, float) for v in present)
        vals = torch.tensor([float(v) if ok else 0.0 for v, ok in zip(flat, valid.tolist())], dtype=torch.float64)
        kind = kind or ("regression" if is_float else "classification")
        if kind == "classification":
            if not bool((vals == vals.round()).all()):
                raise ProbeInputError("classification labels must be integers or strings")
            vals = vals.long()
    return _base(data, name, kind, vals, valid, class_names=class_names)
