"""The ``interp`` command line (typer).

Commands::

    interp report [MODEL] --out reports/ [--prompts FILE.jsonl] [--only a,b] [--skip c] [--seed N]
    interp report --compare A B [--out reports/]   # two models side by side, one HTML
    interp sections                        # list report sections
    interp sinks|heads|rope|probe [MODEL] [--json] [--prompts FILE.jsonl]
    interp circuit [MODEL] [--task ioi|greater-than|induction | --pairs PAIRS.jsonl] [--method eap|eap-ig]
                   [--granularity span|position|none] [--n N] [--json]
    interp capture [MODEL] [--hooks PATTERNS] [--out DIR] [--json]
    interp zoo ...                         # the toy-model zoo (list, train)

Exit codes: 0 success; 1 an analysis failed (or a requested section failed or could not run);
2 usage or bad input (unknown option, model, section or hook, unreadable prompt file).
Errors print as one line on stderr (``error: ...``); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402

from circuits.registry import CLI_METHODS, GRANULARITIES, TASKS  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_MODEL = "smollm2-135m"

class _OneLineErrors(typer.Typer):
    """Typer app whose usage errors (bad option, missing argument) print as one ``error:`` line."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:  # typer >= 0.16 vendors click as typer._click
            from typer._click import exceptions as cx
        except ImportError:  # pragma: no cover
            import click.exceptions as cx  # type: ignore[no-redef]

        kwargs["standalone_mode"] = False
        try:
            rv = super().__call__(*args, **kwargs)
        except cx.ClickException as e:
            msg = e.format_message()
            if msg:  # (no_args_is_help has already printed the help)
                ctx = getattr(e, "ctx", None)
                cmd = f" {ctx.info_name}" if ctx is not None and ctx.parent is not None else ""
                hint = f" (see 'interp{cmd} --help')" if isinstance(e, cx.UsageError) else ""
                typer.echo(f"error: {msg}{hint}", err=True)
            sys.exit(e.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("error: aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


app = _OneLineErrors(
    name="interp", add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Position-aware mechanistic interpretability on TransformerLens: reports, sinks, heads, "
         "RoPE, probes, circuits. Exit codes: 0 ok, 1 analysis failure, 2 usage/bad input.",
)

T = TypeVar("T")


class BadInput(Exception):
    """An input problem found before the analysis starts (exit code 2)."""


def _is_bad_input(e: BaseException) -> bool:
    try:
        from interp.errors import InterpError
    except ImportError:  # pragma: no cover
        InterpError = ()  # type: ignore[assignment,misc]
    return isinstance(e, (BadInput, InterpError, FileNotFoundError, KeyError, ValueError))


def _die(msg: str, code: int) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _guard(debug: bool, phase: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; map exceptions to one clear line and an exit code.

    ``phase="input"``: bad input (ValueError, KeyError, FileNotFoundError, interp errors) → 2,
    anything else → 1. ``phase="analysis"``: every exception → 1.
    """
    try:
        return fn()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _die("interrupted", 130)
    except BaseException as e:  # noqa: BLE001
        if debug:
            traceback.print_exc()
        code = EXIT_USAGE if phase == "input" and _is_bad_input(e) else EXIT_FAILED
        if isinstance(e, BadInput):
            msg = str(e)
        elif isinstance(e, KeyError) and e.args:
            msg = f"{type(e).__name__}: {e.args[0]}"
        else:
            msg = f"{type(e).__name__}: {e}"
        _die(msg.strip().splitlines()[0] if msg.strip() else type(e).__name__, code)


def _split(s: str | None) -> list[str]:
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def _slug(name: str) -> str:
    base = Path(name).name if os.sep in name or name.endswith(".gguf") else name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-") or "model"


def _load_model(name: str, debug: bool, dtype: str = "float32") -> Any:
    def load() -> Any:
        import torch

        from interp import load_model

        if dtype not in ("float32", "bfloat16", "float16"):
            raise BadInput(f"unknown --dtype {dtype!r}; use float32, bfloat16 or float16")
        typer.echo(f"loading {name} ({dtype})…", err=True)
        return load_model(name, dtype=getattr(torch, dtype))

    return _guard(debug, "input", load)


def _load_prompts(path: Path | None, debug: bool) -> list[Any] | None:
    if path is None:
        return None

    def load() -> list[Any]:
        from interp.reports.prompts import load_prompts

        return load_prompts(path)

    return _guard(debug, "input", load)


# ---------------------------------------------------------------------------------------------
# shared options

ModelArg = typer.Argument(DEFAULT_MODEL, help="load_model name or path (e.g. smollm2-135m, toy-induction).")
PromptsOpt = typer.Option(None, "--prompts", help="JSONL prompt file: one {\"text\": ..., \"domain\": ...} per line.")
SeedOpt = typer.Option(0, "--seed", help="Random seed (same seed, same numbers).")
NoBosOpt = typer.Option(False, "--no-bos", help="Do not prepend BOS (the default prepends it).")
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks.")
DtypeOpt = typer.Option("float32", "--dtype", help="float32 (default), bfloat16 or float16.")


@app.callback()
def _root(threads: int | None = typer.Option(None, "--threads", min=1,
                                             help="torch CPU threads (1 is often fastest on a busy machine).")) -> None:
    """interp: position-aware interpretability toolkit."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


@app.command()
def report(
    model: str = ModelArg,
    out: Path = typer.Option(Path("reports"), "--out", help="Output directory; writes <model>.html and <model>.json."),
    prompts: Path | None = PromptsOpt,
    only: str | None = typer.Option(None, "--only", help="Comma-separated sections to run (see `interp sections`)."),
    skip: str | None = typer.Option(None, "--skip", help="Comma-separated sections to leave out."),
    seed: int = SeedOpt,
    no_bos: bool = NoBosOpt,
    dtype: str = DtypeOpt,
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    debug: bool = DebugOpt,
    compare: str | None = typer.Option(None, "--compare", help="Compare two models: `interp report --compare A B` "
                                       "runs both on the same prompts and writes one compare-A-vs-B.html/.json "
                                       "with paired figures and a table of differences."),
) -> None:
    """Run the analysis sections and write one self-contained HTML file plus a JSON with every number."""
    from interp.reports import build_report, choose_sections

    only_l, skip_l = _split(only), _split(skip)
    _guard(debug, "input", lambda: choose_sections(only_l, skip_l))  # unknown section → exit 2 before loading
    prompt_list = _load_prompts(prompts, debug)
    if compare is not None:
        _compare(compare, model, out, prompt_list, only_l, skip_l, seed, no_bos, dtype, no_progress, debug)
        return
    m = _load_model(model, debug, dtype)
    rep = _guard(debug, "analysis", lambda: build_report(
        m, model_name=model, prompts=prompt_list, only=only_l, skip=skip_l, seed=seed,
        prepend_bos=not no_bos, debug=debug, progress=not no_progress, argv=sys.argv))
    html_path, json_path = _guard(debug, "analysis", lambda: rep.save(out, stem=_slug(model)))
    for r in rep.results:
        line = f"  {r.status:8s} {r.name:10s} {r.seconds:6.1f}s"
        typer.echo(line + (f"  ({r.reason})" if r.reason else ""), err=True)
    typer.echo(f"wrote {html_path}", err=True)
    typer.echo(f"wrote {json_path}", err=True)
    if rep.failed:
        if debug:
            for r in rep.results:
                if r.traceback:
                    typer.echo(r.traceback, err=True)
        _die(f"section(s) failed: {', '.join(rep.failed)} (reasons in the report)", EXIT_FAILED)
    requested_skipped = [r.name for r in rep.results if r.status == "skipped" and r.name in only_l]
    if requested_skipped:
        _die(f"requested section(s) could not run: {', '.join(requested_skipped)}", EXIT_FAILED)


def _compare(a: str, b: str, out: Path, prompt_list: Any, only_l: list[str], skip_l: list[str], seed: int,
             no_bos: bool, dtype: str, no_progress: bool, debug: bool) -> None:
    import gc

    from interp.reports import build_report
    from interp.reports.compare import save_comparison

    if a == b:
        _die(f"--compare needs two different models, got {a!r} twice (usage: interp report --compare A B)",
             EXIT_USAGE)
    reps = []
    for name in (a, b):
        m = _load_model(name, debug, dtype)
        reps.append(_guard(debug, "analysis", lambda m=m, name=name: build_report(
            m, model_name=name, prompts=prompt_list, only=only_l, skip=skip_l, seed=seed, prepend_bos=not no_bos,
            debug=debug, progress=not no_progress, argv=sys.argv)))
        del m
        gc.collect()
    html_path, json_path = _guard(debug, "analysis", lambda: save_comparison(out, (a, b), (reps[0], reps[1])))
    for name, rep in zip((a, b), reps):
        for r in rep.results:
            line = f"  {name:16s} {r.status:8s} {r.name:10s} {r.seconds:6.1f}s"
            typer.echo(line + (f"  ({r.reason})" if r.reason else ""), err=True)
    typer.echo(f"wrote {html_path}", err=True)
    typer.echo(f"wrote {json_path}", err=True)
    failed = [f"{n}:{x}" for n, rep in zip((a, b), reps) for x in rep.failed]
    if failed:
        _die(f"section(s) failed: {', '.join(failed)} (reasons in the comparison)", EXIT_FAILED)


@app.command()
def sections(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the report sections (name, default, required modules)."""
    from interp.reports import available_sections

    secs = available_sections()
    if json_out:
        typer.echo(json.dumps([{"name": s.name, "title": s.title, "default": s.default,
                                "requires": list(s.requires), "description": s.description} for s in secs],
                              indent=1))
        return
    for s in secs:
        typer.echo(f"{s.name:10s} {'default' if s.default else 'opt-in ':8s} {s.title}")


def _run_one(section_names: str | list[str], model: str, prompts: Path | None, seed: int, no_bos: bool,
             json_out: bool, html: Path | None, debug: bool, options: dict[str, Any] | None = None,
             dtype: str = "float32", loaded: Any = None) -> None:
    """Run report section(s) as a command: ``{"meta": ..., "sections": [...]}`` JSON with ``--json``,
    else a readable summary on stdout. Exit 1 when a section failed or could not run."""
    from interp.reports import build_report, choose_sections

    names = [section_names] if isinstance(section_names, str) else list(section_names)
    _guard(debug, "input", lambda: choose_sections(names))
    prompt_list = _load_prompts(prompts, debug)
    m = loaded if loaded is not None else _load_model(model, debug, dtype)
    rep = _guard(debug, "analysis", lambda: build_report(
        m, model_name=model, prompts=prompt_list, only=names, seed=seed, prepend_bos=not no_bos,
        debug=debug, progress=False, options=options, argv=sys.argv))
    if html is not None:
        _guard(debug, "analysis", lambda: rep.save(html.parent if html.suffix else html,
                                                     stem=html.stem if html.suffix else _slug(model)))
    doc = rep.to_json()
    if json_out:
        typer.echo(json.dumps(doc, indent=1, allow_nan=False))
    else:
        for res, sec in zip(rep.results, doc["sections"]):
            typer.echo(f"{res.title} — {model}: {res.status} ({res.seconds:.1f} s)")
            for note in sec["notes"]:
                typer.echo(f"  {note}")
            for t in sec["tables"]:
                typer.echo(f"\n{t['caption']}")
                typer.echo("  " + " | ".join(t["columns"]))
                for row in t["rows"]:
                    typer.echo("  " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    bad = [r for r in rep.results if r.status != "ok"]
    if bad:
        if debug:
            for r in bad:
                if r.traceback:
                    typer.echo(r.traceback, err=True)
        _die("; ".join(f"{r.name} {r.status}: {r.reason}" for r in bad), EXIT_FAILED)


JsonOpt = typer.Option(False, "--json", help="Print every number as JSON on stdout.")
HtmlOpt = typer.Option(None, "--html", help="Also write an HTML+JSON report (file path or directory).")
TopOpt = typer.Option(10, "--top", help="How many top entries to list.")


@app.command()
def sinks(model: str = ModelArg, prompts: Path | None = PromptsOpt, top: int = TopOpt, seed: int = SeedOpt,
          no_bos: bool = NoBosOpt, json_out: bool = JsonOpt, html: Path | None = HtmlOpt,
          dtype: str = DtypeOpt, debug: bool = DebugOpt) -> None:
    """Attention sinks and extreme tokens (α_k, Sink_k^ε, massive activations, value drains)."""
    _run_one("sinks", model, prompts, seed, no_bos, json_out, html, debug, {"top": top}, dtype)


@app.command()
def heads(model: str = ModelArg, prompts: Path | None = PromptsOpt, top: int = TopOpt, seed: int = SeedOpt,
          no_bos: bool = NoBosOpt, json_out: bool = JsonOpt, html: Path | None = HtmlOpt,
          dtype: str = DtypeOpt, debug: bool = DebugOpt) -> None:
    """Positional heads (previous-token, self, first-token, offsets, induction) and positional neurons."""
    _run_one("heads", model, prompts, seed, no_bos, json_out, html, debug, {"top": top}, dtype)


@app.command()
def rope(model: str = ModelArg, prompts: Path | None = PromptsOpt, top: int = TopOpt, seed: int = SeedOpt,
         no_bos: bool = NoBosOpt, json_out: bool = JsonOpt, html: Path | None = HtmlOpt,
         dtype: str = DtypeOpt, debug: bool = DebugOpt) -> None:
    """RoPE frequency usage per layer and head, and the base bound B(m)."""
    _run_one("rope", model, prompts, seed, no_bos, json_out, html, debug, {"top": top}, dtype)


@app.command()
def probe(model: str = ModelArg, prompts: Path | None = PromptsOpt, seed: int = SeedOpt,
          no_bos: bool = NoBosOpt, json_out: bool = JsonOpt, html: Path | None = HtmlOpt,
          dtype: str = DtypeOpt, debug: bool = DebugOpt) -> None:
    """Linear probes for absolute position per layer, with a control task."""
    _run_one("probes", model, prompts, seed, no_bos, json_out, html, debug, None, dtype)


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A typer choice enum from a registry tuple (member ``greater_than`` has value ``"greater-than"``)."""
    return Enum(name, {v.replace("-", "_").replace("*", "_star"): v for v in values}, type=str)  # type: ignore[return-value]


# the choices come from the one registry the report and circuits read (circuits.registry)
CircuitTask = _choices("CircuitTask", TASKS)
CircuitMethod = _choices("CircuitMethod", CLI_METHODS)
CircuitGranularity = _choices("CircuitGranularity", GRANULARITIES)


class CircuitExport(str, Enum):
    eap_ig = "eap-ig"
    mib = "mib"
    graph_json = "graph-json"


def _check_pairs(model: Any, options: dict[str, Any], seed: int, no_bos: bool) -> None:
    """Build the user's task once before the analysis so a bad pairs file is a usage error (exit 2)
    with load_jsonl's own message on one line."""
    from circuits.registry import task_from_options

    try:
        task_from_options(model, options, seed=seed, prepend_bos=not no_bos)
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        msg = " ".join(line.strip() for line in str(e.args[0] if isinstance(e, KeyError) and e.args else e)
                       .splitlines() if line.strip())
        raise BadInput(f"--pairs: {msg} (format: one JSON object per line with template, clean, corrupt, "
                       "correct, wrong; see README 'Command line')") from e


@app.command()
def circuit(model: str = ModelArg,
            task: CircuitTask | None = typer.Option(None, "--task", help="Built-in task: ioi (default), "
                                                    "greater-than or induction. Not with --pairs."),
            pairs: Path | None = typer.Option(None, "--pairs", help="Your clean/counterfactual pairs: JSONL with "
                                              "template slots (circuits.tasks.load_jsonl). Not with --task."),
            n: int | None = typer.Option(None, "--n", min=1,
                                         help="Examples of the built-in task (default 6). Not with --pairs "
                                              "(every pair in the file is used)."),
            method: CircuitMethod = typer.Option(CircuitMethod.eap, "--method", help="Attribution: eap or eap-ig."),
            ig_steps: int = typer.Option(5, "--ig-steps", min=1, help="Interpolation steps for eap-ig."),
            granularity: CircuitGranularity = typer.Option(
                CircuitGranularity.span, "--granularity",
                help="span (schema spans), position (token positions) or none (non-positional); span and "
                     "position are compared with the none baseline."),
            prompts: Path | None = typer.Option(None, "--prompts", hidden=True),
            max_memory: str | None = typer.Option(
                None, "--max-memory", help="Memory budget for attribution beyond the weights (e.g. 8GiB): "
                                           "the batch size is chosen to fit, or it fails before running, "
                                           "saying what would fit."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Print the memory estimate per part "
                                                                   "(circuits.estimate_memory) and exit."),
            export: tuple[CircuitExport, Path] | None = typer.Option(
                None, "--export", metavar="FORMAT FILE",
                help="Also write the graph for other tools: eap-ig FILE.json (EAP-IG graph JSON, position-"
                     "agnostic projection, circuit marked in_graph), mib DIR (MIB importance scores, "
                     "DIR/{task}_{model}/importances.json) or graph-json FILE.json (Neuronpedia/circuit-tracer "
                     "style graph of the positional circuit)."),
            seed: int = SeedOpt, no_bos: bool = NoBosOpt, json_out: bool = JsonOpt, html: Path | None = HtmlOpt,
            dtype: str = DtypeOpt, debug: bool = DebugOpt) -> None:
    """Position-aware circuit (EAP/EAP-IG over schema spans or positions) on IOI, Greater-Than,
    induction or your own JSONL pairs, with its faithfulness curve."""
    if prompts is not None:
        _die("circuit does not use --prompts; pass clean/counterfactual pairs with --pairs FILE.jsonl "
             "(see 'interp circuit --help')", EXIT_USAGE)
    if task is not None and pairs is not None:
        _die("--task and --pairs are mutually exclusive: pass a built-in --task or your own --pairs "
             "FILE.jsonl, not both (see 'interp circuit --help')", EXIT_USAGE)
    if n is not None and pairs is not None:
        _die("--n is for built-in tasks; with --pairs every pair in the file is used (drop --n or "
             "trim the file)", EXIT_USAGE)
    options: dict[str, Any] = {"n": 6 if n is None else n, "method": method.value, "ig_steps": ig_steps,
                               "granularity": granularity.value}
    if export is not None and export[0] is not None:
        fmt, dest = export
        if fmt != CircuitExport.mib and dest.is_dir():
            _die(f"--export {fmt.value}: {str(dest)!r} is a directory; give a file name (e.g. graph.json)", EXIT_USAGE)
        if fmt == CircuitExport.mib and dest.exists() and not dest.is_dir():
            _die(f"--export mib: {str(dest)!r} is a file; give a directory for the {{task}}_{{model}} folder",
                 EXIT_USAGE)
        options["export"] = {"format": fmt.value, "path": str(dest)}
    if pairs is not None:
        options["pairs"] = str(pairs)
        if not pairs.is_file():
            _die(f"--pairs: file {str(pairs)!r} does not exist (or is not a file); pass a JSONL of "
                 "clean/counterfactual pairs", EXIT_USAGE)
        m = _load_model(model, debug, dtype)
        _guard(debug, "input", lambda: _check_pairs(m, options, seed, no_bos))
        _run_one("circuit", model, None, seed, no_bos, json_out, html, debug, options, dtype, loaded=m)
        return
    options["task"] = (task or CircuitTask.ioi).value
    if max_memory is not None or dry_run:
        _circuit_memory(model, options, max_memory, dry_run, seed, no_bos, json_out, dtype, debug)
        if dry_run:
            return
    _run_one("circuit", model, None, seed, no_bos, json_out, html, debug, options, dtype)


def _circuit_memory(model: str, options: dict[str, Any], max_memory: str | None, dry_run: bool, seed: int,
                    no_bos: bool, json_out: bool, dtype: str, debug: bool) -> None:
    """--max-memory (validated, passed to attribution) and --dry-run (the estimate per part)."""
    from circuits.memory import estimate_memory, format_bytes, parse_bytes

    if max_memory is not None:
        budget = _guard(debug, "input", lambda: parse_bytes(max_memory))
        options["max_memory"] = budget
    if not dry_run:
        return
    from circuits.registry import task_from_options

    m = _load_model(model, debug, dtype)
    task = _guard(debug, "input", lambda: task_from_options(m, options, seed=seed, prepend_bos=not no_bos))
    n_tok = int(task.clean.tokens.shape[1]) if hasattr(task.clean, "tokens") else 0
    n_ex = int(task.clean.tokens.shape[0]) if hasattr(task.clean, "tokens") else int(options["n"])
    grans = [options["granularity"]] + ([] if options["granularity"] == "none" else ["none"])
    out = {}
    for g in grans:
        est = estimate_memory(m, n_tok, min(4, n_ex), granularity=g, method=options["method"],
                              ig_steps=options["ig_steps"])
        out[g] = est
    if json_out:
        typer.echo(json.dumps({"tokens": n_tok, "examples": n_ex, "batch_size": min(4, n_ex),
                               "max_memory": options.get("max_memory"), "estimate": out}, indent=1))
        return
    typer.echo(f"circuit dry run — {model}: {n_ex} examples × {n_tok} tokens, batch {min(4, n_ex)}, "
               f"{options['method']}")
    for g, est in out.items():
        typer.echo(f"  granularity {g}: peak {format_bytes(est['peak'])} beyond the weights "
                   f"({format_bytes(est['weights'])})")
        for part, v in est.items():
            if part not in ("peak", "weights"):
                typer.echo(f"    {part:<17} {format_bytes(v)}")


AtlasTask = _choices("AtlasTask", (*TASKS, "toy"))


@app.command("atlas")
def atlas_cmd(model: str = ModelArg,
              task: AtlasTask | None = typer.Option(None, "--task", help="ioi (default on language models), "
                                                    "greater-than, induction, or toy (a zoo model's own task; "
                                                    "the default on toys). Not with --pairs."),
              pairs: Path | None = typer.Option(None, "--pairs", help="Your clean/counterfactual pairs (JSONL, "
                                                "see `interp circuit --help`). Not with --task."),
              n: int | None = typer.Option(None, "--n", min=1, help="Examples of the built-in task (IOI: 32)."),
              n_edges: int | None = typer.Option(None, "--edges", min=1, help="Circuit size (default: the "
                                                 "smallest of 8, 16, … 512 edges with faithfulness ≥ 0.8)."),
              no_probes: bool = typer.Option(False, "--no-probes", help="Skip the per-layer position probes."),
              html: Path | None = typer.Option(None, "--html", help="Write the interactive atlas (one offline "
                                               "HTML file) here."),
              seed: int = SeedOpt, no_bos: bool = NoBosOpt, json_out: bool = JsonOpt,
              dtype: str = DtypeOpt, debug: bool = DebugOpt) -> None:
    """Mechanism atlas: every head's role, sink status, RoPE frequency use and position probes on one
    task, joined with its circuit, with causal checks (band ablation, sink removal)."""
    if task is not None and pairs is not None:
        _die("--task and --pairs are mutually exclusive: pass a built-in --task or your own --pairs "
             "FILE.jsonl, not both", EXIT_USAGE)
    if pairs is not None and not pairs.is_file():
        _die(f"--pairs: file {str(pairs)!r} does not exist (or is not a file); pass a JSONL of "
             "clean/counterfactual pairs", EXIT_USAGE)
    m = _load_model(model, debug, dtype)

    def build() -> Any:
        from interp.atlas._data import build_task
        from interp.provenance import model_name

        return build_task(m, None if task is None else task.value, model_name=model_name(m), n=n,
                          pairs=None if pairs is None else str(pairs), seed=seed, prepend_bos=not no_bos)

    t = _guard(debug, "input", build)

    def run() -> Any:
        from interp.atlas import atlas

        return atlas(m, t, n_edges=n_edges, probes=not no_probes, seed=seed, prepend_bos=not no_bos,
                     verbose=not json_out)

    a = _guard(debug, "analysis", run)
    if html is not None:
        _guard(debug, "analysis", lambda: a.save_html(html if html.suffix else html / f"atlas-{_slug(model)}.html"))
    if json_out:
        typer.echo(json.dumps(a.to_json(), indent=1, allow_nan=False))
        return
    typer.echo(f"atlas — {model}, {a.task['name']} ({a.task['n']} examples): circuit of {a.params['n_edges']} "
               f"edges, f = {a.faithfulness:.3f}; {sum(a.seconds.values()):.1f} s")
    typer.echo("  head | label | tags | node score | alpha0 | high-freq share")
    for row in a.summary():
        typer.echo("  " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row))
    for c in a.checks:
        typer.echo(f"  check {c['head']} {c['kind']} ({c['band']}): measured "
                   + ", ".join(f"{k}={v:.3g}" for k, v in c["measured"].items())
                   + ("; predicted " + ", ".join(f"{k}={v:.3g}" for k, v in c["predicted"].items())
                      if c["predicted"] else ""))
    if html is not None:
        typer.echo(f"wrote {html if html.suffix else html / f'atlas-{_slug(model)}.html'}", err=True)


@app.command("capture")
def capture_cmd(
    model: str = ModelArg,
    prompts: Path | None = PromptsOpt,
    hooks: str = typer.Option("blocks.*.hook_resid_post", "--hooks",
                              help="Comma-separated hook names or globs (used with --out)."),
    out: Path | None = typer.Option(None, "--out", help="Write an activation store (safetensors shards) here."),
    batch_size: int = typer.Option(8, "--batch-size"),
    seed: int = SeedOpt, no_bos: bool = NoBosOpt, json_out: bool = JsonOpt, html: Path | None = HtmlOpt,
    dtype: str = DtypeOpt, debug: bool = DebugOpt,
) -> None:
    """Capture activations: without --out, a summary (residual norms, attention entropy);
    with --out DIR, an activation store on disk (resumable)."""
    if out is None:
        _run_one("capture", model, prompts, seed, no_bos, json_out, html, debug, None, dtype)
        return
    from interp.reports.prompts import default_prompts, prompts_for_model

    # an activation store of the whole bundled prompt set would be gigabytes: the store defaults to
    # the seven built-in prompts (a toy's own task data for zoo models); --prompts for more
    prompt_list = _load_prompts(prompts, debug) or (
        prompts_for_model(model, seed=seed) if model.startswith("toy-") else default_prompts())
    m = _load_model(model, debug, dtype)
    hook_list = _split(hooks)
    if not hook_list:
        _die("--hooks is empty; pass e.g. 'blocks.*.hook_resid_post'", EXIT_USAGE)

    def run() -> Any:
        from interp import capture

        return capture(m, [p.text for p in prompt_list], hook_list, batch_size=batch_size, out=out,
                       prepend_bos=not no_bos)

    store = _guard(debug, "input", run)
    info: dict[str, Any] = {"out": str(out), "n_prompts": len(prompt_list), "hooks": hook_list}
    for attr in ("hooks", "hook_names", "n_examples", "complete"):
        if hasattr(store, attr):
            from interp.reports import jsonable

            info[f"store.{attr}"] = jsonable(getattr(store, attr))
    typer.echo(json.dumps(info, indent=1) if json_out else f"wrote activation store to {out}")


def _mount_zoo() -> None:
    try:
        from interp.zoo.cli import app as zoo_app
    except Exception as e:  # noqa: BLE001 - zoo absent or broken: say so when used
        reason = f"{type(e).__name__}: {e}"

        @app.command("zoo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
        def zoo_missing() -> None:
            """The toy-model zoo (not available in this installation)."""
            _die(f"interp.zoo.cli is not available ({reason})", EXIT_FAILED)

        return
    app.add_typer(zoo_app, name="zoo", help="The toy-model zoo: list and train toy models with planted mechanisms.")


_mount_zoo()


def main() -> None:  # pragma: no cover - console entry point alternative
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
