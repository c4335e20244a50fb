"""capture(): batching, cropping to each prompt's own tokens, shards and manifest."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from interp.heap import release_freed_memory
from interp.provenance import model_name, package_versions, prompt_hash
from interp.results import atomic_write_text
from interp.schema import Schema, SchemaSpans
from interp.tokens import bos_token_id, check_prompt_length, check_prompt_texts, context_length, token_strings
from interp.capture._common import (
    FORMAT, FORMAT_VERSION, MANIFEST, CaptureError, ManifestMismatchError, PaddingSide, _layout,
    resolve_hooks,
)
from interp.capture._engine import Hook, Reducer, StreamBatch, stream
from interp.capture._store import ActivationStore
from interp.types import Model

__all__ = ["capture"]

# ----------------------------------------------------------------------------------------------
# Validation of prompts
# ----------------------------------------------------------------------------------------------


def _check_prompts(model: Any, prompts: Sequence[str], prepend_bos: bool) -> tuple[list[int], set[int]]:
    """Token lengths (BOS included) and the set of token ids the prompts use (BOS included; the
    same tokenisation as :func:`interp.tokenize`); raise on empty list / empty string / too long."""
    check_prompt_texts(prompts, error=CaptureError, type_error=CaptureError)
    tok = model.tokenizer
    n_ctx = context_length(model)
    lengths: list[int] = []
    used: set[int] = {bos_token_id(model)} if prepend_bos else set()
    for s in range(0, len(prompts), 256):
        ids = tok(list(prompts[s: s + 256]), add_special_tokens=False)["input_ids"]
        lengths.extend(len(r) + int(prepend_bos) for r in ids)
        used.update(int(t) for r in ids for t in r)
    for i, n in enumerate(lengths):
        check_prompt_length(i, n, n_ctx, error=CaptureError)
        if n == 0:
            raise CaptureError(f"Prompt {i} ({prompts[i]!r}) has no tokens: give it text, or prepend_bos=True.")
    return lengths, used


def _apply_schema(schema: Schema | SchemaSpans, model: Any, prompts: list[str], prepend_bos: bool) -> SchemaSpans:
    """Apply a schema in chunks (keeps tokenisation memory flat); raises on any failing example."""
    if isinstance(schema, SchemaSpans):
        if schema.prompts != prompts:
            raise CaptureError("The SchemaSpans given as schema= were built for other prompts: "
                               "pass the Schema itself or spans of these prompts.")
        if schema.prepend_bos != prepend_bos:
            raise CaptureError(f"The schema spans were built with prepend_bos={schema.prepend_bos} but the capture "
                               f"uses prepend_bos={prepend_bos}: use the same BOS policy.")
        schema.raise_for_failures()
        return schema
    parts: list[SchemaSpans] = []
    for s in range(0, len(prompts), 256):
        parts.append(schema.apply(prompts[s: s + 256], model, prepend_bos=prepend_bos, strict=False))
    merged = SchemaSpans(
        names=parts[0].names, spans=[r for p in parts for r in p.spans], lengths=[n for p in parts for n in p.lengths],
        prepend_bos=prepend_bos, prompts=list(prompts), str_tokens=[t for p in parts for t in p.str_tokens],
        failures=[], schema=parts[0].schema)
    for k, p in enumerate(parts):
        for f in p.failures:
            merged.failures.append(type(f)(f.index + 256 * k, f.prompt, f.reason))
    merged.raise_for_failures()
    return merged


# ----------------------------------------------------------------------------------------------
# capture
# ----------------------------------------------------------------------------------------------


def _model_dtype(model: Any) -> torch.dtype:
    try:
        return next(model.parameters()).dtype
    except (StopIteration, AttributeError, TypeError):
        return torch.float32


def _spec_meta(model: Any) -> dict[str, Any] | None:
    """:func:`interp.spec.model_spec` of the model as JSON without its family (RoPE analyses of a
    store read it), or ``None`` for a model whose family has no adapter."""
    from interp.families import UnsupportedFamilyError
    from interp.spec import model_spec

    try:
        d = model_spec(model).to_json()
    except UnsupportedFamilyError:
        return None
    d.pop("family", None)
    return d


def _model_meta(model: Any) -> dict[str, Any]:
    info = getattr(model, "interp_info", None)
    cfg = model.cfg
    return {
        "name": model_name(model),
        "hf_name": getattr(info, "hf_name", None),
        "n_layers": int(getattr(cfg, "n_layers", 0) or 0),
        "n_heads": int(getattr(cfg, "n_heads", 0) or 0),
        "d_model": int(getattr(cfg, "d_model", 0) or 0),
        "n_ctx": int(getattr(cfg, "n_ctx", 0) or 0),
    }


_FINGERPRINT_KEYS = ("model", "hooks", "dtype", "prepend_bos", "padding_side", "n_examples",
                     "prompt_hashes", "schema", "spans")


def capture(
    model: Model,
    prompts: str | Sequence[str],
    hooks: str | Sequence[str],
    *,
    schema: Schema | SchemaSpans | None = None,
    batch_size: int = 8,
    out: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | None = None,
    prepend_bos: bool = True,
    padding_side: PaddingSide = "right",
    overwrite: bool = False,
    progress: bool = False,
) -> "ActivationStore":
    """Capture hook activations per example and token position.

    Args:
        model: a TransformerBridge (e.g. from :func:`interp.load_model`).
        prompts: the prompts (any lengths).
        hooks: TransformerLens hook names and/or glob patterns, e.g.
            ``["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"]``.
        schema: a :class:`~interp.schema.Schema` (or its applied spans) for :meth:`ActivationStore.by_span`;
            every prompt must fit it (else :class:`~interp.schema.SchemaError`, before any forward pass).
        batch_size: prompts per forward pass (and per shard with ``out``).
        out: directory to stream safetensors shards and a manifest to; resumes an interrupted
            capture with the same settings.
        dtype: store activations in this dtype (default: as the model computes them).
        prepend_bos: prepend the model's BOS token (recorded in the store).
        padding_side: padding of the batches (results are the same either way; recorded).
        overwrite: with ``out``, delete a store with different settings instead of raising.
        progress: show a tqdm progress bar.

    Returns:
        :class:`ActivationStore` (lazy, on disk, when ``out`` is given).

    Raises:
        CaptureError: empty prompt list, empty prompt, prompt longer than ``n_ctx``, bad arguments.
        UnknownHookError: a hook name or pattern matching nothing (near matches suggested).
        SchemaError: prompts that do not fit ``schema`` (each one named, with the reason).
        ManifestMismatchError: ``out`` holds a store captured with other settings.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise CaptureError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if padding_side not in ("left", "right"):
        raise CaptureError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    names = resolve_hooks(model, hooks)
    lengths, used_ids = _check_prompts(model, prompts, prepend_bos)
    spans = _apply_schema(schema, model, prompts, prepend_bos) if schema is not None else None

    n = len(prompts)
    plan = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    out_dtype = dtype
    meta: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "complete": False,
        "model": _model_meta(model), "versions": package_versions(),
        "dtype": str(dtype if dtype is not None else _model_dtype(model)).replace("torch.", ""),
        "prepend_bos": bool(prepend_bos), "padding_side": padding_side,
        "hooks": names, "layouts": {h: _layout(h) for h in names},
        "n_examples": n, "lengths": lengths, "prompt_hashes": [prompt_hash(p) for p in prompts],
        "schema": spans.schema if spans is not None else None,
        "spans": {"names": spans.names, "spans": spans.spans} if spans is not None else None,
        "batch_size": batch_size, "spec": _spec_meta(model),
        "shards": [{"file": f"shard_{k:06d}.safetensors", "start": s, "end": e} for k, (s, e) in enumerate(plan)],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    meta = json.loads(json.dumps(meta))  # plain JSON types, so it compares equal to a stored manifest
    path: Path | None = Path(out) if out is not None else None
    if path is not None:
        done = _prepare_out_dir(path, meta, overwrite)
        if done == "complete":
            return ActivationStore.load(path)
        plan = [(sh["start"], sh["end"]) for sh in meta["shards"]]
    memory: dict[str, list[Tensor | None]] = {h: [None] * n for h in names}
    memory_tokens: list[Tensor | None] = [None] * n

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="capture", unit="prompt")
    todo: list[tuple[int, int, Path | None]] = []
    for k, (s, e) in enumerate(plan):
        shard_file = path / meta["shards"][k]["file"] if path is not None else None
        if shard_file is not None and _shard_ok(shard_file, e - s, len(names)):
            if bar is not None:
                bar.update(e - s)
            continue
        todo.append((s, e, shard_file))
    for s, e, shard_file in todo:
        crops: dict[str, list[Tensor]] = {}
        sb_tokens: list[Tensor] = []
        stream(model, prompts[s:e], _crop_reducer(names, out_dtype, crops, sb_tokens), batch_size=e - s,
               prepend_bos=prepend_bos, padding_side=padding_side, stop_early=True, require_all_fired=True)
        tensors: dict[str, Tensor] = {}
        for h in names:
            for b, x in enumerate(crops[h]):
                if path is None:
                    memory[h][s + b] = x
                else:
                    tensors[f"{s + b}/{h}"] = x
        del crops
        for b, tk in enumerate(sb_tokens):
            if path is None:
                memory_tokens[s + b] = tk
            else:
                tensors[f"{s + b}/tokens"] = tk
        if shard_file is not None:
            _write_shard(shard_file, tensors, s, e)
            del tensors
            release_freed_memory()  # shards of different widths leave freed blocks of many sizes
        if bar is not None:
            bar.update(e - s)
    if bar is not None:
        bar.close()
    # the display string of every token id the store holds (str_tokens of a store-fed analysis)
    ids = sorted(used_ids)
    meta["token_strings"] = dict(zip((str(i) for i in ids), token_strings(model, ids)))
    if path is not None:
        meta["complete"] = True
        meta["completed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_text(path / MANIFEST, json.dumps(meta, indent=1))
        return ActivationStore.load(path)
    return ActivationStore(meta, memory=memory, memory_tokens=memory_tokens, spans=spans)


def _crop_reducer(names: list[str], dtype: torch.dtype | None, crops: dict[str, list[Tensor]],
                  tokens: list[Tensor]) -> Reducer:
    """Reducer of :func:`capture`: per hook, each example's activations cropped to its own tokens.

    Each hook crops (and copies) inside the forward pass, so later in-place updates cannot touch
    the stored values; the engine stops the pass once every requested hook has fired (e.g. the
    unembedding is skipped when only block hooks are requested).
    """

    def reducer(sb: StreamBatch) -> list[Hook]:
        n_rows = len(sb)
        tokens.extend(sb.tokens[b, :n].detach().cpu().clone() for b, n in enumerate(sb.lengths))

        def make(name: str) -> Callable[..., None]:
            attn = _layout(name) == "attn"

            def fn(t: Tensor, hook: Any = None) -> None:
                if t.shape[0] != n_rows:
                    if t.shape[0] != 1:
                        raise CaptureError(f"Hook {name!r} has leading dimension {t.shape[0]}, not the batch size "
                                           f"{n_rows}: it cannot be captured per example.")
                    t = t.expand(n_rows, *t.shape[1:])
                if not attn and (t.ndim < 2 or t.shape[1] != sb.width):
                    raise CaptureError(f"Hook {name!r} (shape {tuple(t.shape)}) has no position axis at dimension 1: "
                                       "it cannot be captured per position.")
                out = []
                for b, n in enumerate(sb.lengths):
                    x = t[b][:, :n, :n] if attn else t[b, :n]
                    out.append(x.detach().to("cpu", dtype=dtype or x.dtype, copy=True).contiguous())
                crops[name] = out

            return fn

        return [(n, make(n)) for n in names]

    return reducer


def _prepare_out_dir(path: Path, meta: dict[str, Any], overwrite: bool) -> str:
    """Create/validate ``path``. Returns ``"complete"``, ``"resume"`` or ``"new"``."""
    mpath = path / MANIFEST
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ManifestMismatchError(f"{mpath} is not a readable activation-store manifest ({e}). "
                                        "Use another out directory, or delete this one.") from e
        diff = [k for k in _FINGERPRINT_KEYS if old.get(k) != meta.get(k)] if old.get("format") == FORMAT else ["format"]
        if not diff:
            # same capture: keep the stored shard plan and creation time (batch_size may differ now)
            for k in ("shards", "batch_size", "created"):
                meta[k] = old[k]
        if diff:
            if not overwrite:
                detail = "; ".join(f"{k}: stored {_short(old.get(k))} vs now {_short(meta.get(k))}" for k in diff[:4])
                raise ManifestMismatchError(
                    f"{path} holds an activation store captured with different settings ({detail}). "
                    "Use another out directory, delete this one, or pass overwrite=True to replace it.")
            shutil.rmtree(path)
        elif old.get("complete"):
            return "complete"
        else:
            return "resume"
    elif path.exists() and any(path.iterdir()):
        raise ManifestMismatchError(f"{path} exists, is not empty and holds no activation-store manifest: "
                                    "use an empty or new directory.")
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(mpath, json.dumps(meta, indent=1))
    return "new"


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _write_shard(file: Path, tensors: dict[str, Tensor], start: int, end: int) -> None:
    """Write one shard atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    tmp = file.with_name(file.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"start": str(start), "end": str(end)})
    os.replace(tmp, file)


def _shard_ok(file: Path, n_examples: int, n_hooks: int) -> bool:
    """A shard on disk that is whole (renamed into place, readable, with every tensor)."""
    if not file.exists():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as f:
            return len(list(f.keys())) == n_examples * (n_hooks + 1)
    except Exception:  # noqa: BLE001 - any unreadable shard is recomputed
        return False


