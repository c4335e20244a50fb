"""Weights of one decoder family, in the per-head layout :class:`circuits._forward.PatchableModel`
runs on.

The structural facts (norm kind and placement, parallel blocks, q/k norms, rotary dimension and
pairing, soft-caps, sliding windows, multipliers) come from the family descriptor
(:func:`interp.families.family_of`); this module only knows where each family keeps its weights
(module names, fused layouts) and turns them into

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
from torch import Tensor

__all__ = ["Layer", "load_layers", "unsupported"]

FAMILY_DOC = "CONTRIBUTING.md, 'Adding a model family'"


def unsupported(model_type: str, what: str) -> NotImplementedError:
    return NotImplementedError(
        f"circuits.PatchableModel: {what} (model_type={model_type!r}) is not supported. "
        f"See {FAMILY_DOC} for what a family needs.")


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
    d = w.shape[1]
    return (w.view(n, e, d).transpose(1, 2).contiguous(),
            None if b is None else b.view(n, e))


def _first(obj: Any, *names: str) -> Any:
    for n in names:
        m = getattr(obj, n, None)
        if m is not None:
            return m
    return None


def _conv1d(w: Tensor, d: int) -> Tensor:
    """GPT-2 ``Conv1D`` stores ``[in, out]``; some wrappers store nn.Linear ``[out, in]``."""
    return w if w.shape[0] == d else w.T


def _qkv(model_type: str, at: Any, H: int, G: int, e: int, d: int) -> tuple[Tensor | None, ...]:
    if hasattr(at, "c_attn"):  # GPT-2 Conv1D: [d, 3d] = [q | k | v] columns
        Wc, bc = _conv1d(_w(at.c_attn), d), _b(at.c_attn)
        ws = Wc.split(H * e, dim=1)
        bs = (None, None, None) if bc is None else bc.split(H * e)
        out: list[Tensor | None] = []
        for w, b in zip(ws, bs):
            out += [w.reshape(d, H, e).permute(1, 0, 2).contiguous(), None if b is None else b.reshape(H, e)]
        return tuple(out)  # type: ignore[return-value]
    if hasattr(at, "q_proj"):
        return (*_heads(_w(at.q_proj), _b(at.q_proj), H, e), *_heads(_w(at.k_proj), _b(at.k_proj), G, e),
                *_heads(_w(at.v_proj), _b(at.v_proj), G, e))
    if hasattr(at, "qkv_proj"):  # Phi-3: rows [q (H·e) | k (G·e) | v (G·e)]
        w, b = _w(at.qkv_proj), _b(at.qkv_proj)
        sizes = [H * e, G * e, G * e]
        ws = w.split(sizes, 0)
        bs = (None, None, None) if b is None else b.split(sizes)
        return (*_heads(ws[0], bs[0], H, e), *_heads(ws[1], bs[1], G, e), *_heads(ws[2], bs[2], G, e))
    if hasattr(at, "query_key_value"):  # GPT-NeoX: rows per head [q_h | k_h | v_h]
        if G != H:
            raise unsupported(model_type, "fused per-head qkv with grouped KV heads")
        w, b = _w(at.query_key_value).view(H, 3, e, d), _b(at.query_key_value)
        bb = None if b is None else b.view(H, 3, e)
        out: list[Tensor | None] = []
        for i in range(3):
            out += [w[:, i].transpose(1, 2).contiguous(), None if bb is None else bb[:, i].contiguous()]
        return tuple(out)  # type: ignore[return-value]
    raise unsupported(model_type, f"attention module {type(at).__name__} (no q_proj/qkv_proj)")


def _mlp(model_type: str, mlp: Any, m_mult: float, d: int) -> tuple[Tensor | None, ...]:
    """(W_gate, b_gate, W_in, b_in, W_out, b_out) as ``[d m]``/``[m d]``."""
    if hasattr(mlp, "gate_up_proj"):  # Phi-3: rows [gate | up]
        w, b = _w(mlp.gate_up_proj), _b(mlp.gate_up_proj)
        wg, wu = w.chunk(2, 0)
        bg, bu = (None, None) if b is None else b.chunk(2)
        down = mlp.down_proj
        W_gate, b_gate, W_in, b_in = wg.T.contiguous(), bg, wu.T.contiguous(), bu
    elif hasattr(mlp, "gate_proj"):
        W_gate, b_gate = _w(mlp.gate_proj).T.contiguous(), _b(mlp.gate_proj)
        W_in, b_in = _w(mlp.up_proj).T.contiguous(), _b(mlp.up_proj)
        down = mlp.down_proj
    elif hasattr(mlp, "c_fc"):  # GPT-2 Conv1D [in, out] (or nn.Linear [out, in] in wrappers)
        Wfc, Wfp = _w(mlp.c_fc), _w(mlp.c_proj)
        if Wfc.shape[0] != d:
            Wfc, Wfp = Wfc.T, Wfp.T
        W_gate, b_gate, W_in, b_in = None, None, Wfc.contiguous(), _b(mlp.c_fc)
        W_out, b_out = Wfp.contiguous(), _b(mlp.c_proj)
        return W_gate, b_gate, W_in, b_in, W_out, b_out
    else:
        up = _first(mlp, "fc_in", "fc1", "dense_h_to_4h")
        down = _first(mlp, "fc_out", "fc2", "dense_4h_to_h")
        if up is None or down is None:
            raise unsupported(model_type, f"MLP module {type(mlp).__name__}")
        W_gate, b_gate, W_in, b_in = None, None, _w(up).T.contiguous(), _b(up)
    W_out, b_out = _w(down).T.contiguous(), _b(down)
    if m_mult != 1.0:
        W_out = W_out * m_mult
        b_out = None if b_out is None else b_out * m_mult
    return W_gate, b_gate, W_in, b_in, W_out, b_out


def _qk_norm_weights(norm: Any, n: int) -> tuple[Tensor, Tensor | None]:
    if hasattr(norm, "norms"):  # StableLM: one LayerNorm per head
        ws = torch.stack([_w(m) for m in norm.norms])
        bs = [_b(m) for m in norm.norms]
        return ws, (None if bs[0] is None else torch.stack(bs))  # type: ignore[arg-type]
    return _w(norm), _b(norm)


def load_layers(pm: Any, core: Any, fam: Any) -> list[Layer]:
    """One :class:`Layer` per decoder block of ``core`` (the HF base model)."""
    H, G, e, d = pm.n_heads, pm.n_kv_heads, pm.d_head, pm.d_model
    mt = pm.model_type
    mult = float(fam.residual_multiplier or 1.0)
    blocks = _first(core, "layers", "h")
    out: list[Layer] = []
    for l, blk in enumerate(blocks):
        at = _first(blk, "self_attn", "attention", "attn")
        mlp = blk.mlp
        W_Q, b_Q, W_K, b_K, W_V, b_V = _qkv(mt, at, H, G, e, d)
        o = _first(at, "o_proj", "dense", "out_proj", "c_proj")
        if hasattr(at, "c_proj"):  # GPT-2 Conv1D [H·e, d]
            W_O = _conv1d(_w(o), H * e).reshape(H, e, d).contiguous()
        else:
            W_O = _w(o).view(d, H, e).permute(1, 2, 0).contiguous()  # [H e d]
        b_O = _b(o)
        if mult != 1.0:
            W_O = W_O * mult
            b_O = None if b_O is None else b_O * mult
        ln1 = _first(blk, "input_layernorm", "ln_1")
        if fam.placement == "post":
            ln1 = None
            ln2 = None
        elif fam.parallel == "shared_norm":
            ln2 = ln1
        elif fam.placement == "sandwich":
            ln2 = blk.pre_feedforward_layernorm
        else:
            ln2 = _first(blk, "post_attention_layernorm", "ln_2")
        W_gate, b_gate, W_in, b_in, W_out, b_out = _mlp(mt, mlp, mult, d)
        L = Layer(ln1_w=None if ln1 is None else _w(ln1), ln1_b=None if ln1 is None else _b(ln1),
                  W_Q=W_Q, W_K=W_K, W_V=W_V, b_Q=b_Q, b_K=b_K, b_V=b_V, W_O=W_O, b_O=b_O,
                  ln2_w=None if ln2 is None else _w(ln2), ln2_b=None if ln2 is None else _b(ln2),
                  W_gate=W_gate, b_gate=b_gate, W_in=W_in, b_in=b_in, W_out=W_out, b_out=b_out)
        if fam.qk_norm is not None:
            qn = _first(at, "q_norm", "q_layernorm")
            kn = _first(at, "k_norm", "k_layernorm")
            if qn is None or kn is None:
                raise unsupported(mt, "q/k norm modules (q_norm/k_norm) not found")
            L.q_norm_w, L.q_norm_b = _qk_norm_weights(qn, H)
            L.k_norm_w, L.k_norm_b = _qk_norm_weights(kn, G)
        if fam.placement in ("sandwich", "post"):
            L.post_attn_w = _w(blk.post_attention_layernorm)
            L.post_mlp_w = _w(blk.post_feedforward_layernorm)
        L.window = fam.sliding_window[l]
        L.use_rope = fam.rotary is not None and fam.rotary.bases[l] is not None
        L.rope_key = pm.rope_keys[l] if pm.rope_keys is not None else None
        out.append(L)
    return out
