"""The one registry of circuit tasks, attribution methods and granularities.

``interp circuit`` (the CLI), the report's ``circuit`` section, the atlas and
:func:`circuits.attribute` all read these names from here, and build a task by name with
:func:`builtin_task` / :func:`task_from_options`.

* :data:`TASKS` — the built-in tasks (:mod:`circuits.tasks`): IOI (Wang et al. 2022,
  arXiv:2211.00593), Greater-Than (Hanna et al. 2023, arXiv:2305.00586) and induction
  (Olsson et al. 2022, arXiv:2209.11895); :data:`NATURAL_LANGUAGE_TASKS` need a language model.
* :data:`METHODS` — every attribution method :func:`circuits.attribute` accepts;
  :data:`CLI_METHODS` the ones the CLI and the report offer (EAP, Syed et al. 2023,
  arXiv:2310.10348; EAP-IG, Hanna et al. 2024, arXiv:2403.17806).
* :data:`GRANULARITIES` — where an edge lives: schema spans, token positions, or summed over
  positions (the non-positional baseline; Haklay et al. 2025, arXiv:2502.04577).

This module imports only the standard library (and :mod:`interp.types`) at module level, so the
CLI can build its choices from it without loading torch. The task builders return a
:class:`circuits.tasks.Task`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interp.types import Model

__all__ = ["TASKS", "NATURAL_LANGUAGE_TASKS", "METHODS", "CLI_METHODS", "IG_METHODS", "GRANULARITIES",
           "DEFAULT_TASK", "DEFAULT_METHOD", "DEFAULT_GRANULARITY", "DEFAULT_N", "check_choice", "task_options",
           "builtin_task", "task_from_options"]

TASKS: tuple[str, ...] = ("ioi", "greater-than", "induction")
NATURAL_LANGUAGE_TASKS: tuple[str, ...] = ("ioi", "greater-than")
METHODS: tuple[str, ...] = ("eap", "eap-ig", "eap-ig-activations", "atp*", "atp*-ig", "clean-corrupted",
                             "exact")
CLI_METHODS: tuple[str, ...] = ("eap", "eap-ig")
IG_METHODS: tuple[str, ...] = ("eap-ig", "atp*-ig")
GRANULARITIES: tuple[str, ...] = ("span", "position", "none")
DEFAULT_TASK = "ioi"
DEFAULT_METHOD = "eap"
DEFAULT_GRANULARITY = "span"
#: examples of a built-in task in the report (IOI with this n on a real model reads the bundled
#: ``interp.datasets`` file ``ioi-t0``: 64 pairs, ABBA/BABA)
DEFAULT_N = 64


def check_choice(what: str, value: str, allowed: tuple[str, ...]) -> str:
    """``value`` when it is one of ``allowed``; ValueError naming the option and the choices otherwise."""
    if value not in allowed:
        raise ValueError(f"circuit option {what}={value!r} is not one of {', '.join(allowed)}")
    return value


def task_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The task, method and granularity settings in ``options`` (the report's and the CLI's
    options dict), validated: ``task`` (default ``"ioi"``) or ``pairs`` (a JSONL file), ``n``
    (``ioi_n`` is the older name; default :data:`DEFAULT_N`), ``method`` (one of
    :data:`CLI_METHODS`), ``ig_steps`` (default 5), ``granularity`` (default ``"span"``)."""
    pairs = options.get("pairs")
    if pairs is not None and options.get("task") is not None:
        raise ValueError("give either a task or a pairs file, not both")
    n = int(options.get("n", options.get("ioi_n", DEFAULT_N)))
    ig_steps = int(options.get("ig_steps", 5))
    if n < 1 or ig_steps < 1:
        raise ValueError(f"n and ig_steps must be ≥ 1 (got n={n}, ig_steps={ig_steps})")
    return {"task": None if pairs is not None else check_choice("task", str(options.get("task") or DEFAULT_TASK),
                                                                 TASKS),
            "pairs": None if pairs is None else str(pairs), "n": n,
            "method": check_choice("method", str(options.get("method") or DEFAULT_METHOD), CLI_METHODS),
            "ig_steps": ig_steps,
            "granularity": check_choice("granularity", str(options.get("granularity") or DEFAULT_GRANULARITY),
                                        GRANULARITIES)}


def builtin_task(name: str, model: Model, *, n: int, seed: int = 0, prepend_bos: bool = True) -> Any:
    """The built-in task ``name`` (one of :data:`TASKS`) with ``n`` generated examples.

    Induction always starts with BOS (clean: BOS, A, A); the returned task says so in its
    ``prepend_bos``."""
    from circuits import tasks

    check_choice("task", name, TASKS)
    if name == "ioi":
        return tasks.ioi(model, n=n, seed=seed, prepend_bos=prepend_bos)
    if name == "greater-than":
        return tasks.greater_than(model, n=n, seed=seed, prepend_bos=prepend_bos)
    return tasks.induction(model, n=n, seed=seed)


def task_from_options(model: Model, options: Mapping[str, Any], *, seed: int = 0,
                      prepend_bos: bool = True) -> Any:
    """The :class:`circuits.tasks.Task` that ``interp circuit`` and the report's circuit section run:
    a built-in task (``n`` examples, ``seed``) or the user's pairs from ``options["pairs"]``
    (:func:`circuits.tasks.load_jsonl`).

    The schema is applied to every clean and counterfactual prompt here, so bad input (no
    template, a prompt that does not fit it, a multi-token answer, …) raises ValueError before
    any analysis runs. IOI with ``n == DEFAULT_N`` (and no ``generated_ioi`` option) reads the
    bundled ``interp.datasets`` file ``ioi-t0``.
    """
    from circuits import tasks

    cfg = task_options(options)
    if cfg["pairs"] is not None:
        path = Path(cfg["pairs"])
        if not path.is_file():
            raise FileNotFoundError(f"pairs file {str(path)!r} does not exist (or is not a file)")
        task = tasks.load_jsonl(path, model, prepend_bos=prepend_bos)
        for batch in (task.clean, task.corrupt):  # SchemaError (a ValueError) names every misfit
            task.schema.apply(batch)
        return task
    if cfg["task"] == "ioi" and cfg["n"] == DEFAULT_N and not options.get("generated_ioi"):
        from interp import datasets

        task = tasks.load_jsonl(datasets.path("ioi-t0"), model, prepend_bos=prepend_bos, name="ioi")
        task.meta.update(source="interp.datasets ioi-t0 (bundled)", order="both")
        return task
    task = builtin_task(cfg["task"], model, n=cfg["n"], seed=seed, prepend_bos=prepend_bos)
    if task.prepend_bos != prepend_bos:
        raise ValueError("the induction task always starts with BOS (clean: BOS, A, A); drop --no-bos")
    return task
