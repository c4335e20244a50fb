"""``interp zoo`` commands: ``list`` the toy models, ``train NAME`` one of them (with ``--out``,
also compared with the shipped copy: weights, head roles, accuracies)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Ground-truth toy models with planted mechanisms.", no_args_is_help=True)


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the toy models, whether their weights are shipped, and their task accuracy."""
    from interp import zoo

    rows = []
    for name, info in zoo.TOY_MODELS.items():
        try:
            man = zoo.manifest(name)
            acc = {k: v for k, v in man.get("accuracy", {}).items() if isinstance(v, float)}
            shipped = True
        except FileNotFoundError:
            acc, shipped = {}, False
        rows.append({"name": name, "arch": info.arch, "positional": info.positional,
                     "task": info.task, "shipped": shipped, "accuracy": acc,
                     "description": info.description})
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        accs = ", ".join(f"{k}={v:.3f}" for k, v in r["accuracy"].items()) or "not trained"
        typer.echo(f"{r['name']:<16} {r['arch']:<6} {r['positional']:<9} {r['task']:<10} {accs}")


@app.command("train")
def train_cmd(
    name: str = typer.Argument(..., help="Toy model name, e.g. toy-induction."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output directory "
                                           "(default: the packaged weights directory)."),
    seed: int = typer.Option(0, help="Initialisation and data seed."),
    steps: Optional[int] = typer.Option(None, help="Override the number of training steps."),
    manifest: bool = typer.Option(True, help="Measure the model and write manifest.json."),
) -> None:
    """Train NAME deterministically and save it (HF directory + manifest.json)."""
    from interp import zoo

    if name not in zoo.TOY_MODELS:
        raise typer.BadParameter(f"unknown toy model {name!r}; choose one of "
                                 f"{', '.join(zoo.TOY_MODELS)}")
    out = zoo.train(name, out_dir=out_dir, seed=seed, steps=steps, write_manifest=manifest)
    typer.echo(f"saved {name} to {out}")
    if out_dir is not None and manifest:
        try:
            c = zoo.compare_to_shipped(name, out)
        except FileNotFoundError:
            return  # nothing shipped to compare with
        typer.echo(f"vs shipped: bit-identical weights {c['bit_identical']}, same head roles "
                   f"{c['same_roles']}, accuracies within 0.02 {c['accuracy_close']} "
                   + ", ".join(f"{k} {s:.3f}->{n:.3f}" for k, (s, n) in c["accuracy"].items()
                               if n is not None))
