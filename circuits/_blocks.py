"""Weights of one decoder family, in the per-head layout :class:`circuits._forward.PatchableModel`
runs on.

Everything comes from the family descriptor (:func:`interp.families.family_of`): the structural
facts (norm kind and placement, parallel blocks, q/k norms, fused layouts, multipliers) and where
the modules live (:class:`interp.families.ModulePaths`). This module turns the weights into

* ``W_Q [H d e]``, ``W_K``/``W_V [G d e]`` (+ biases ``[n e]``) — split out of fused ``qkv``
  projections: Phi-3 ``[q | k | v]`` rows, GPT-NeoX per-head ``[q_h k_h v_h]`` rows, GPT-2
  ``Conv1D`` ``[d, 3d]``;
* ``W_O [H e d]`` (+ ``b_O [d]``);
* MLP ``W_in``/``W_gate [d m]``, ``W_out [m d]`` — Phi-3's fused ``gate_up_proj`` is
  ``[gate | up]`` rows;
* the norms' weights (``None`` where a family has no such norm, e.g. OLMo-2's input norms).

Granite's ``residual_multiplier`` (which scales the attention and MLP outputs before they are
added to the residual stream) is folded into ``W_O``, ``b_O``, ``W_out`` and ``b_out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

__all__ = ["Layer", "get", "load_layers", "unsupported", "_up"]

def unsupported(model_type: str, what: str) -> NotImplementedError:
    """The error for a missing piece: names it and points to "Adding a model family"."""
    from interp.families import ADDING_A_FAMILY, UnsupportedFamilyError

    return UnsupportedFamilyError(
        f"circuits.PatchableModel: {what} (model_type={model_type!r}) is not supported; "
        f"{ADDING_A_FAMILY}")


def _up(t: Tensor) -> Tensor:
    """Norm arithmetic precision: float32 for half types and float32 (as HF computes norms),
    float64 kept (so float64 runs are float64 throughout)."""
    return t if t.dtype == torch.float64 else t.float()


def _w(mod: Any) -> Tensor:
    return mod.weight.detach()


def _b(mod: Any) -> Tensor | None:
    b = getattr(mod, "bias", None)
    return None if b is None else b.detach()


@dataclass
class Layer:
    ln1_w: Tensor | None  # None: no input norm (OLMo-2 post-norm)
    ln1_b: Tensor | None
    W_Q: Tensor  # [H d e]
    W_K: Tensor  # [G d e]
    W_V: Tensor  # [G d e]
    b_Q: Tensor | None  # [H e]
    b_K: Tensor | None
    b_V: Tensor | None
    W_O: Tensor  # [H e d]
    b_O: Tensor | None  # [d]
    ln2_w: Tensor | None  # the MLP's input norm (= ln1 for shared-norm parallel blocks)
    ln2_b: Tensor | None
    W_gate: Tensor | None  # [d m] (gated MLPs)
    b_gate: Tensor | None
    W_in: Tensor  # [d m]
    b_in: Tensor | None
    W_out: Tensor  # [m d]
    b_out: Tensor | None
    # q/k norms: per head ([e], or [n e] for StableLM's per-head weights) or over the whole
    # projection ([n·e], OLMo-2); None without
    q_norm_w: Tensor | None = None
    q_norm_b: Tensor | None = None
    k_norm_w: Tensor | None = None
    k_norm_b: Tensor | None = None
    post_attn_w: Tensor | None = None  # [d] sandwich / post-norm (Gemma 2/3, OLMo-2)
    post_mlp_w: Tensor | None = None
    rope_key: str | None = None  # HF layer type for per-type RoPE tables (Gemma 3)
    use_rope: bool = True  # False: a NoPE layer
    window: int | None = None  # sliding window (keys t' with t − t' < window)


def _heads(w: Tensor, b: Tensor | None, n: int, e: int) -> tuple[Tensor, Tensor | None]:
    """nn.Linear weight ``[n·e, d]`` -> ``[n d e]``; bias -> ``[n e]``."""
    return (rearrange(w, "(head d_head) d_model -> head d_model d_head", head=n, d_head=e).contiguous(),
            None if b is None else rearrange(b, "(head d_head) -> head d_head", head=n, d_head=e))


def _flat_backed(w: Tensor) -> Tensor:
    """``w [n d e]`` as a view of a contiguous ``[d (n e)]`` buffer (same values)."""
    n = w.shape[0]
    return rearrange(rearrange(w, "head d_model d_head -> d_model (head d_head)").contiguous(),
                     "d_model (head d_head) -> head d_model d_head", head=n)


def _conv1d(w: Tensor, d: int) -> Tensor:
    """GPT-2 ``Conv1D`` stores ``[in, out]``; some wrappers store nn.Linear ``[out, in]``."""
    return w if w.shape[0] == d else w.T


def get(obj: Any, path: str | None) -> Any:
    """The module at dotted ``path`` under ``obj`` (None for a None path)."""
    if path is None:
        return None
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _qkv(fam: Any, at: Any, H: int, G: int, e: int, d: int) -> tuple[Tensor | None, ...]:
    P = fam.paths
    if fam.fused_qkv is None:
        q, k, v = get(at, P.q), get(at, P.k), get(at, P.v)
        return (*_heads(_w(q), _b(q), H, e), *_heads(_w(k), _b(k), G, e), *_heads(_w(v), _b(v), G, e))
    m = get(at, P.qkv)
    if fam.fused_qkv == "gpt2_conv1d":  # Conv1D [d, 3d] = [q | k | v] columns
        Wc, bc = _conv1d(_w(m), d), _b(m)
        ws = Wc.split(H * e, dim=1)
        bs = (None, None, None) if bc is None else bc.split(H * e)
        out: list[Tensor | None] = []
        for w, b in zip(ws, bs):
            out += [rearrange(w, "d_model (head d_head) -> head d_model d_head", head=H, d_head=e).contiguous(),
                    None if b is None else rearrange(b, "(head d_head) -> head d_head", head=H, d_head=e)]
        return tuple(out)
    if fam.fused_qkv == "phi3":  # rows [q (H·e) | k (G·e) | v (G·e)]
        w, b = _w(m), _b(m)
        sizes = [H * e, G * e, G * e]
        ws = w.split(sizes, 0)
        bs = (None, None, None) if b is None else b.split(sizes)
        return (*_heads(ws[0], bs[0], H, e), *_heads(ws[1], bs[1], G, e), *_heads(ws[2], bs[2], G, e))
    if fam.fused_qkv == "neox_per_head":  # rows per head [q_h | k_h | v_h]
        if G != H:
            raise unsupported(fam.model_type, "fused per-head qkv with grouped KV heads")
        w4 = rearrange(_w(m), "(head qkv d_head) d_model -> qkv head d_model d_head", head=H, qkv=3, d_head=e)
        b = _b(m)
        bb = None if b is None else rearrange(b, "(head qkv d_head) -> qkv head d_head", head=H, qkv=3, d_head=e)
        out = []
        for i in range(3):
            out += [w4[i].contiguous(), None if bb is None else bb[i].contiguous()]
        return tuple(out)
    raise unsupported(fam.model_type, f"fused qkv layout {fam.fused_qkv!r}")


def _mlp(fam: Any, mlp: Any, d: int) -> tuple[Tensor | None, ...]:
    """(W_gate, b_gate, W_in, b_in, W_out, b_out) as ``[d m]``/``[m d]``."""
    P = fam.paths
    down = get(mlp, P.down)
    if fam.fused_qkv == "gpt2_conv1d":  # GPT-2's MLP is Conv1D too ([in, out]; Linear in wrappers)
        up = get(mlp, P.up)
        Wfc, Wfp = _w(up), _w(down)
        if Wfc.shape[0] != d:
            Wfc, Wfp = Wfc.T, Wfp.T
        return None, None, Wfc.contiguous(), _b(up), Wfp.contiguous(), _b(down)
    if fam.fused_gate_up:  # Phi-3: rows [gate | up]
        m = get(mlp, P.gate_up)
        w, b = _w(m), _b(m)
        wg, wu = w.chunk(2, 0)
        bg, bu = (None, None) if b is None else b.chunk(2)
        W_gate, b_gate, W_in, b_in = wg.T.contiguous(), bg, wu.T.contiguous(), bu
    elif fam.gated_mlp:
        gate, up = get(mlp, P.gate), get(mlp, P.up)
        W_gate, b_gate, W_in, b_in = _w(gate).T.contiguous(), _b(gate), _w(up).T.contiguous(), _b(up)
    else:
        up = get(mlp, P.up)
        W_gate, b_gate, W_in, b_in = None, None, _w(up).T.contiguous(), _b(up)
    return W_gate, b_gate, W_in, b_in, _w(down).T.contiguous(), _b(down)


def _qk_norm_weights(norm: Any, n: int) -> tuple[Tensor, Tensor | None]:
    if hasattr(norm, "norms"):  # StableLM: one LayerNorm per head
        ws = torch.stack([_w(m) for m in norm.norms])
        bs = [_b(m) for m in norm.norms]
        return ws, (None if bs[0] is None else torch.stack(bs))  # type: ignore[arg-type]
    return _w(norm), _b(norm)


def load_layers(pm: Any, root: Any, fam: Any) -> list[Layer]:
    """One :class:`Layer` per decoder block (``fam.paths`` are relative to ``root``, the
    ``*ForCausalLM`` model)."""
    H, G, e, d = pm.n_heads, pm.n_kv_heads, pm.d_head, pm.d_model
    P = fam.paths
    mult = float(fam.residual_multiplier)
    out: list[Layer] = []
    for l, blk in enumerate(get(root, P.layers)):
        at, mlp = get(blk, P.attn), get(blk, P.mlp)
        W_Q, b_Q, W_K, b_K, W_V, b_V = _qkv(fam, at, H, G, e, d)
        o = get(at, P.o_proj)
        if fam.fused_qkv == "gpt2_conv1d":  # Conv1D [H·e, d]
            W_O = rearrange(_conv1d(_w(o), H * e), "(head d_head) d_model -> head d_head d_model",
                            head=H, d_head=e).contiguous()
        else:
            W_O = rearrange(_w(o), "d_model (head d_head) -> head d_head d_model", head=H, d_head=e).contiguous()
        b_O = _b(o)
        W_gate, b_gate, W_in, b_in, W_out, b_out = _mlp(fam, mlp, d)
        if mult != 1.0:  # Granite: x + m·f(x), folded into the output projections
            W_O, W_out = W_O * mult, W_out * mult
            b_O = None if b_O is None else b_O * mult
            b_out = None if b_out is None else b_out * mult
        ln1, ln2 = get(blk, P.attn_norm), get(blk, P.mlp_norm)
        L = Layer(ln1_w=None if ln1 is None else _w(ln1), ln1_b=None if ln1 is None else _b(ln1),
                  W_Q=W_Q, W_K=W_K, W_V=W_V, b_Q=b_Q, b_K=b_K, b_V=b_V, W_O=W_O, b_O=b_O,
                  ln2_w=None if ln2 is None else _w(ln2), ln2_b=None if ln2 is None else _b(ln2),
                  W_gate=W_gate, b_gate=b_gate, W_in=W_in, b_in=b_in, W_out=W_out, b_out=b_out)
        if fam.qk_norm is not None:
            L.q_norm_w, L.q_norm_b = _qk_norm_weights(get(at, P.q_norm), H)
            L.k_norm_w, L.k_norm_b = _qk_norm_weights(get(at, P.k_norm), G)
        if fam.placement in ("sandwich", "post"):
            L.post_attn_w = _w(get(blk, P.post_attn_norm))
            L.post_mlp_w = _w(get(blk, P.post_mlp_norm))
            if _b(get(blk, P.post_attn_norm)) is not None or _b(get(blk, P.post_mlp_norm)) is not None:
                raise unsupported(fam.model_type, "sandwich/post norms with a bias")
        # q/k/v projections live in one [d_model, n·d_head] buffer each (the per-head [n d e]
        # tensors are views of it): the unpatched forward's projection is then one GEMM on the
        # buffer, and autograd keeps the buffer itself — not a per-call re-laid-out copy — for
        # the backward
        L.W_Q, L.W_K, L.W_V = (_flat_backed(w) for w in (L.W_Q, L.W_K, L.W_V))
        L.window = fam.sliding_window[l]
        L.use_rope = fam.rotary is not None and fam.rotary.bases[l] is not None
        L.rope_key = pm.rope_keys[l] if pm.rope_keys is not None else None
        out.append(L)
    return out
