"""The streaming activation engine: the one place that runs a model to collect activations.

Every analysis that reads activations (``capture``/:class:`ActivationStore`, sinks, heads and
``scan``, neurons, the RoPE analyses, active–dormant heads, the atlas' q/k and pattern reads, and
``probes.collect``) declares what it needs as a **reducer**: a function that receives one
:class:`StreamBatch` and returns TransformerLens forward hooks ``(name, fn)``. :func:`stream`

1. tokenises the prompts (through :func:`interp.tokens.tokenize`) or slices an already tokenised
   batch, in mini-batches of ``batch_size`` prompts;
2. pads each mini-batch to its own widest prompt (``pad="mask"``: pad id + attention mask, right
   or left; ``pad="repeat_last"``: each prompt continued with copies of its last token and no
   mask, exact under causal attention for the real tokens);
3. runs one forward pass with the reducer's hooks (no gradients), optionally stopping once every
   hook has fired, and hands the logits to ``on_logits``;
4. gives every hook its activation in each prompt's **own coordinates**: column ``t`` of row
   ``b`` is token ``t`` of prompt ``batch.indices[b]`` (BOS at 0 when prepended), the padding to
   the right of ``lengths[b]`` and marked by ``batch.valid``. With right padding this is the
   padded tensor itself (no copy); with left padding each row is shifted (and, for
   ``[batch head q k]`` patterns/scores, both position axes);
5. drops its references after each mini-batch, so memory is one mini-batch of activations plus
   whatever the reducer keeps.

The same reducer can be fed from an existing :class:`~interp.capture.ActivationStore` instead of
a live model (:func:`stream` with the store as ``source``): the stored per-prompt activations are
re-padded (zeros right of each prompt) into mini-batches of the same shape and the reducer's hook
functions are called with them; a hook the store lacks raises :class:`CaptureError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Literal, Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.capture._common import CaptureError, UnknownHookError, _layout

__all__ = ["StreamBatch", "Hook", "Reducer", "stream", "valid_mask"]

Hook = tuple[str, Callable[..., Any]]
PadMode = Literal["mask", "repeat_last"]


def valid_mask(lengths: Sequence[int], width: int, device: Any = "cpu") -> Bool[Tensor, "batch pos"]:
    """``valid[b, t] = t < lengths[b]`` (own coordinates: real tokens first, padding after)."""
    return torch.arange(width, device=device)[None, :] < torch.tensor(list(lengths), device=device)[:, None]


@dataclass
class StreamBatch:
    """One mini-batch as a reducer sees it, in the prompts' own coordinates.

    Attributes:
        offset: index of the first prompt of the mini-batch (prompts are visited in order unless
            ``order="length"``; then use ``indices``).
        indices: the prompt index of each row.
        tokens: ``[batch pos]`` token ids; row ``b`` holds its prompt's ``lengths[b]`` tokens from
            column 0 (padding after).
        lengths: real tokens per row (BOS included).
        padding_side: how the model saw the batch (``"right"``/``"left"``; ``"repeat_last"`` pads right).
    """

    offset: int
    indices: list[int]
    tokens: Int[Tensor, "batch pos"]
    lengths: list[int]
    padding_side: str = "right"
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def width(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def valid(self) -> Bool[Tensor, "batch pos"]:
        """``t < lengths[b]`` on the tokens' device."""
        return valid_mask(self.lengths, self.width, self.tokens.device)


Reducer = Callable[[StreamBatch], Sequence[Hook]]


#: how many :func:`stream` calls are running (the tests assert every forward pass happens inside one)
_DEPTH = 0


class _AllHooksFired(Exception):
    """Raised after the last hook of a ``stop_early`` pass, to skip the rest of the forward."""


# ----------------------------------------------------------------------------------------------
# Plans: which rows form each mini-batch, and their padded tokens as the model sees them
# ----------------------------------------------------------------------------------------------


@dataclass
class _Planned:
    sb: StreamBatch
    model_tokens: Tensor  # what the model gets (padded per `padding_side`)
    attention_mask: Tensor | None  # passed to the model only when some row is padded
    starts: list[int]  # column of each row's first real token in model_tokens


def _is_pretokenised(prompts: Any) -> bool:
    return hasattr(prompts, "tokens") and hasattr(prompts, "attention_mask") and hasattr(prompts, "lengths")


def _plan(model: Any, prompts: Any, *, batch_size: int, prepend_bos: bool, padding_side: str, pad: PadMode,
          order: str, always_mask: bool = False) -> tuple[int, Callable[[int, list[int]], _Planned], list[list[int]]]:
    """Number of prompts, a builder of one mini-batch, and the row indices of each mini-batch."""
    if _is_pretokenised(prompts):
        n = len(prompts.lengths)
        lengths_all = [int(x) for x in prompts.lengths]
    elif isinstance(prompts, str):
        prompts = [prompts]
        n = len(prompts)
        lengths_all = None
    else:
        prompts = list(prompts)
        n = len(prompts)
        lengths_all = None
        if n and not isinstance(prompts[0], str):  # token id sequences (own coordinates)
            prompts = [torch.as_tensor(p).long().flatten() for p in prompts]
            lengths_all = [int(p.numel()) for p in prompts]
    if pad == "repeat_last" and (_is_pretokenised(prompts) or (n and isinstance(prompts[0], str))):
        raise CaptureError("pad='repeat_last' needs prompts given as token id sequences (own coordinates).")
    if order == "length":
        if lengths_all is None:
            raise CaptureError("order='length' needs token lengths: pass tokenised prompts.")
        idx = sorted(range(n), key=lambda i: lengths_all[i])
    elif order == "given":
        idx = list(range(n))
    else:
        raise CaptureError(f"order must be 'given' or 'length', got {order!r}.")
    chunks = [idx[s:s + batch_size] for s in range(0, n, batch_size)]
    dev = getattr(getattr(model, "cfg", None), "device", None) if model is not None else None

    def build(k: int, rows: list[int]) -> _Planned:
        offset = rows[0]
        if _is_pretokenised(prompts):
            if rows != list(range(rows[0], rows[0] + len(rows))):
                raise CaptureError("A pre-tokenised batch is streamed in its own order (order='given').")
            side = getattr(prompts, "padding_side", "right")
            lengths = lengths_all[offset:offset + len(rows)]  # type: ignore[index]
            width = max(lengths)
            full = prompts.tokens.shape[1]
            cols = slice(full - width, full) if side == "left" else slice(0, width)
            toks = prompts.tokens[offset:offset + len(rows), cols]
            mask = prompts.attention_mask[offset:offset + len(rows), cols]
            return _finish_plan(offset, rows, toks, mask, lengths, side, pad="mask", always_mask=always_mask)
        if isinstance(prompts[0], str):
            from interp.tokens import tokenize

            tb = tokenize(model, [prompts[i] for i in rows], prepend_bos=prepend_bos, padding_side=padding_side)
            toks = tb.tokens if dev is None else tb.tokens.to(dev)
            mask = tb.attention_mask.to(toks.device)
            return _finish_plan(offset, rows, toks, mask, list(tb.lengths), padding_side, pad="mask",
                                meta={"token_batch": tb}, always_mask=always_mask)
        seqs = [prompts[i].cpu() for i in rows]
        lengths = [int(s.numel()) for s in seqs]
        width = max(lengths)
        if pad == "repeat_last":
            toks = torch.stack([torch.cat([s, s[-1:].expand(width - s.numel())]) for s in seqs])
            side = "right"
        else:
            tk = model.tokenizer
            pid = tk.pad_token_id if tk.pad_token_id is not None else (tk.eos_token_id or 0)
            side = padding_side
            rows_t = []
            for s in seqs:
                fill = torch.full((width - s.numel(),), pid, dtype=torch.long)
                rows_t.append(torch.cat([fill, s]) if side == "left" else torch.cat([s, fill]))
            toks = torch.stack(rows_t)
        if dev is not None:
            toks = toks.to(dev)
        mask = valid_mask(lengths, width, toks.device).long()
        if side == "left":
            mask = mask.flip(1)
        return _finish_plan(offset, rows, toks, mask, lengths, side, pad=pad, always_mask=always_mask)

    return n, build, chunks


def _finish_plan(offset: int, rows: list[int], toks: Tensor, mask: Tensor, lengths: list[int], side: str, *,
                 pad: str, meta: dict[str, Any] | None = None, always_mask: bool = False) -> _Planned:
    width = int(toks.shape[1])
    starts = [width - n if side == "left" else 0 for n in lengths]
    own = toks if side != "left" else _shift_rows(toks, starts, dim=1)
    sb = StreamBatch(offset, list(rows), own, list(lengths), "repeat_last" if pad == "repeat_last" else side,
                     meta=meta or {})
    am = mask if (pad == "mask" and (always_mask or min(lengths) < width)) else None
    return _Planned(sb, toks, am, starts)


def _shift_rows(x: Tensor, starts: list[int], *, dim: int, dim2: int | None = None) -> Tensor:
    """Row ``b`` of ``x`` moved left by ``starts[b]`` along ``dim`` (and ``dim2``); vacated cells are 0."""
    if not any(starts):
        return x
    out = torch.zeros_like(x)
    for b, s in enumerate(starts):
        w = x.shape[dim] - s
        src = x[b].narrow(dim - 1, s, w)
        dst = out[b].narrow(dim - 1, 0, w)
        if dim2 is not None:
            src = src.narrow(dim2 - 1, s, w)
            dst = dst.narrow(dim2 - 1, 0, w)
        dst.copy_(src)
    return out


def _own_coordinates(fn: Callable[..., Any], name: str, starts: list[int], width: int) -> Callable[..., Any]:
    """Wrap a hook so it sees left-padded activations in own coordinates (read-only).

    ``[batch pos ...]`` activations (and ``[batch head q k]`` for patterns/scores) are shifted per
    row; a leading batch axis of 1 is broadcast first; anything without a position axis of the
    padded width is passed unchanged.
    """
    attn = _layout(name) == "attn"
    n_rows = len(starts)

    def wrapped(t: Tensor, hook: Any = None) -> None:
        x = t
        if x.ndim >= 2 and x.shape[0] == 1 and n_rows > 1:  # broadcast over the batch
            x = x.expand(n_rows, *x.shape[1:])
        if x.shape[0] == n_rows:
            if attn and x.ndim == 4 and x.shape[2] == width and x.shape[3] == width:
                x = _shift_rows(x, starts, dim=2, dim2=3)
            elif not attn and x.ndim >= 2 and x.shape[1] == width:
                x = _shift_rows(x, starts, dim=1)
        if fn(x, hook) is not None:
            raise CaptureError(f"Hook {name!r} returned a value with left padding: interventions need "
                               "padding_side='right' (the engine maps only what hooks read).")
        return None

    return wrapped


def _stop_when_all_fired(hooks: list[Hook]) -> list[Hook]:
    names = {n for n, _ in hooks}
    fired: set[str] = set()

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def f(t: Tensor, hook: Any = None) -> Any:
            r = fn(t, hook)
            fired.add(name)
            if len(fired) == len(names):
                raise _AllHooksFired
            return r

        return f

    return [(n, wrap(n, fn)) for n, fn in hooks]


# ----------------------------------------------------------------------------------------------
# stream
# ----------------------------------------------------------------------------------------------


def stream(
    source: Any,
    prompts: Any,
    reducer: Reducer,
    *,
    batch_size: int,
    prepend_bos: bool = True,
    padding_side: str = "right",
    pad: PadMode = "mask",
    order: str = "given",
    on_logits: Callable[[StreamBatch, Tensor], None] | None = None,
    stop_early: bool = False,
    require_all_fired: bool = False,
    always_mask: bool = False,
) -> int:
    """Stream ``prompts`` through ``source`` in mini-batches; ``reducer(batch)`` gives each pass's hooks.

    Args:
        source: a TransformerBridge (from :func:`interp.load_model`), or an
            :class:`~interp.capture.ActivationStore` to replay stored activations (then
            ``prompts`` must be ``None``, ``on_logits`` is not available and hooks returning a value
            are not allowed).
        prompts: strings (tokenised per mini-batch with ``prepend_bos`` / ``padding_side``), 1-D
            token id tensors (own coordinates), or a tokenised batch (anything with ``tokens``,
            ``attention_mask``, ``lengths`` and optionally ``padding_side``; sliced per mini-batch
            and trimmed to each mini-batch's widest prompt).
        reducer: ``StreamBatch -> [(hook_name, fn(activation, hook))]``. ``fn`` receives the
            activation in own coordinates (see the module docstring). A value returned by ``fn``
            replaces the activation (interventions; right padding only).
        batch_size: prompts per forward pass.
        pad: ``"mask"`` (pad id + attention mask) or ``"repeat_last"`` (see the module docstring).
        order: ``"given"`` or ``"length"`` (rows sorted by length, for ``pad="repeat_last"``).
        on_logits: ``on_logits(batch, logits)`` after each pass (logits in the model's padded layout).
        stop_early: stop each forward pass once every hook has fired (skips later layers/unembedding).
        require_all_fired: raise :class:`CaptureError` when a requested hook did not fire.
        always_mask: with ``pad="mask"``, pass the attention mask even to a mini-batch with no
            padding (all ones); by default it is passed only when some row is padded. For callers
            whose numbers were defined with the mask always passed (the atlas' task metric).

    Returns:
        the number of prompts streamed.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if padding_side not in ("left", "right"):
        raise CaptureError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    if pad not in ("mask", "repeat_last"):
        raise CaptureError(f"pad must be 'mask' or 'repeat_last', got {pad!r}.")
    from interp.capture._store import ActivationStore

    if isinstance(source, ActivationStore):
        if prompts is not None:
            raise CaptureError("An ActivationStore already fixes its prompts: pass prompts=None.")
        if on_logits is not None:
            raise CaptureError("An ActivationStore holds no logits: run the model for on_logits.")
        return _replay(source, reducer, batch_size=batch_size)
    global _DEPTH
    _DEPTH += 1
    try:
        return _stream_model(source, prompts, reducer, batch_size=batch_size, prepend_bos=prepend_bos,
                             padding_side=padding_side, pad=pad, order=order, on_logits=on_logits,
                             stop_early=stop_early, require_all_fired=require_all_fired,
                             always_mask=always_mask)
    finally:
        _DEPTH -= 1


def _stream_model(model: Any, prompts: Any, reducer: Reducer, *, batch_size: int, prepend_bos: bool,
                  padding_side: str, pad: PadMode, order: str, on_logits: Any, stop_early: bool,
                  require_all_fired: bool, always_mask: bool = False) -> int:
    n, build, chunks = _plan(model, prompts, batch_size=batch_size, prepend_bos=prepend_bos,
                             padding_side=padding_side, pad=pad, order=order, always_mask=always_mask)
    hook_dict = getattr(model, "hook_dict", None)
    hook_names = set(hook_dict) if hook_dict is not None else _AnyName()
    for k, rows in enumerate(chunks):
        p = build(k, rows)
        hooks = [(nm, fn) for nm, fn in reducer(p.sb)]
        unknown = [nm for nm, _ in hooks if nm not in hook_names]
        if unknown:
            raise UnknownHookError(f"Unknown hook(s) {unknown[:5]} for this model: list them with "
                                   "sorted(model.hook_dict).")
        if any(p.starts):
            hooks = [(nm, _own_coordinates(fn, nm, p.starts, int(p.model_tokens.shape[1]))) for nm, fn in hooks]
        fired: set[str] = set()
        if require_all_fired:
            hooks = [(nm, _mark_fired(fn, nm, fired)) for nm, fn in hooks]
        if stop_early and on_logits is None:
            hooks = _stop_when_all_fired(hooks)
        kwargs: dict[str, Any] = {}
        if p.attention_mask is not None:
            kwargs["attention_mask"] = p.attention_mask
        with torch.no_grad():
            try:
                out = model.run_with_hooks(p.model_tokens, fwd_hooks=hooks,
                                           return_type="logits" if on_logits is not None else None, **kwargs)
            except _AllHooksFired:
                out = None
        if require_all_fired:
            missing = [nm for nm, _ in hooks if nm not in fired]
            if missing:
                raise CaptureError(f"Hooks {missing[:5]} exist but did not fire during the forward pass; "
                                   "they cannot be captured from this model.")
        if on_logits is not None:
            on_logits(p.sb, out)
        del out, hooks, p
    return n


class _AnyName:
    def __contains__(self, name: object) -> bool:
        return True


def _mark_fired(fn: Callable[..., Any], name: str, fired: set[str]) -> Callable[..., Any]:
    def f(t: Tensor, hook: Any = None) -> Any:
        fired.add(name)
        return fn(t, hook)

    return f


def _replay(store: Any, reducer: Reducer, *, batch_size: int) -> int:
    """Feed a reducer from stored activations: mini-batches re-padded with zeros in own coordinates."""
    n = int(store.n_examples)
    have = set(store.hooks)
    for s in range(0, n, batch_size):
        rows = list(range(s, min(n, s + batch_size)))
        toks_l = [store.tokens(i).long() for i in rows]
        lengths = [int(t.numel()) for t in toks_l]
        width = max(lengths)
        toks = torch.zeros(len(rows), width, dtype=torch.long)
        for b, t in enumerate(toks_l):
            toks[b, :lengths[b]] = t
        sb = StreamBatch(s, rows, toks, lengths, "right", meta={"source": "ActivationStore"})
        hooks = list(reducer(sb))
        missing = [nm for nm, _ in hooks if nm not in have]
        if missing:
            raise CaptureError(f"The ActivationStore has no {missing[:3]} (it holds {sorted(have)[:4]}...): "
                               "capture those hooks, or run the analysis on the model.")
        for nm, fn in hooks:
            xs = [store.get(nm, i) for i in rows]
            if store.layout(nm) == "attn":
                x = xs[0].new_zeros(len(rows), xs[0].shape[0], width, width)
                for b, v in enumerate(xs):
                    x[b, :, :lengths[b], :lengths[b]] = v
            else:
                x = xs[0].new_zeros(len(rows), width, *xs[0].shape[1:])
                for b, v in enumerate(xs):
                    x[b, :lengths[b]] = v
            if fn(x, SimpleNamespace(name=nm)) is not None:
                raise CaptureError(f"Hook {nm!r} returned a value: stored activations cannot be intervened on.")
        del hooks
    return n
