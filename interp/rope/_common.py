"""Shared helpers of :mod:`interp.rope`: model checks, chunk sets, rotation and shift hooks."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp._attnstats import PromptBatch, as_batch, model_name
from interp.spec import ModelSpec, RopeSpec, model_spec

Hook = tuple[str, Callable[..., Any]]

DEFAULT_PROMPTS: list[str] = [
    "The old lighthouse keeper climbed the narrow stairs every evening to light the great lamp, "
    "and the ships that passed in the night trusted its steady beam to guide them home.",
    "In 1869 the transcontinental railroad was completed, joining the eastern and western "
    "networks of the United States and cutting the journey across the continent to a week.",
    "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n"
    "    return total / len(values)\n\nprint(mean([1, 2, 3, 4]))\n",
    "When Mary and John went to the store, John gave a drink to Mary. Later that day, the two "
    "friends walked along the river and talked about their plans for the summer.",
]


def rope_model(model: Any) -> tuple[ModelSpec, RopeSpec]:
    """``(model_spec(model), its RopeSpec)``; a clear :class:`~interp.spec.NoRotaryError` otherwise."""
    spec = model_spec(model)
    return spec, spec.require_rope()


def batch_of(model: Any, prompts: Any, prepend_bos: bool, min_len: int = 2) -> PromptBatch:
    return as_batch(model, DEFAULT_PROMPTS if prompts is None else prompts, prepend_bos=prepend_bos,
                    min_len=min_len)


def select_chunks(
    rope: RopeSpec,
    *,
    highest: float | None = None,
    lowest: float | None = None,
    chunks: Sequence[int] | None = None,
) -> Bool[Tensor, "chunk"]:
    """Boolean mask over chunks: the highest-frequency fraction, the lowest fraction, or a list.

    Chunk 0 has the highest frequency (θ_0 = 1 rad/token); the fraction ``p`` selects
    ``round(p · d_rot/2)`` chunks. Exactly one of the arguments must be given.
    """
    given = [a is not None for a in (highest, lowest, chunks)]
    if sum(given) != 1:
        raise ValueError("give exactly one of highest=, lowest= or chunks=")
    n = rope.n_chunks
    mask = torch.zeros(n, dtype=torch.bool)
    if chunks is not None:
        idx = [int(c) for c in chunks]
        bad = [c for c in idx if not 0 <= c < n]
        if bad:
            raise ValueError(f"chunk indices {bad} outside 0..{n - 1}")
        mask[idx] = True
        return mask
    p = float(highest if highest is not None else lowest)  # type: ignore[arg-type]
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {p}")
    k = int(round(p * n))
    if highest is not None:
        mask[:k] = True
    else:
        mask[n - k:] = True
    return mask


def as_mask(rope: RopeSpec, band: Any) -> Bool[Tensor, "chunk"]:
    if isinstance(band, Tensor):
        if band.dtype == torch.bool:
            if band.shape != (rope.n_chunks,):
                raise ValueError(f"chunk mask must have shape ({rope.n_chunks},), got {tuple(band.shape)}")
            return band.cpu()
        band = band.tolist()
    return select_chunks(rope, chunks=list(band))


def pre_rotation_hooks(spec: ModelSpec) -> tuple[str, str, bool]:
    """Names of the hooks holding q/k just before rotation, and whether they are [b head pos d]."""
    if spec.qk_norm:
        return "hook_q_normed", "hook_k_normed", True
    return "hook_q", "hook_k", False


def rotation_hooks(
    spec: ModelSpec,
    removed: Bool[Tensor, "chunk"],
    mode: str,
    *,
    layers: Sequence[int] | None = None,
    position_offset: int = 0,
) -> list[Hook]:
    """Hooks that edit ``hook_rot_q``/``hook_rot_k`` for the chunks in ``removed``.

    ``mode="unrotate"``: those chunks keep their pre-rotation value (angle 0, p-RoPE style): the
    pre-rotation q/k are stashed from ``hook_q``/``hook_k`` (``hook_q_normed``/``hook_k_normed``
    on q/k-norm models) and re-rotated with ``RopeSpec.apply(..., chunk_mask=~removed)``.
    ``mode="zero"``: those chunks of the rotated q and k are set to 0.
    """
    rope = spec.require_rope()
    if mode not in ("unrotate", "zero"):
        raise ValueError(f"mode must be 'unrotate' or 'zero', got {mode!r}")
    layers = range(spec.n_layers) if layers is None else layers
    removed = removed.cpu()
    keep = ~removed
    dims = rope.chunk_dims()[removed].flatten()
    hooks: list[Hook] = []
    if mode == "zero":
        def zero(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            x[..., dims.to(x.device)] = 0
            return x

        for l in layers:
            hooks += [(f"blocks.{l}.attn.hook_rot_q", zero), (f"blocks.{l}.attn.hook_rot_k", zero)]
        return hooks
    qn, kn, transposed = pre_rotation_hooks(spec)
    stash: dict[tuple[str, int], Tensor] = {}

    def save(which: str, layer: int) -> Callable[..., None]:
        # hook names may be aliases (hook_q fires as q.hook_out): key by role and layer
        def f(x: Tensor, hook: Any) -> None:
            stash[(which, layer)] = x.transpose(1, 2) if transposed else x
        return f

    def rerotate(which: str, layer: int) -> Callable[..., Tensor]:
        def f(x: Tensor, hook: Any) -> Tensor:
            pre = stash.pop((which, layer))
            pos = torch.arange(x.shape[1], device=x.device) + position_offset
            return rope.apply(pre.to(x.dtype), pos, layer, chunk_mask=keep.to(x.device))
        return f

    for l in layers:
        hooks += [(f"blocks.{l}.attn.{qn}", save("q", l)), (f"blocks.{l}.attn.{kn}", save("k", l)),
                  (f"blocks.{l}.attn.hook_rot_q", rerotate("q", l)), (f"blocks.{l}.attn.hook_rot_k", rerotate("k", l))]
    return hooks


def shift_hooks(spec: ModelSpec, delta: int) -> list[Hook]:
    """Hooks on each layer's ``attn.hook_cos``/``hook_sin`` moving every position m to m + Δ.

    cos/sin are recomputed like HF (float32 angles (m+Δ)·θ_k, times ``attention_scaling``, cast
    to the model dtype) in the ``rotate_half`` layout ``[cos θ_0..θ_{n−1}, cos θ_0..θ_{n−1}]``.
    """
    rope = spec.require_rope()
    if rope.pairing != "half":
        raise NotImplementedError("position shifts are implemented for the 'half' (rotate_half) layout")
    hooks: list[Hook] = []

    def make(which: str, layer: int) -> Callable[..., Tensor]:
        def f(x: Tensor, hook: Any) -> Tensor:
            pos = torch.arange(x.shape[-2], device=x.device) + delta
            c, s = rope.cos_sin(pos, layer, x.dtype)
            v = c if which == "cos" else s
            v = torch.cat([v, v], dim=-1)
            return v.expand_as(x).clone()
        return f

    for l in range(spec.n_layers):
        hooks += [(f"blocks.{l}.attn.hook_cos", make("cos", l)), (f"blocks.{l}.attn.hook_sin", make("sin", l))]
    return hooks


def valid_tokens(lengths: list[int], width: int, device: Any) -> Bool[Tensor, "batch pos"]:
    return torch.arange(width, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]


def next_token_loss(
    logits: Float[Tensor, "batch pos vocab"], tokens: Tensor, lengths: list[int]
) -> tuple[float, int]:
    """Summed next-token cross-entropy over real positions, and the number of predictions."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tgt = tokens[:, 1:]
    nll = -lp.gather(-1, tgt[..., None])[..., 0]
    ok = valid_tokens([n - 1 for n in lengths], tgt.shape[1], tgt.device)
    return float(nll[ok].sum()), int(ok.sum())


def name_of(model: Any) -> str:
    return model_name(model)


def fmt_fraction(p: float) -> str:
    return f"{100 * p:.0f}%" if math.isclose(100 * p, round(100 * p)) else f"{100 * p:.1f}%"
