"""ActivationStore: per-example, per-position access to captured activations (memory or disk)."""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor

from interp.results import to_jsonable
from interp.schema import SchemaSpans
from interp.capture._common import (
    FORMAT, MANIFEST, CaptureError, IncompleteStoreError, PaddingSide, Reduce, UnknownHookError, _layout,
    _natural_key,
)

__all__ = ["ActivationStore"]

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

    @property
    def str_tokens(self) -> list[list[str]]:
        """Each example's tokens as display strings (as :func:`interp.tokenize` writes them); a store
        written before token strings were recorded gives ``"<id>"`` labels."""
        names = self.meta.get("token_strings") or {}
        return [[names.get(str(t), f"<{t}>") for t in self.tokens(i).tolist()] for i in range(self.n_examples)]

    def provenance(self) -> dict[str, Any]:
        """Where a store-fed analysis' numbers came from: ``{"kind": "ActivationStore", model,
        prepend_bos, padding_side, dtype, batch_size, n_examples, prompts_sha256, path}``;
        ``prompts_sha256`` hashes the per-prompt hashes (:func:`interp.provenance.prompt_hash`)
        in order, so two stores of the same prompts agree on it."""
        import hashlib

        hashes = self.meta.get("prompt_hashes") or []
        return {"kind": "ActivationStore", "model": self.model.get("name"), "prepend_bos": self.prepend_bos,
                "padding_side": self.padding_side, "dtype": self.meta.get("dtype"),
                "batch_size": self.meta.get("batch_size"), "n_examples": self.n_examples,
                "prompts_sha256": hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:16],
                "path": str(self.path) if self.path is not None else None}

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
                outs.append(einsum(r, x, rk, "span query, head query key, key_span key -> head span key_span"))
            else:
                outs.append(einsum(r, x, "span pos, pos ... -> span ..."))
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

