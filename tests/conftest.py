"""Shared fixtures. Real models load once per session through interp's converted-model cache."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.manual_seed(0)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per xdist worker: two workers on two cores, no oversubscription
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct (float32) as a TransformerBridge."""
    from interp import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    """Gemma-3-270M, skipped when its optional packages are not installed."""
    from interp import load_model
    from interp.errors import ModelNotInstalledError

    try:
        return load_model("gemma3-270m")
    except ModelNotInstalledError as e:  # pragma: no cover - depends on the machine
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def toy_model():
    """Factory: ``toy_model("toy-induction")`` loads (and memoises) a zoo model."""
    from interp import load_model

    cache: dict[str, object] = {}

    def _load(name: str):
        if name not in cache:
            cache[name] = load_model(name)
        return cache[name]

    return _load


@pytest.fixture(scope="session")
def random_toy(tmp_path_factory):
    """Factory: ``random_toy("toy-induction", seed=0)`` — a zoo *architecture* with random
    weights (no training), booted as a TransformerBridge. Fast stand-in for structure tests."""
    from interp import load_model
    from interp.zoo import TOY_MODELS
    from interp.zoo._train import build_model, build_tokenizer

    cache: dict[tuple[str, int], object] = {}

    def _load(name: str, seed: int = 0):
        if (name, seed) not in cache:
            info = TOY_MODELS[name]
            hf = build_model(info, seed=seed)
            tok = build_tokenizer(int(info.task_params["n_vocab"]), int(info.model["n_ctx"]))
            d = tmp_path_factory.mktemp(f"random-{name}-{seed}")
            hf.save_pretrained(d)
            tok.save_pretrained(d)
            cache[(name, seed)] = load_model(str(d))
        return cache[(name, seed)]

    return _load


# ------------------------------------------------------------------ families × analyses table
# Tests marked ``@pytest.mark.family_table("column", ..., note=...)`` and parametrised by ``family``
# (or given family=, or naming the family in the test name) record one line per run and column
# in FAMILY_RESULTS; the README table
# is generated from it by ``python -m benchmarks.family_table``. Circuits tests use the same marker.

FAMILY_RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "benchmarks", "results", "family_results.jsonl")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "family_table(*columns, note=None, family=None): cells of the README families × "
        "analyses table (family from the 'family' parameter, or family=, or the test name)")


def _family_of_item(item, marker):
    fam = marker.kwargs.get("family")
    if fam is None and hasattr(item, "callspec"):
        fam = item.callspec.params.get("family")
    if fam is None:
        name = item.name.lower()
        from families import FAMILIES

        fam = next((f for f in sorted(FAMILIES, key=len, reverse=True) if f in name), None)
    return fam


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    marker = item.get_closest_marker("family_table")
    if marker is None or not marker.args:
        return
    failed_setup = rep.when == "setup" and rep.failed
    if rep.when != "call" and not failed_setup:
        return
    fam = _family_of_item(item, marker)
    if fam is None:
        return
    import json
    import time

    outcome = "skipped" if rep.skipped else ("passed" if rep.passed else "failed")
    lines = [json.dumps({"family": fam, "column": col, "test": item.nodeid, "outcome": outcome,
                         "note": marker.kwargs.get("note"), "time": time.time()}) + "\n"
             for col in marker.args]
    os.makedirs(os.path.dirname(FAMILY_RESULTS), exist_ok=True)
    with open(FAMILY_RESULTS, "a") as f:  # short lines per append: safe across xdist workers
        f.write("".join(lines))
