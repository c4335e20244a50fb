"""Report framework: sections, a registry, and the runner that never drops a section silently.

A *section* is a named analysis that takes a :class:`ReportContext` (the model, the prompt set,
the seed, the BOS policy and a cache shared between sections) and returns a
:class:`SectionOutput` (figures, tables, a JSON-serialisable ``data`` dict, notes, the hooks it
read). :func:`run_sections` runs the chosen sections and turns every outcome into a
:class:`SectionResult` whose ``status`` is ``"ok"``, ``"failed"`` (the section raised; the reason
is kept, and the traceback with ``debug``) or ``"skipped"`` (a module the section
declares in ``requires`` is not installed, or the section said it does not apply to this model).
An import that fails *inside* a section (a typo, a broken install) is a failure like any other.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable, Sequence

from interp.reports._registry import (
    SECTIONS,
    ReportContext,
    Section,
    SectionOutput,
    SectionResult,
    SectionSkipped,
)


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
