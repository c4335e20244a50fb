"""HTML + JSON analysis reports.

Usage from Python (the CLI ``interp report`` does the same)::

    from interp import load_model
    from interp.reports import build_report

    model = load_model("smollm2-135m")
    report = build_report(model, model_name="smollm2-135m", only=["model", "capture"])
    html_path, json_path = report.save("reports/smollm2-135m")

A report is a list of sections (see :data:`SECTIONS`, :func:`available_sections`); each runs
on the same model, prompt set, seed and BOS policy and ends ``ok``, ``failed`` (with the
reason) or ``skipped`` (its analysis module is absent, or it does not apply to the model).
The HTML embeds plotly.js once and opens offline; the JSON holds every number and the
metadata (model, package versions, dtype, BOS policy, seed, hooks, prompt hashes).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.reports._core import available_sections, choose_sections, run_section, run_sections
from interp.reports._registry import (
    SECTIONS,
    Prompt,
    ReportContext,
    Section,
    SectionOutput,
    SectionResult,
    SectionSkipped,
    Table,
    register_section,
    section,
)
from interp.provenance import model_name as display_name
from interp.reports._meta import atomic_write_text, build_metadata, jsonable, prompt_hash
from interp.reports.prompts import DEFAULT_PROMPTS, default_prompts, load_prompts, prompts_for_model
from interp.types import Model

__all__ = [
    "DEFAULT_PROMPTS", "Prompt", "Report", "ReportContext", "SECTIONS", "Section", "SectionOutput",
    "SectionResult", "SectionSkipped", "Table", "available_sections", "build_report", "choose_sections",
    "default_prompts", "jsonable", "load_prompts", "prompts_for_model", "prompt_hash", "register_section", "run_section",
    "run_sections", "section",
]

REPORT_SCHEMA_VERSION = 1


@dataclass
class Report:
    """A finished report: section results, metadata and the prompt set."""

    results: list[SectionResult]
    meta: dict[str, Any]
    prompts: list[Prompt] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.status == "failed"]

    @property
    def skipped(self) -> list[str]:
        return [r.name for r in self.results if r.status == "skipped"]

    def section(self, name: str) -> SectionResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no section {name!r} in this report; it has {[r.name for r in self.results]}")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "meta": jsonable(self.meta),
            "sections": [r.to_json() for r in self.results],
        }

    def to_html(self) -> str:
        from interp.reports._html import render_html

        doc = self.to_json()
        return render_html(self.results, doc["meta"], doc["sections"], self.prompts)

    def save(self, out_dir: str | Path, *, stem: str = "report") -> tuple[Path, Path]:
        """Write ``<out_dir>/<stem>.json`` then ``<stem>.html``, each atomically (tmp + rename)."""
        out = Path(out_dir)
        doc = self.to_json()
        json_path = atomic_write_text(out / f"{stem}.json", json.dumps(doc, indent=1, allow_nan=False))
        from interp.reports._html import render_html

        html_path = atomic_write_text(out / f"{stem}.html",
                                      render_html(self.results, doc["meta"], doc["sections"], self.prompts))
        return html_path, json_path


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_report(
    model: Model,
    *,
    model_name: str | None = None,
    prompts: Sequence[Prompt] | None = None,
    only: Iterable[str] | None = None,
    skip: Iterable[str] | None = None,
    seed: int = 0,
    prepend_bos: bool = True,
    debug: bool = False,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    argv: Sequence[str] | None = None,
) -> Report:
    """Run the chosen sections on ``model`` and return a :class:`Report` (nothing is written).

    ``only``/``skip`` take section names (see :func:`available_sections`); unknown names raise
    ``KeyError``. ``prompts`` defaults to :func:`prompts_for_model` (:data:`DEFAULT_PROMPTS`, or task examples
    for toy zoo models).
    """
    chosen = choose_sections(only, skip)
    if not chosen:
        raise ValueError("no sections left to run after --only/--skip")
    name = model_name or display_name(model)
    prompt_list = list(prompts) if prompts is not None else prompts_for_model(name, seed=seed)
    if not prompt_list:
        raise ValueError("the prompt set is empty; pass at least one prompt")
    seed_everything(seed)
    ctx = ReportContext(
        model=model, model_name=name,
        prompts=prompt_list, seed=seed, prepend_bos=prepend_bos, debug=debug, options=dict(options or {}),
    )
    results = run_sections(chosen, ctx, progress=progress)
    hooks = [h for r in results for h in r.output.hooks]
    meta = build_metadata(model=model, model_name=ctx.model_name, prompts=prompt_list, seed=seed,
                          prepend_bos=prepend_bos, sections=[s.name for s in chosen], hooks=hooks, argv=argv)
    return Report(results=results, meta=meta, prompts=prompt_list)
