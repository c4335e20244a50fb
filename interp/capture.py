"""Per-position activation capture over variable-length prompt sets.

``capture(model, prompts, hooks)`` runs the model on padded batches (with attention masks; the
bridge derives RoPE position ids from the mask, so left padding gives each prompt the positions
it has unpadded) and keeps every requested hook's activations in each prompt's **own token
coordinates**: position ``t`` of example ``i`` is token ``t`` of that prompt (BOS at 0 when
prepended), padding removed. Attention patterns/scores come back per example as
``[head, len, len]``.

With ``out=DIR`` activations stream to safetensors shards (one per batch) next to a JSON
manifest, so memory stays flat however many prompts there are. The manifest is written first
with ``"complete": false`` and rewritten (atomically) with ``"complete": true`` only after the
last shard; each shard is written to a temporary file and renamed, so a shard on disk is always
whole. Running the same ``capture`` again on an interrupted directory computes only the
missing shards. :meth:`ActivationStore.load` reopens a store lazily (tensors are read from the
shard files on access).

Schema spans (:mod:`interp.schema`; Haklay et al. 2025) give prompts of different lengths a
shared position structure; :meth:`ActivationStore.by_span` reduces every span of every example
to one vector: ``x̄_{i,s} = R(x_i[start_s:end_s])`` with ``R`` one of mean, sum, first, last.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.results import atomic_write_text, to_jsonable
from interp.schema import Schema, SchemaSpans

__all__ = [
    "capture", "ActivationStore", "resolve_hooks", "CaptureError", "UnknownHookError",
    "ManifestMismatchError", "IncompleteStoreError",
]

Reduce = Literal["mean", "sum", "first", "last"]
PaddingSide = Literal["left", "right"]
MANIFEST = "manifest.json"
FORMAT = "interp.ActivationStore"
FORMAT_VERSION = 1
_ATTN_SUFFIXES = ("hook_pattern", "hook_attn_scores")


class CaptureError(InterpError, ValueError):
    """Bad input to :func:`capture` (the message names the problem and the fix)."""


class UnknownHookError(InterpError, KeyError):
    """A hook name or pattern that matches no hook of the model (near matches suggested)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ManifestMismatchError(CaptureError):
    """The output directory holds a store captured with different settings."""


class IncompleteStoreError(CaptureError):
    """A store whose capture has not finished (resume it by running the same capture again)."""


# ----------------------------------------------------------------------------------------------
# Hooks
# ----------------------------------------------------------------------------------------------


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def resolve_hooks(model: Any, hooks: str | Sequence[str]) -> list[str]:
    """Expand TransformerLens hook names and glob patterns (``"blocks.*.hook_resid_post"``).

    Exact names keep the given order; a pattern's matches are sorted naturally (layer 2 before
    layer 10). Duplicates are dropped.

    Raises:
        UnknownHookError: a name or pattern that matches nothing, with the nearest hook names.
    """
    if isinstance(hooks, str):
        hooks = [hooks]
    hooks = list(hooks)
    if not hooks:
        raise CaptureError("No hooks given: pass names or patterns such as 'blocks.*.hook_resid_post'.")
    available = list(model.hook_dict.keys())
    avail_set = set(available)
    out: list[str] = []
    for h in hooks:
        if not isinstance(h, str) or not h:
            raise CaptureError(f"Hook names must be non-empty strings, got {h!r}.")
        if any(c in h for c in "*?["):
            matches = sorted((n for n in available if fnmatch.fnmatchcase(n, h)), key=_natural_key)
            if not matches:
                near = difflib.get_close_matches(h.replace("*", "0"), available, n=5, cutoff=0.5)
                raise UnknownHookError(f"Hook pattern {h!r} matches no hook of this model. "
                                       f"Near matches: {near}. List all with sorted(model.hook_dict).")
        else:
            if h not in avail_set:
                near = difflib.get_close_matches(h, available, n=5, cutoff=0.5)
                raise UnknownHookError(f"Unknown hook {h!r}. Did you mean one of {near}? "
                                       "List all with sorted(model.hook_dict); globs like 'blocks.*.hook_resid_post' work too.")
            matches = [h]
        out.extend(m for m in matches if m not in out)
    return out


def _layout(hook: str) -> Literal["pos", "attn"]:
    """``attn``: ``[batch head q k]`` (patterns, scores); ``pos``: ``[batch pos ...]``."""
    return "attn" if hook.endswith(_ATTN_SUFFIXES) else "pos"


# ----------------------------------------------------------------------------------------------
# Validation of prompts
# ----------------------------------------------------------------------------------------------


def _check_prompts(model: Any, prompts: Sequence[str], prepend_bos: bool) -> list[int]:
    """Token lengths (BOS included); raise on empty list / empty string / too long."""
    if not prompts:
        raise CaptureError("The prompt list is empty: pass at least one prompt.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise CaptureError(f"Prompt {i} is a {type(p).__name__}, not a string: pass a list of strings.")
        if p == "":
            raise CaptureError(f"Prompt {i} is the empty string: remove it or give it text.")
    tok = model.tokenizer
    n_ctx = int(getattr(model.cfg, "n_ctx", 0) or 10**12)
    lengths: list[int] = []
    for s in range(0, len(prompts), 256):
        ids = tok(list(prompts[s: s + 256]), add_special_tokens=False)["input_ids"]
        lengths.extend(len(r) + int(prepend_bos) for r in ids)
    for i, n in enumerate(lengths):
        if n > n_ctx:
            raise CaptureError(f"Prompt {i} has {n} tokens, more than the model's context n_ctx={n_ctx}. "
                               "Shorten or split it.")
        if n == 0:
            raise CaptureError(f"Prompt {i} ({prompts[i]!r}) has no tokens: give it text, or prepend_bos=True.")
    return lengths


def _prompt_hash(p: str) -> str:
    return hashlib.sha256(p.encode("utf-8")).hexdigest()[:16]


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


def _versions() -> dict[str, str]:
    out = {}
    for d in ("posinterp", "torch", "transformers", "transformer-lens", "safetensors"):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = "not installed"
    return out


def _model_meta(model: Any) -> dict[str, Any]:
    info = getattr(model, "interp_info", None)
    cfg = model.cfg
    name = getattr(info, "name", None) or getattr(cfg, "model_name", None) or type(model).__name__
    return {
        "name": str(name),
        "hf_name": getattr(info, "hf_name", None),
        "n_layers": int(getattr(cfg, "n_layers", 0) or 0),
        "n_heads": int(getattr(cfg, "n_heads", 0) or 0),
        "d_model": int(getattr(cfg, "d_model", 0) or 0),
        "n_ctx": int(getattr(cfg, "n_ctx", 0) or 0),
    }


_FINGERPRINT_KEYS = ("model", "hooks", "dtype", "prepend_bos", "padding_side", "n_examples",
                     "prompt_hashes", "schema", "shards")


def capture(
    model: Any,
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
    from interp.tokens import tokenize

    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise CaptureError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if padding_side not in ("left", "right"):
        raise CaptureError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    names = resolve_hooks(model, hooks)
    lengths = _check_prompts(model, prompts, prepend_bos)
    spans = _apply_schema(schema, model, prompts, prepend_bos) if schema is not None else None

    n = len(prompts)
    plan = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    out_dtype = dtype
    meta: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "complete": False,
        "model": _model_meta(model), "versions": _versions(),
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else "model",
        "prepend_bos": bool(prepend_bos), "padding_side": padding_side,
        "hooks": names, "layouts": {h: _layout(h) for h in names},
        "n_examples": n, "lengths": lengths, "prompt_hashes": [_prompt_hash(p) for p in prompts],
        "schema": spans.schema if spans is not None else None,
        "spans": {"names": spans.names, "spans": spans.spans} if spans is not None else None,
        "batch_size": batch_size,
        "shards": [{"file": f"shard_{k:06d}.safetensors", "start": s, "end": e} for k, (s, e) in enumerate(plan)],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    path: Path | None = Path(out) if out is not None else None
    if path is not None:
        done = _prepare_out_dir(path, meta, overwrite)
        if done == "complete":
            return ActivationStore.load(path)
    memory: dict[str, list[Tensor | None]] = {h: [None] * n for h in names}
    memory_tokens: list[Tensor | None] = [None] * n

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="capture", unit="prompt")
    with torch.inference_mode():
        for k, (s, e) in enumerate(plan):
            shard_file = path / meta["shards"][k]["file"] if path is not None else None
            if shard_file is not None and _shard_ok(shard_file, e - s, len(names)):
                if bar is not None:
                    bar.update(e - s)
                continue
            batch = tokenize(model, prompts[s:e], prepend_bos=prepend_bos, padding_side=padding_side)
            crops = _forward_crops(model, batch, names, out_dtype)
            tensors: dict[str, Tensor] = {}
            for h in names:
                for b, x in enumerate(crops[h]):
                    if path is None:
                        memory[h][s + b] = x
                    else:
                        tensors[f"{s + b}/{h}"] = x
            del crops
            for b in range(len(batch)):
                tk = batch.tokens[b, batch.columns(b)].detach().cpu().clone()
                if path is None:
                    memory_tokens[s + b] = tk
                else:
                    tensors[f"{s + b}/tokens"] = tk
            if shard_file is not None:
                _write_shard(shard_file, tensors, s, e)
            if bar is not None:
                bar.update(e - s)
    if bar is not None:
        bar.close()
    if path is not None:
        meta["complete"] = True
        meta["completed"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_text(path / MANIFEST, json.dumps(meta, indent=1))
        return ActivationStore.load(path)
    return ActivationStore(meta, memory=memory, memory_tokens=memory_tokens, spans=spans)


class _AllHooksFired(Exception):
    """Raised by the last capture hook to skip the rest of the forward pass."""


def _forward_crops(model: Any, batch: Any, names: list[str], dtype: torch.dtype | None) -> dict[str, list[Tensor]]:
    """Run one padded batch; per hook, each example's activations cropped to its own tokens.

    Each hook crops (and copies) inside the forward pass, so later in-place updates cannot touch
    the stored values; once every requested hook has fired the pass stops (e.g. the unembedding
    is skipped when only block hooks are requested).
    """
    crops: dict[str, list[Tensor]] = {}
    cols = [batch.columns(b) for b in range(len(batch))]

    def make(name: str) -> Callable[..., None]:
        attn = _layout(name) == "attn"

        def fn(t: Tensor, hook: Any = None) -> None:
            if t.shape[0] != len(batch):
                if t.shape[0] != 1:
                    raise CaptureError(f"Hook {name!r} has leading dimension {t.shape[0]}, not the batch size "
                                       f"{len(batch)}: it cannot be captured per example.")
                t = t.expand(len(batch), *t.shape[1:])
            if not attn and (t.ndim < 2 or t.shape[1] != batch.max_len):
                raise CaptureError(f"Hook {name!r} (shape {tuple(t.shape)}) has no position axis at dimension 1: "
                                   "it cannot be captured per position.")
            out = []
            for b, c in enumerate(cols):
                x = t[b][:, c, c] if attn else t[b, c]
                out.append(x.detach().to("cpu", dtype=dtype or x.dtype, copy=True).contiguous())
            crops[name] = out
            if len(crops) == len(names):
                raise _AllHooksFired

        return fn

    kwargs: dict[str, Any] = {}
    if len(batch) > 1 and min(batch.lengths) < batch.max_len:
        kwargs["attention_mask"] = batch.attention_mask
    with model.hooks(fwd_hooks=[(n, make(n)) for n in names]):
        try:
            model(batch.tokens, **kwargs)
        except _AllHooksFired:
            pass
    missing = [n for n in names if n not in crops]
    if missing:
        raise CaptureError(f"Hooks {missing[:5]} exist but did not fire during the forward pass; "
                           "they cannot be captured from this model.")
    return crops


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


# ----------------------------------------------------------------------------------------------
# ActivationStore
# ----------------------------------------------------------------------------------------------


class ActivationStore:
    """Activations per example, hook and token position (each prompt's own coordinates).

    Indexing::

        store.get("blocks.3.hook_resid_post", i)   # [pos d_model] of example i
        store["blocks.3.attn.hook_pattern", i]     # [head q k], cropped to the prompt
        store.at("blocks.3.hook_resid_post", -1)   # [example d_model], last token of each prompt
        store.stack("blocks.*.hook_resid_post", i) # [layer pos d_model]
        store.flat("blocks.3.hook_resid_post")     # [token d_model] + example/position of each row
        store.by_span("blocks.3.hook_resid_post", "mean")  # [example span d_model] (needs a schema)

    Attributes:
        hooks, n_examples, lengths, prepend_bos, padding_side, dtype, model (metadata dict),
        spans (:class:`SchemaSpans`-like names/spans, or None), complete, path.
    """

    def __init__(
        self,
        meta: dict[str, Any],
        *,
        memory: dict[str, list[Tensor | None]] | None = None,
        memory_tokens: list[Tensor | None] | None = None,
        spans: SchemaSpans | None = None,
        path: Path | None = None,
    ) -> None:
        self.meta = meta
        self.path = path
        self._memory = memory
        self._memory_tokens = memory_tokens
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._shard_of: list[int] = []
        for k, sh in enumerate(meta["shards"]):
            self._shard_of.extend([k] * (sh["end"] - sh["start"]))
        sp = meta.get("spans")
        self.span_names: list[str] | None = list(sp["names"]) if sp else None
        self._spans: list[list[tuple[int, int]]] | None = (
            [[(int(a), int(b)) for a, b in row] for row in sp["spans"]] if sp else None)
        self.schema_spans = spans

    # -- metadata --------------------------------------------------------------------------------

    @property
    def hooks(self) -> list[str]:
        return list(self.meta["hooks"])

    @property
    def n_examples(self) -> int:
        return int(self.meta["n_examples"])

    @property
    def lengths(self) -> list[int]:
        return list(self.meta["lengths"])

    @property
    def prepend_bos(self) -> bool:
        return bool(self.meta["prepend_bos"])

    @property
    def padding_side(self) -> str:
        return str(self.meta["padding_side"])

    @property
    def complete(self) -> bool:
        return bool(self.meta["complete"]) if self.path is not None else True

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.meta["model"])

    @property
    def spans(self) -> list[list[tuple[int, int]]] | None:
        """``spans[example][span] = (start, end)`` token ranges (own coordinates), or None."""
        return self._spans

    def __len__(self) -> int:
        return self.n_examples

    def __repr__(self) -> str:
        where = f"on disk at {self.path}" if self.path is not None else "in memory"
        return (f"ActivationStore({self.n_examples} examples, {len(self.hooks)} hooks, {where}, "
                f"prepend_bos={self.prepend_bos}, complete={self.complete})")

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, allow_incomplete: bool = False) -> "ActivationStore":
        """Open a store written by ``capture(..., out=path)``; tensors are read lazily on access.

        Raises:
            FileNotFoundError: no manifest at ``path``.
            IncompleteStoreError: the capture has not finished (unless ``allow_incomplete``).
        """
        path = Path(path)
        mpath = path / MANIFEST
        if not mpath.exists():
            raise FileNotFoundError(f"No activation store at {path} (missing {MANIFEST}): "
                                    "write one with interp.capture(..., out=path).")
        meta = json.loads(mpath.read_text())
        if meta.get("format") != FORMAT:
            raise CaptureError(f"{mpath} is not an activation-store manifest (format {meta.get('format')!r}).")
        if not meta.get("complete") and not allow_incomplete:
            raise IncompleteStoreError(f"The activation store at {path} is incomplete (its capture was interrupted). "
                                       "Run the same capture(..., out=path) again to resume it, or "
                                       "load(path, allow_incomplete=True) to read the finished shards.")
        return cls(meta, path=path)

    def _handle(self, shard: int) -> Any:
        from safetensors import safe_open

        file = self.meta["shards"][shard]["file"]
        if file in self._handles:
            self._handles.move_to_end(file)
            return self._handles[file]
        assert self.path is not None
        fpath = self.path / file
        if not fpath.exists():
            raise IncompleteStoreError(f"Shard {file} of {self.path} has not been captured yet: rerun the same "
                                       "capture(..., out=path) to resume.")
        h = safe_open(str(fpath), framework="pt")
        self._handles[file] = h
        if len(self._handles) > 8:
            self._handles.popitem(last=False)
        return h

    def _check_example(self, i: int) -> int:
        n = self.n_examples
        if not -n <= i < n:
            raise IndexError(f"Example {i} out of range: the store holds {n} examples.")
        return i % n

    def _check_hook(self, hook: str) -> None:
        if hook not in self.meta["layouts"]:
            near = difflib.get_close_matches(hook, self.hooks, n=5, cutoff=0.5)
            raise UnknownHookError(f"Hook {hook!r} was not captured in this store. Near matches: {near}. "
                                   f"Captured hooks: {len(self.hooks)} (see store.hooks).")

    # -- access ----------------------------------------------------------------------------------

    def get(self, hook: str, example: int) -> Tensor:
        """Activations of one example: ``[pos ...]`` or, for attention patterns/scores, ``[head q k]``."""
        self._check_hook(hook)
        i = self._check_example(example)
        if self._memory is not None:
            x = self._memory[hook][i]
            assert x is not None
            return x
        return self._handle(self._shard_of[i]).get_tensor(f"{i}/{hook}")

    def __getitem__(self, key: tuple[str, int] | tuple[str, int, Any]) -> Tensor:
        if not isinstance(key, tuple) or len(key) not in (2, 3):
            raise KeyError("Index a store as store[hook, example] or store[hook, example, positions].")
        x = self.get(key[0], key[1])
        if len(key) == 3:
            return x[key[2]] if _layout(key[0]) == "pos" else x[:, key[2]]
        return x

    def tokens(self, example: int) -> Int[Tensor, " pos"]:
        """Token ids of one example (own coordinates, BOS included when prepended)."""
        i = self._check_example(example)
        if self._memory_tokens is not None:
            t = self._memory_tokens[i]
            assert t is not None
            return t
        return self._handle(self._shard_of[i]).get_tensor(f"{i}/tokens")

    def layout(self, hook: str) -> str:
        """``"pos"`` (``[pos ...]`` per example) or ``"attn"`` (``[head q k]`` per example)."""
        self._check_hook(hook)
        return str(self.meta["layouts"][hook])

    def iter(self, hook: str) -> Iterator[Tensor]:
        """Every example's activations in order (one shard in memory at a time on disk)."""
        for i in range(self.n_examples):
            yield self.get(hook, i)

    def match(self, pattern: str) -> list[str]:
        """Captured hooks matching a glob pattern, naturally sorted."""
        found = sorted((h for h in self.hooks if fnmatch.fnmatchcase(h, pattern)), key=_natural_key)
        if not found:
            raise UnknownHookError(f"No captured hook matches {pattern!r}; captured: {self.hooks[:6]}...")
        return found

    def stack(self, pattern: str, example: int) -> Tensor:
        """``[hook ...]``: the matching hooks of one example stacked (e.g. ``[layer pos d_model]``)."""
        return torch.stack([self.get(h, example) for h in self.match(pattern)])

    def at(self, hook: str, position: int) -> Tensor:
        """``[example ...]``: the activation at token ``position`` of each prompt (negative counts
        from each prompt's end, so ``-1`` is every prompt's last token)."""
        if self.layout(hook) != "pos":
            raise CaptureError(f"at() needs a [pos ...] hook; {hook!r} is an attention pattern: use get().")
        rows = []
        for i, n in enumerate(self.lengths):
            if not -n <= position < n:
                raise IndexError(f"Position {position} does not exist in example {i} ({n} tokens).")
            rows.append(self.get(hook, i)[position])
        return torch.stack(rows)

    def flat(self, hook: str) -> tuple[Tensor, Int[Tensor, " token"], Int[Tensor, " token"]]:
        """All tokens of all examples as rows: ``(x [token ...], example [token], position [token])``."""
        if self.layout(hook) != "pos":
            raise CaptureError(f"flat() needs a [pos ...] hook; {hook!r} is an attention pattern.")
        xs = list(self.iter(hook))
        ex = torch.cat([torch.full((len(x),), i, dtype=torch.long) for i, x in enumerate(xs)])
        pos = torch.cat([torch.arange(len(x)) for x in xs])
        return torch.cat(xs), ex, pos

    def padded(self, hook: str, *, padding_side: PaddingSide = "right", fill: float = 0.0) -> tuple[Tensor, Int[Tensor, "example pos"]]:
        """Pad all examples to the longest: ``([example pos ...] or [example head q k], mask [example pos])``."""
        w = max(self.lengths)
        mask = torch.zeros(self.n_examples, w, dtype=torch.long)
        first = self.get(hook, 0)
        attn = self.layout(hook) == "attn"
        shape = (self.n_examples, first.shape[0], w, w) if attn else (self.n_examples, w, *first.shape[1:])
        out = torch.full(shape, fill, dtype=first.dtype)
        for i, x in enumerate(self.iter(hook)):
            n = self.lengths[i]
            s = w - n if padding_side == "left" else 0
            mask[i, s: s + n] = 1
            if attn:
                out[i, :, s: s + n, s: s + n] = x
            else:
                out[i, s: s + n] = x
        return out, mask

    # -- schema spans ----------------------------------------------------------------------------

    def _reduction(self, i: int, reduce: Reduce) -> Float[Tensor, "span pos"]:
        if self._spans is None:
            raise CaptureError("This store has no schema: capture with schema=Schema.from_template(...) to use by_span().")
        n = self.lengths[i]
        rows = self._spans[i]
        r = torch.zeros(len(rows), n)
        for j, (s, e) in enumerate(rows):
            if reduce == "mean":
                r[j, s:e] = 1.0 / (e - s)
            elif reduce == "sum":
                r[j, s:e] = 1.0
            elif reduce == "first":
                r[j, s] = 1.0
            elif reduce == "last":
                r[j, e - 1] = 1.0
            else:
                raise CaptureError(f"reduce must be one of mean, sum, first, last; got {reduce!r}.")
        return r

    def by_span(self, hook: str, reduce: Reduce = "mean", *, key_reduce: Reduce | None = None) -> Tensor:
        """One value per schema span: ``[example span ...]``, or ``[example head span_q span_k]`` for
        attention patterns (queries reduced with ``reduce``, keys with ``key_reduce``, default the
        same; ``reduce="mean", key_reduce="sum"`` gives the mean attention a span's queries pay to
        each span). ``x̄_{i,s} = R_s x_i`` with ``R_s`` the mean/sum/first/last row over span ``s``."""
        attn = self.layout(hook) == "attn"
        outs = []
        for i, x in enumerate(self.iter(hook)):
            r = self._reduction(i, reduce).to(x.dtype)
            if attn:
                rk = self._reduction(i, key_reduce or reduce).to(x.dtype)
                outs.append(torch.einsum("sq,hqk,tk->hst", r, x, rk))
            else:
                outs.append(torch.einsum("sp,p...->s...", r, x))
        return torch.stack(outs)

    # -- summaries ---------------------------------------------------------------------------------

    def norms_by_position(self, pattern: str = "*") -> tuple[list[str], Float[Tensor, "hook pos"], Int[Tensor, " pos"]]:
        """Mean L2 norm of each ``[pos ...]`` hook at each position (over the examples that have it)."""
        hooks = [h for h in self.match(pattern) if self.layout(h) == "pos"]
        w = max(self.lengths)
        tot = torch.zeros(len(hooks), w)
        cnt = torch.zeros(w, dtype=torch.long)
        for n in self.lengths:
            cnt[:n] += 1
        for k, h in enumerate(hooks):
            for x in self.iter(h):
                v = x.float().reshape(x.shape[0], -1).norm(dim=-1)
                tot[k, : len(v)] += v
        return hooks, tot / cnt.clamp_min(1), cnt

    def to_json(self) -> dict[str, Any]:
        """Summary: metadata (model, versions, BOS policy, dtype, hooks) and per-example lengths."""
        keep = ("format", "format_version", "complete", "model", "versions", "dtype", "prepend_bos",
                "padding_side", "hooks", "n_examples", "lengths", "batch_size", "created", "schema")
        d = {k: self.meta.get(k) for k in keep}
        d["type"] = "ActivationStore"
        d["complete"] = self.complete
        d["path"] = str(self.path) if self.path is not None else None
        d["span_names"] = self.span_names
        return to_jsonable(d)

    def plot(self, pattern: str = "*") -> Any:
        """Heatmap of log10 mean ‖x‖ per captured ``[pos ...]`` hook (rows) and position (columns)."""
        import plotly.graph_objects as go

        hooks, norms, cnt = self.norms_by_position(pattern)
        if not hooks:
            raise CaptureError("plot() shows [pos ...] hooks (e.g. hook_resid_post); none were captured.")
        fig = go.Figure(go.Heatmap(
            z=torch.log10(norms.clamp_min(1e-8)).tolist(), x=list(range(norms.shape[1])), y=hooks,
            customdata=norms.tolist(), colorscale="Viridis", colorbar={"title": "log10 ‖x‖"},
            hovertemplate="%{y}<br>position %{x}<br>mean ‖x‖ = %{customdata:.4g}<extra></extra>"))
        fig.update_layout(
            title=f"Mean activation norm by position ({self.n_examples} prompts, prepend_bos={self.prepend_bos})",
            xaxis_title="token position (own coordinates)", yaxis_title="hook", yaxis_autorange="reversed",
            height=max(300, 18 * len(hooks) + 150))
        return fig
