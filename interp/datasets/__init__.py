"""Bundled prompt and task sets (package data with a provenance and licence manifest).

Every file in ``interp/datasets/data/`` was generated in-project by
``interp/datasets/_generate.py`` from word lists and templates written for this package (seeded
``random.Random``; rerunning it writes byte-identical files). Nothing is fetched at run time.
``MANIFEST.json`` records, per dataset, its file, description, generator and seed, licence,
count, domains, SmolLM2 token lengths and sha256.

Datasets::

    prompts        280 prompts, 56 in each of prose, dialogue, code, math, lists; 17-1,856 tokens
    induction      64 repeated random word segments (the natural-text induction control)
    greater-than   64 digit Greater-Than prompts with their tens-digit-0 counterfactuals
    ioi-t0..ioi-t2 64 IOI clean/ABC pairs per template, ABBA and BABA alternating

Usage::

    from interp import datasets
    datasets.list_datasets()                 # names
    datasets.prompts("prompts", domains=["code"])   # list[interp.reports.Prompt]
    datasets.load("ioi-t0")                  # raw JSONL rows
    datasets.path("ioi-t0")                  # file for circuits.tasks.load_jsonl
    datasets.verify()                        # sha256 of every file against the manifest
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["DATA_DIR", "list_datasets", "manifest", "path", "load", "prompts", "verify", "sample"]

DATA_DIR = Path(__file__).parent / "data"


@lru_cache(maxsize=1)
def _manifest() -> dict[str, Any]:
    return json.loads((DATA_DIR / "MANIFEST.json").read_text(encoding="utf-8"))


def manifest() -> dict[str, Any]:
    """The provenance manifest (a copy): generator, seed, licence and one entry per dataset."""
    return json.loads(json.dumps(_manifest()))


def list_datasets() -> list[str]:
    """Names of the bundled datasets."""
    return list(_manifest()["datasets"])


def _entry(name: str) -> dict[str, Any]:
    ds = _manifest()["datasets"]
    if name not in ds:
        raise KeyError(f"no bundled dataset {name!r}; available: {', '.join(ds)} "
                       "(or pass your own file with --prompts FILE.jsonl)")
    return ds[name]


def path(name: str) -> Path:
    """The JSONL file of dataset ``name``."""
    return DATA_DIR / _entry(name)["file"]


def load(name: str) -> list[dict[str, Any]]:
    """The rows of dataset ``name`` as dicts (a template-only header line of the IOI files is kept
    as the first row, as :func:`circuits.tasks.load_jsonl` expects)."""
    p = path(name)
    return [json.loads(s) for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]


def prompts(name: str = "prompts", *, domains: Sequence[str] | None = None) -> list[Any]:
    """Dataset ``name`` as :class:`interp.reports.Prompt` objects (text, domain, other keys as meta).

    ``domains`` keeps only those domains (ValueError naming unknown ones).
    """
    from interp.reports._registry import Prompt

    if _entry(name)["kind"] != "prompts":
        raise ValueError(f"dataset {name!r} holds clean/counterfactual pairs, not prompts; "
                         f"load it with circuits.tasks.load_jsonl(interp.datasets.path({name!r}), model)")
    rows = load(name)
    out = []
    for r in rows:
        r = dict(r)
        text = r.pop("text")
        domain = str(r.pop("domain", "prose"))
        r["dataset"] = name
        out.append(Prompt(text, domain, r))
    if domains is not None:
        have = {p.domain for p in out}
        bad = sorted(set(domains) - have)
        if bad:
            raise ValueError(f"dataset {name!r} has no domain(s) {bad}; it has {sorted(have)}")
        out = [p for p in out if p.domain in set(domains)]
    return out


def sample(items: Sequence[Any], n: int, *, seed: int = 0, key: Any = None) -> list[Any]:
    """``n`` items spread evenly over ``items`` sorted by ``key`` (default: text length), starting at a
    seed-dependent offset: a deterministic, length-stratified subsample (all items when n ≥ len)."""
    if n >= len(items):
        return list(items)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    k = key or (lambda p: len(getattr(p, "text", p)))
    order = sorted(range(len(items)), key=lambda i: (k(items[i]), i))
    step = len(items) / n
    import random

    off = random.Random(seed).random() * step
    picked = sorted({order[min(len(items) - 1, int(off + i * step))] for i in range(n)})
    return [items[i] for i in picked]


def verify() -> dict[str, str]:
    """Check every bundled file against the manifest's sha256; returns ``{name: sha256}``.

    Raises ``ValueError`` naming a file whose content changed (regenerate it with
    ``python -m interp.datasets._generate`` and commit the manifest with it)."""
    out = {}
    for name, e in _manifest()["datasets"].items():
        h = hashlib.sha256((DATA_DIR / e["file"]).read_bytes()).hexdigest()
        if h != e["sha256"]:
            raise ValueError(f"bundled dataset {name!r} ({e['file']}) does not match its manifest sha256; "
                             "regenerate with python -m interp.datasets._generate")
        out[name] = h
    return out
