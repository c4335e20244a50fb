"""Shared fixtures. Real models load once per session through interp's converted-model cache."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.manual_seed(0)

#: fixtures that load a real pretrained model; a test using one is marked ``real_model`` (and
#: ``gemma`` for Gemma) automatically, so ``pytest -m "not slow and not real_model"`` is the fast tier
_REAL_MODEL_FIXTURES = {"smollm2": ("real_model",), "gemma": ("real_model", "gemma")}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & _REAL_MODEL_FIXTURES.keys():
            for mark in _REAL_MODEL_FIXTURES[fixture]:
                item.add_marker(mark)
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
