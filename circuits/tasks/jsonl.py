"""Clean/counterfactual pairs from JSONL with template slots.

One JSON object per line::

    {"template": "When {IO} and {S1} went to the {PLACE}, {S2} gave a drink to",
     "clean": {"IO": "Mary", "S1": "John", "PLACE": "store", "S2": "John"},
     "corrupt": {"IO": "Anna", "S1": "Paul", "PLACE": "store", "S2": "Tom"},
     "correct": " Mary", "wrong": " John"}

``template`` may be given once (a first line holding only ``{"template": ...}``, or the
``template=`` argument) instead of on every line; ``clean``/``corrupt`` may also be plain strings
(they must still match the template). Every line must use the same template: it becomes the
schema, so clean and counterfactual prompts may differ in token length. ``correct``/``wrong`` are
single-token answers for the logit/probability difference at the last token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from circuits.tasks._base import Task, answer_metric
from interp.types import Model

__all__ = ["load_jsonl"]


def load_jsonl(
    path: str | Path,
    model: Model,
    *,
    template: str | None = None,
    metric: Literal["logit_diff", "prob_diff"] = "logit_diff",
    prepend_bos: bool = True,
    name: str | None = None,
) -> Task:
    """Read a JSONL file of clean/corrupt pairs into a :class:`~circuits.tasks.Task`."""
    from interp.schema import Schema
    from interp.tokens import tokenize

    path = Path(path)
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{ln}: not valid JSON ({e})") from e
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{ln}: each line must be a JSON object")
            if set(obj) == {"template"}:
                if template is not None and obj["template"] != template:
                    raise ValueError(f"{path}:{ln}: a second template; one file = one template (schema)")
                template = obj["template"]
                continue
            obj["_line"] = ln
            rows.append(obj)
    if not rows:
        raise ValueError(f"{path}: no examples")
    tpls = {r.get("template", template) for r in rows}
    if None in tpls:
        raise ValueError(f"{path}: no template: give it on every line, on a first "
                         f'{{"template": ...}} line, or as template=')
    if len(tpls) > 1:
        raise ValueError(f"{path}: lines use {len(tpls)} different templates; split the file "
                         f"(one template = one schema per dataset)")
    tpl = tpls.pop()
    schema = Schema.from_template(tpl)
    clean, corrupt, correct, wrong = [], [], [], []
    for r in rows:
        for key in ("clean", "corrupt", "correct", "wrong"):
            if key not in r:
                raise ValueError(f"{path}:{r['_line']}: missing {key!r}")

        def render(v: Any, key: str) -> str:
            if isinstance(v, str):
                return v
            if isinstance(v, dict):
                try:
                    return schema.render(**{k: str(x) for k, x in v.items()})
                except Exception as e:
                    raise ValueError(f"{path}:{r['_line']}: {key}: {e}") from e
            raise ValueError(f"{path}:{r['_line']}: {key} must be a string or a slot dict")

        clean.append(render(r["clean"], "clean"))
        corrupt.append(render(r["corrupt"], "corrupt"))
        correct.append(str(r["correct"]))
        wrong.append(str(r["wrong"]))
    cb = tokenize(model, clean, prepend_bos=prepend_bos)
    xb = tokenize(model, corrupt, prepend_bos=prepend_bos)
    met = answer_metric(model, correct, wrong, metric)
    return Task(name or path.stem, cb, xb, schema, met,
                [{"correct": c, "wrong": w} for c, w in zip(correct, wrong)],
                dict(path=str(path), template=tpl, prepend_bos=prepend_bos, n=len(rows)))
