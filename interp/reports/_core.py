"""Report framework: sections, a registry, and the runner that never drops a section silently.

A *section* is a named analysis that takes a :class:`ReportContext` (the model, the prompt set,
the seed, the BOS policy and a cache shared between sections) and returns a
:class:`SectionOutput` (figures, tables, a JSON-serialisable ``data`` dict, notes, the hooks it
read). :func:`run_sections` runs the chosen sections and turns every outcome into a
:class:`SectionResult` whose ``status`` is ``"ok"``, ``"failed"`` (the section raised; the reason
is kept, and the traceback with ``debug``) or ``"skipped"`` (the analysis module it needs is not
installed yet, or the section said it does not apply to this model).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "failed", "skipped"]

# Modules of this project whose absence means "the analysis has not landed / is not installed":
# a section that needs one is reported as skipped, not failed.
_PROJECT_PACKAGES = ("interp", "probes", "circuits")


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


def _ensure_builtin_sections() -> None:
    import interp.reports.sections  # noqa: F401  (registers the built-in sections)


def available_sections() -> list[Section]:
    """All registered sections in report order."""
    _ensure_builtin_sections()
    return sorted(SECTIONS.values(), key=lambda s: (s.order, s.name))


def choose_sections(only: Iterable[str] | None = None, skip: Iterable[str] | None = None) -> list[Section]:
    """Resolve ``--only``/``--skip`` to sections, in report order.

    Raises ``KeyError`` naming the unknown section(s) and listing the known ones.
    """
    secs = available_sections()
    known = {s.name for s in secs}
    only_l = [s for s in (only or []) if s]
    skip_l = [s for s in (skip or []) if s]
    unknown = sorted({*only_l, *skip_l} - known)
    if unknown:
        raise KeyError(
            f"unknown section(s) {', '.join(unknown)}; known sections: {', '.join(s.name for s in secs)}"
        )
    chosen = [s for s in secs if (s.name in only_l if only_l else s.default)]
    return [s for s in chosen if s.name not in skip_l]


def _missing_module(section: Section) -> str | None:
    import importlib.util

    for mod in section.requires:
        try:
            if importlib.util.find_spec(mod) is None:
                return mod
        except ModuleNotFoundError:
            return mod
    return None


def run_section(section: Section, ctx: ReportContext) -> SectionResult:
    """Run one section; every exception becomes a ``failed``/``skipped`` result, never a drop."""
    base = dict(name=section.name, title=section.title, description=section.description)
    missing = _missing_module(section)
    if missing is not None:
        return SectionResult(**base, status="skipped", reason=f"module {missing!r} is not available")
    t0 = time.perf_counter()
    try:
        out = section.run(ctx)
        if not isinstance(out, SectionOutput):
            raise TypeError(f"section {section.name!r} returned {type(out).__name__}, expected SectionOutput")
        return SectionResult(**base, status="ok", seconds=time.perf_counter() - t0, output=out)
    except SectionSkipped as e:
        return SectionResult(**base, status="skipped", reason=str(e), seconds=time.perf_counter() - t0)
    except ModuleNotFoundError as e:
        name = e.name or ""
        if name.split(".")[0] in _PROJECT_PACKAGES:
            return SectionResult(
                **base, status="skipped", reason=f"module {name!r} is not available",
                seconds=time.perf_counter() - t0,
            )
        return _failed(base, e, t0, ctx.debug)
    except Exception as e:  # noqa: BLE001 - a failing section must not take the report down
        return _failed(base, e, t0, ctx.debug)


def _failed(base: dict[str, str], e: BaseException, t0: float, debug: bool) -> SectionResult:
    return SectionResult(
        **base, status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0][:500],
        seconds=time.perf_counter() - t0, traceback=traceback.format_exc() if debug else None,
    )


def run_sections(
    sections: Sequence[Section], ctx: ReportContext, *, progress: bool = True
) -> list[SectionResult]:
    """Run sections in order with a tqdm progress bar (on stderr)."""
    from tqdm.auto import tqdm

    results: list[SectionResult] = []
    bar = tqdm(sections, desc="report", unit="section", disable=not progress, leave=False)
    for sec in bar:
        bar.set_postfix_str(sec.name)
        results.append(run_section(sec, ctx))
    bar.close()
    return results
