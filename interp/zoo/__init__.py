"""Ground-truth model zoo: tiny transformers trained in-project with planted, verified mechanisms.

Models (``interp.load_model("toy-...")`` loads them offline as ``TransformerBridge``s with the
same hook names as the real models):

============== ======== ========== ==========================================================
name           arch     positions  planted mechanism
============== ======== ========== ==========================================================
toy-induction  Llama    RoPE, GQA  previous-token head (layer 0) → induction head (layer 1),
               (attn    2q/1kv      K-composition (Olsson et al. 2022). The other query head of
               only)                each layer was pruned during training (writes 0): the
                                   ablation control.
toy-backcopy   Llama    RoPE       Bigram-Backcopy (Guo et al. 2024): BOS sink at non-trigger
                                   positions (dormant; 0.60 mean, 0.98 at t = 1), t-1 copy at
                                   triggers (active; 0.96), small BOS value norm (0.15 vs 1.9)
toy-offset-rope Llama   RoPE       head attending to t-3 (fixed-offset copy)
toy-offset-abs GPT-2    learned    head attending to t-3 (fixed-offset copy)
toy-nope       GPT-2    none       Bigram-Backcopy without positional encoding; position is
                                   linearly recoverable after layer 0 (Haviv et al. 2022)
============== ======== ========== ==========================================================

Each model ships ``interp/zoo/weights/<name>/`` (HF ``config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json``) and ``manifest.json``: the measured ground truth
(heads, roles, positions, circuit edges, accuracies, zero-ablation table, BOS policy, training
seed and config). ``tests/test_zoo.py`` re-verifies each claim by intervention.

Reproducibility: ``train(name, seed=0)`` is bit-identical run to run on one machine
(deterministic algorithms, one thread, per-step seeded batches; toy-induction retrained here
matched its shipped weights bit for bit). On another CPU the BLAS kernels may sum in another
order and the weights drift while the mechanism reproduces: toys trained on another machine and
retrained on a second one differed by at most 0.09 / 0.011 / 0.0003 / 0.032 in any weight
(offset-rope / offset-abs / backcopy (its 3000-step version) / nope) with the same head roles and
task accuracies (within 0.006). ``interp zoo train NAME --out DIR`` prints that comparison
(:func:`compare_to_shipped`).

Public API::

    TOY_MODELS: dict[str, ToyInfo]
    model_dir(name) -> Path
    manifest(name) -> dict
    train(name, *, out_dir=None, seed=0, steps=None) -> Path
    tasks          # seeded data generators (induction_batch, backcopy_batch, offset_batch, ...)
    measure        # hook-based measurements (head ablation, attention to offsets, value norms)
    make_batch(name, n, seed) -> tasks.TaskBatch   # the task a model was trained on
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from interp.zoo import measure, tasks
from interp.zoo._specs import TOY_MODELS, ToyInfo, _check, model_dir

__all__ = ["TOY_MODELS", "ToyInfo", "model_dir", "manifest", "train", "tasks", "measure",
           "make_batch", "compare_to_shipped"]

@lru_cache(maxsize=None)
def _manifest_text(name: str) -> str:
    p = model_dir(name) / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing; retrain with `interp zoo train {name}`.")
    return p.read_text()


def manifest(name: str) -> dict[str, Any]:
    """Ground-truth manifest of ``name`` (a fresh dict each call)."""
    return json.loads(_manifest_text(name))


def train(name: str, *, out_dir: str | Path | None = None, seed: int = 0,
          steps: int | None = None, write_manifest: bool = True) -> Path:
    """Train ``name`` deterministically (see :func:`interp.zoo._train.train`)."""
    from interp.zoo._manifest import write_manifest as _write
    from interp.zoo._train import train as _train
    from interp.zoo._train import trained_info

    _manifest_text.cache_clear()
    out = _train(name, out_dir=out_dir, seed=seed, steps=steps)
    if write_manifest:
        record = json.loads((out / "training_record.json").read_text())
        _write(trained_info(name, steps), out, record)
    return out


def compare_to_shipped(name: str, trained_dir: str | Path) -> dict[str, Any]:
    """Compare a retrained copy of ``name`` (``interp zoo train NAME --out DIR``) with the shipped
    one: bit-identical weights?, the same head roles?, accuracies within 0.02?

    Training is bit-identical for one seed on one machine; on another CPU the BLAS kernels may
    sum in another order and the weights drift apart, so what must reproduce is the mechanism:
    the manifest's head roles and accuracies. Returns ``{"bit_identical", "same_roles",
    "accuracy": {key: (shipped, retrained)}, "accuracy_close", "roles": (shipped, retrained)}``.
    """
    import torch
    from safetensors.torch import load_file

    d = Path(trained_dir)
    if not (d / "model.safetensors").is_file() or not (d / "manifest.json").is_file():
        raise FileNotFoundError(f"{d} needs model.safetensors and manifest.json "
                                f"(train with `interp zoo train {name} --out {d}`)")
    a = load_file(str(model_dir(name) / "model.safetensors"))
    b = load_file(str(d / "model.safetensors"))
    bits = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ship, new = manifest(name), json.loads((d / "manifest.json").read_text())
    roles = lambda m: sorted((h["label"], h["role"]) for h in m["heads"])  # noqa: E731
    acc = {k: (v, new["accuracy"].get(k)) for k, v in ship["accuracy"].items()
           if isinstance(v, float)}
    close = all(n is not None and abs(s - n) <= 0.02 for s, n in acc.values())
    return {"bit_identical": bits, "same_roles": roles(ship) == roles(new), "accuracy": acc,
            "accuracy_close": close, "roles": (roles(ship), roles(new))}


def make_batch(name: str, n: int, seed: int = 0) -> tasks.TaskBatch:
    """``n`` examples of the task ``name`` was trained on (the backcopy bigram is fixed)."""
    _check(name)
    from interp.zoo._train import make_batch as _mb

    return _mb(TOY_MODELS[name], n, seed)
