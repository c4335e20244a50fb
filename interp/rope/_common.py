"""Shared helpers of :mod:`interp.rope`: model checks, chunk sets, rotation and shift hooks."""

from __future__ import annotations

import math
import weakref
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp._attnstats import PromptBatch, as_batch
from interp.capture import ActivationStore
from interp.provenance import model_name
from interp.prompts import ROPE_PROMPTS
from interp.spec import ModelSpec, RopeSpec, model_spec
from interp.types import Model

Hook = tuple[str, Callable[..., Any]]

DEFAULT_PROMPTS: list[str] = ROPE_PROMPTS  # the RoPE analyses' default input (interp.prompts)


def rope_model(model: Model) -> tuple[ModelSpec, RopeSpec]:
    """``(model_spec(model), its RopeSpec)``; a clear :class:`~interp.spec.NoRotaryError` otherwise.

    Raises a TypeError for an :class:`~interp.capture.ActivationStore`: the analyses that call this
    need the model: band ablation, shift invariance and positional-frequency heads rotate, ablate or
    shift q/k inside the forward pass, base bounds reads its config (:func:`interp.rope.frequency_usage`
    reads a store)."""
    if isinstance(model, ActivationStore):
        raise TypeError("This RoPE analysis needs the model (band ablation, shift invariance and positional-"
                        "frequency heads rotate, ablate or shift q/k inside the forward pass): pass the model, not "
                        "an ActivationStore (frequency_usage accepts a store).")
    spec = model_spec(model)
    return spec, spec.require_rope()


def batch_of(model: Model, prompts: Any, prepend_bos: bool, min_len: int = 2) -> PromptBatch:
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
    """Names of the hooks holding q/k just before rotation, and whether they are [b head pos d].

    q/k-norm models: ``hook_q_normed``/``hook_k_normed`` (per-head norms give [b head pos d];
    OLMo-2's norm over the whole projection gives [b pos (head d)], see :func:`to_bphd`).
    """
    if spec.qk_norm:
        per_head = spec.family is None or spec.family.qk_norm == "head"
        return "hook_q_normed", "hook_k_normed", per_head
    return "hook_q", "hook_k", False


def to_bphd(spec: ModelSpec, x: Tensor, transposed: bool) -> Tensor:
    """A pre-rotation hook value as [batch pos head d_head]."""
    if transposed:
        return x.transpose(1, 2)
    if x.ndim == 3:  # [b pos (head d)]: a norm over the whole projection
        return x.reshape(*x.shape[:2], -1, spec.d_head)
    return x


def _from_bphd(x: Tensor, like: Tensor, transposed: bool) -> Tensor:
    if transposed:
        return x.transpose(1, 2)
    if like.ndim == 3:
        return x.reshape(like.shape)
    return x


_PROBE: "weakref.WeakKeyDictionary[Any, dict[str, bool]]" = weakref.WeakKeyDictionary()


def _probe(model: Any) -> dict[str, bool]:
    """What the bridge's attention hooks carry, probed once per model on a three-token forward:
    ``rotated``: ``hook_rot_q``/``hook_rot_k`` fire (TransformerLens' fused-qkv and GPT-J bridges
    do not fire them); ``scores_are_pattern``: ``hook_attn_scores`` holds the softmax pattern
    (0 above the diagonal, rows summing to 1) instead of logits (TransformerLens' GPT-J bridge)."""
    try:
        return _PROBE[model]
    except (KeyError, TypeError):
        pass
    fired: list[str] = []
    scores: list[Tensor] = []
    hooks: list[Hook] = [(n, lambda x, hook: fired.append(hook.name))
                         for n in ("blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_rot_k") if n in model.hook_dict]
    if "blocks.0.attn.hook_attn_scores" in model.hook_dict:
        hooks.append(("blocks.0.attn.hook_attn_scores", lambda x, hook: scores.append(x.detach().float())))
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    tok = torch.full((1, 3), int(bos) if bos is not None else 0, dtype=torch.long,
                     device=next(model.parameters()).device)
    from types import SimpleNamespace

    from interp.capture import stream

    one = SimpleNamespace(tokens=tok, attention_mask=torch.ones_like(tok), lengths=[3])
    stream(model, one, lambda sb: hooks, batch_size=1)
    pattern = False
    if scores:
        a = scores[0][0]  # [head q k]
        pattern = bool((a[:, 0, 1:] == 0).all() and ((a.sum(-1) - 1).abs() < 1e-4).all())
    out = {"rotated": len(fired) >= 2, "scores_are_pattern": pattern}
    try:
        _PROBE[model] = out
    except TypeError:  # pragma: no cover
        pass
    return out


def exposes_rotated(model: Model) -> bool:
    """Whether the bridge fires ``hook_rot_q``/``hook_rot_k`` (see :func:`_probe`)."""
    return _probe(model)["rotated"]


def scores_are_pattern(model: Model) -> bool:
    """Whether the bridge's ``hook_attn_scores`` carries the softmax pattern (see :func:`_probe`)."""
    return _probe(model)["scores_are_pattern"]


def rotation_hooks(
    spec: ModelSpec,
    removed: Bool[Tensor, "chunk"],
    mode: str,
    *,
    layers: Sequence[int] | None = None,
    position_offset: int = 0,
    exposed: bool = True,
) -> list[Hook]:
    """Hooks that edit the rotation of the chunks in ``removed``.

    ``mode="unrotate"``: those chunks keep their pre-rotation value (angle 0, p-RoPE style) and
    the other chunks are rotated at positions ``m + position_offset``; ``mode="zero"``: those
    chunks of q and k are set to 0.

    With ``exposed`` (the bridge fires ``hook_rot_q``/``hook_rot_k``, see :func:`exposes_rotated`)
    the rotated q/k are replaced: the pre-rotation q/k are stashed from ``hook_q``/``hook_k``
    (``hook_q_normed``/``hook_k_normed`` on q/k-norm models) and re-rotated with
    ``RopeSpec.apply(..., chunk_mask=~removed)``. Otherwise the pre-rotation q/k are edited so
    that the model's own rotation R(m) yields the same result: removed chunks are pre-rotated by
    R(−m) (R(m)·R(−m) = I), kept chunks by R(position_offset); zeroed chunks are zero before
    rotation. Equal up to float rounding; needs ``attention_scaling`` = 1.
    """
    rope = spec.require_rope()
    if mode not in ("unrotate", "zero"):
        raise ValueError(f"mode must be 'unrotate' or 'zero', got {mode!r}")
    layers = range(spec.n_layers) if layers is None else layers
    removed = removed.cpu()
    keep = ~removed
    dims = rope.chunk_dims()[removed].flatten()
    hooks: list[Hook] = []
    qn, kn, transposed = pre_rotation_hooks(spec)
    if not exposed:
        if any(abs(s - 1.0) > 0 for s in rope.attention_scaling.values()):
            raise NotImplementedError(
                "this model's attention bridge exposes no rotated q/k (hook_rot_q) and its rope type "
                "scales cos/sin: chunk edits before rotation are not exact; see 'Adding a model family'")

        def pre_edit(layer: int) -> Callable[..., Tensor]:
            def f(x: Tensor, hook: Any) -> Tensor:
                y = to_bphd(spec, x, transposed)
                if mode == "zero":
                    y = y.clone()
                    y[..., dims.to(y.device)] = 0
                else:
                    pos = torch.arange(y.shape[1], device=y.device)
                    if removed.any():
                        y = rope.apply(y, -pos, layer, chunk_mask=removed.to(y.device))
                    if position_offset and keep.any():
                        y = rope.apply(y, torch.full_like(pos, position_offset), layer, chunk_mask=keep.to(y.device))
                return _from_bphd(y, x, transposed)
            return f

        for l in layers:
            hooks += [(f"blocks.{l}.attn.{qn}", pre_edit(l)), (f"blocks.{l}.attn.{kn}", pre_edit(l))]
        return hooks
    if mode == "zero":
        def zero(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            x[..., dims.to(x.device)] = 0
            return x

        for l in layers:
            hooks += [(f"blocks.{l}.attn.hook_rot_q", zero), (f"blocks.{l}.attn.hook_rot_k", zero)]
        return hooks
    stash: dict[tuple[str, int], Tensor] = {}

    def save(which: str, layer: int) -> Callable[..., None]:
        # hook names may be aliases (hook_q fires as q.hook_out): key by role and layer
        def f(x: Tensor, hook: Any) -> None:
            stash[(which, layer)] = to_bphd(spec, x, transposed)
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


def shift_hooks(spec: ModelSpec, delta: int, *, exposed: bool = True, has_cos_sin: bool = True) -> list[Hook]:
    """Hooks moving every position m to m + Δ.

    ``"half"`` models exposing ``attn.hook_cos``/``hook_sin``: cos/sin are recomputed like HF
    (float32 angles (m+Δ)·θ_k, times ``attention_scaling``, cast to the model dtype) in the
    ``rotate_half`` layout ``[cos θ_0..θ_{n−1}, cos θ_0..θ_{n−1}]``. Otherwise (GPT-J's
    interleaved pairs expose no cos/sin) the rotation itself is redone at m + Δ through
    :func:`rotation_hooks` (re-rotating ``hook_rot_q``/``hook_rot_k``, or pre-rotating the
    pre-rotation q/k by R(Δ) when the bridge exposes no rotated q/k).
    """
    rope = spec.require_rope()
    if rope.pairing != "half" or not has_cos_sin:
        return rotation_hooks(spec, torch.zeros(rope.n_chunks, dtype=torch.bool), "unrotate",
                              position_offset=delta, exposed=exposed)
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


def has_cos_sin(model: Model) -> bool:
    """Whether every layer's attention exposes ``hook_cos``/``hook_sin``."""
    hd = getattr(model, "hook_dict", {})
    return all(f"blocks.{l}.attn.hook_cos" in hd and f"blocks.{l}.attn.hook_sin" in hd
               for l in range(int(model.cfg.n_layers)))


def valid_tokens(lengths: list[int], width: int, device: Any) -> Bool[Tensor, "batch pos"]:
    return torch.arange(width, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]


def next_token_loss(
    logits: Float[Tensor, "batch pos vocab"], tokens: Tensor, lengths: list[int], *, by_row: bool = False
) -> tuple[float, int] | tuple[float, int, Float[Tensor, " batch"], Int[Tensor, " batch"]]:
    """Summed next-token cross-entropy over real positions, and the number of predictions; with
    ``by_row`` also each row's sum (float64) and count."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tgt = tokens[:, 1:]
    nll = -lp.gather(-1, tgt[..., None])[..., 0]
    ok = valid_tokens([n - 1 for n in lengths], tgt.shape[1], tgt.device)
    if not by_row:
        return float(nll[ok].sum()), int(ok.sum())
    rows = torch.where(ok, nll, torch.zeros_like(nll)).double().sum(1).cpu()
    return float(nll[ok].sum()), int(ok.sum()), rows, ok.sum(1).cpu()


def name_of(model: Model) -> str:
    return model_name(model)


def fmt_fraction(p: float) -> str:
    return f"{100 * p:.0f}%" if math.isclose(100 * p, round(100 * p)) else f"{100 * p:.1f}%"
