"""Report vocabulary and the section registry: what a section takes (:class:`ReportContext`) and
returns (:class:`SectionOutput`), the :func:`section` decorator that registers it, and the
:class:`SectionResult` the runner (:mod:`interp.reports._core`) makes of it. Sections import this
module, never the runner, so the runner can import the built-in sections without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "failed", "skipped"]

class SectionSkipped(Exception):
    """Raise inside a section to mark it skipped with a reason (e.g. the model has no RoPE)."""


@dataclass
class Prompt:
    """One prompt of a report's prompt set: text plus a domain tag (``prose``, ``code``, ...)."""

    text: str
    domain: str = "prose"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Table:
    """A small table shown in the HTML and kept in the JSON."""

    caption: str
    columns: list[str]
    rows: list[list[Any]]

    def to_json(self) -> dict[str, Any]:
        return {"caption": self.caption, "columns": self.columns, "rows": self.rows}


@dataclass
class SectionOutput:
    """What a section's ``run`` returns."""

    data: dict[str, Any] = field(default_factory=dict)
    figures: list[Any] = field(default_factory=list)  # plotly.graph_objects.Figure
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


@dataclass
class ReportContext:
    """Everything a section may use. ``cache`` is shared between sections of one run."""

    model: Any
    model_name: str
    prompts: list[Prompt]
    seed: int = 0
    prepend_bos: bool = True
    debug: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    def texts_for(self, domain: str) -> list[str]:
        return [p.text for p in self.prompts if p.domain == domain]


@dataclass(frozen=True)
class Section:
    """A registered report section.

    ``requires`` lists importable modules the section needs; when one is missing the section is
    *skipped* with that reason. ``default`` sections run when ``--only`` is not given.
    """

    name: str
    title: str
    description: str
    run: Callable[[ReportContext], SectionOutput]
    requires: tuple[str, ...] = ()
    default: bool = True
    order: int = 100


@dataclass
class SectionResult:
    """The outcome of one section, as shown in the HTML and stored in the JSON."""

    name: str
    title: str
    description: str
    status: Status
    reason: str | None = None
    seconds: float = 0.0
    output: SectionOutput = field(default_factory=SectionOutput)
    traceback: str | None = None

    def to_json(self) -> dict[str, Any]:
        from interp.reports._meta import jsonable

        out = self.output
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "data": jsonable(out.data),
            "tables": [jsonable(t.to_json()) for t in out.tables],
            "notes": list(out.notes),
            "hooks": sorted(set(out.hooks)),
            "figures": [_figure_title(f) for f in out.figures],
            **({"traceback": self.traceback} if self.traceback else {}),
        }


def _figure_title(fig: Any) -> str:
    try:
        return str(fig.layout.title.text or "")
    except Exception:  # pragma: no cover - defensive, figures are plotly figures
        return ""


SECTIONS: dict[str, Section] = {}


def register_section(section: Section) -> Section:
    """Add (or replace) a section in the registry; returns it so it can be used as a value."""
    SECTIONS[section.name] = section
    return section


def section(
    name: str,
    title: str,
    description: str,
    *,
    requires: Sequence[str] = (),
    default: bool = True,
    order: int = 100,
) -> Callable[[Callable[[ReportContext], SectionOutput]], Callable[[ReportContext], SectionOutput]]:
    """Decorator form of :func:`register_section`."""

    def deco(fn: Callable[[ReportContext], SectionOutput]) -> Callable[[ReportContext], SectionOutput]:
        register_section(Section(name, title, description, fn, tuple(requires), default, order))
        return fn

    return deco
