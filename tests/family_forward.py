"""A plain reference forward written only from a :class:`interp.families.Family` and the HF weights.

Used by tests to show that the family facts are complete and right: if this forward reproduces
HF eager logits, every fact it uses (norm kind/eps/offset/placement, parallel blocks, q/k norms,
fused projections, rotary layout, scales, soft-caps, windows, multipliers, biases, tying) is
correct for that family. No padding, one causal sequence batch; float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _mod(root: Any, path: str | None) -> Any:
    if path is None:
        return None
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _lin(m: Any, x: Tensor) -> Tensor:
    if type(m).__name__ == "Conv1D":  # GPT-2: weight [in, out]
        return x @ m.weight + m.bias
    return F.linear(x, m.weight, m.bias)


def _norm(fam: Any, m: Any, x: Tensor, kind: str | None = None) -> Tensor:
    kind = kind or fam.norm
    eps = fam.norm_eps
    if kind == "layer":
        return F.layer_norm(x, (x.shape[-1],), m.weight, getattr(m, "bias", None), eps)
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * (fam.norm_offset + m.weight.float())).to(x.dtype)


def _chunk_dims(fam: Any, chunks: Tensor) -> Tensor:
    d = fam.rotary.rotary_dim
    if fam.rotary.pairing == "half":
        return torch.cat([chunks, chunks + d // 2])
    return torch.cat([2 * chunks, 2 * chunks + 1])


def _rotate(fam: Any, x: Tensor, layer: int, edit: tuple[Tensor, str] | None = None) -> Tensor:
    """x [b head pos d]: rotate the first rotary_dim dims by m·θ_k (pairing from the family).

    ``edit = (chunk indices, mode)``: ``"unrotate"`` leaves those chunks at angle 0, ``"zero"``
    zeroes them."""
    r = fam.rotary
    key = r.layer_types[layer]
    inv = torch.tensor(r.inv_freq[key], dtype=torch.float32)
    pos = torch.arange(x.shape[-2], dtype=torch.float32)
    ang = pos[:, None] * inv[None, :]  # [pos chunk]
    cos, sin = ang.cos() * r.attention_scaling[key], ang.sin() * r.attention_scaling[key]
    d = r.rotary_dim
    rot, rest = x[..., :d], x[..., d:]
    if r.pairing == "half":
        x1, x2 = rot[..., : d // 2], rot[..., d // 2:]
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
    else:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).flatten(-2)
    if edit is not None:
        dims = _chunk_dims(fam, edit[0])
        out = out.clone()
        out[..., dims] = rot[..., dims] if edit[1] == "unrotate" else 0.0
    return torch.cat([out, rest], -1)


def _qk_norm(fam: Any, m: Any, x: Tensor) -> Tensor:
    """Per-head q/k norm on x [b head pos d]."""
    if fam.qk_norm_per_head_weights:  # StableLM: one LayerNorm per head
        return torch.stack([_norm(fam, m.norms[h], x[:, h], fam.qk_norm_kind) for h in range(x.shape[1])], 1)
    return _norm(fam, m, x, fam.qk_norm_kind)


def _attention_impl(fam: Any, attn: Any, h: Tensor, layer: int, edit: Any = None) -> Tensor:
    p = fam.paths
    b, T, _ = h.shape
    nh, nkv, hd = fam.n_heads, fam.n_kv_heads, fam.head_dim
    if fam.fused_qkv == "neox_per_head":
        qkv = _lin(_mod(attn, p.qkv), h).view(b, T, nh, 3 * hd)
        q, k, v = qkv.chunk(3, dim=-1)
    elif fam.fused_qkv in ("phi3", "gpt2_conv1d"):
        qkv = _lin(_mod(attn, p.qkv), h)
        q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], dim=-1)
    else:
        q, k, v = (_lin(_mod(attn, n), h) for n in (p.q, p.k, p.v))
    if fam.qk_norm == "proj":
        q, k = _norm(fam, _mod(attn, p.q_norm), q, fam.qk_norm_kind), _norm(fam, _mod(attn, p.k_norm), k, fam.qk_norm_kind)
    q, k, v = (t.reshape(b, T, -1, hd).transpose(1, 2) for t in (q, k, v))  # [b head pos d]
    if fam.qk_norm == "head":
        q, k = _qk_norm(fam, _mod(attn, p.q_norm), q), _qk_norm(fam, _mod(attn, p.k_norm), k)
    if fam.rotary is not None:
        q, k = _rotate(fam, q, layer, edit), _rotate(fam, k, layer, edit)
    g = nh // nkv
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q.float() @ k.float().transpose(-1, -2)) * fam.attention_scales[layer]
    if fam.attn_softcap is not None:
        s = fam.attn_softcap * torch.tanh(s / fam.attn_softcap)
    i = torch.arange(T)
    ok = i[None, :] <= i[:, None]
    w = fam.sliding_window[layer]
    if w is not None:
        ok = ok & (i[:, None] - i[None, :] < w)
    a = torch.softmax(s.masked_fill(~ok, float("-inf")), -1).to(v.dtype)
    z = (a @ v).transpose(1, 2).reshape(b, T, nh * hd)
    return _lin(_mod(attn, p.o_proj), z)


def _mlp(fam: Any, mlp: Any, h: Tensor) -> Tensor:
    from transformers.activations import ACT2FN

    act = ACT2FN[fam.activation]
    p = fam.paths
    if fam.gated_mlp:
        if fam.fused_gate_up:
            gate, up = _lin(_mod(mlp, p.gate_up), h).chunk(2, dim=-1)
        else:
            gate, up = _lin(_mod(mlp, p.gate), h), _lin(_mod(mlp, p.up), h)
        return _lin(_mod(mlp, p.down), act(gate) * up)
    return _lin(_mod(mlp, p.down), act(_lin(_mod(mlp, p.up), h)))


@torch.no_grad()
def reference_logits(fam: Any, hf: Any, tokens: Tensor, edit: tuple[Tensor, str] | None = None) -> Tensor:
    """Logits of ``hf`` on ``tokens`` [batch pos] computed from the family facts only.

    ``edit = (chunk indices, "unrotate" | "zero")`` applies a RoPE band edit in every layer."""
    import functools

    attention = functools.partial(_attention_impl, edit=edit)
    p = fam.paths
    emb = _mod(hf, p.embed)
    x = F.embedding(tokens, emb.weight) * torch.tensor(fam.embed_scale, dtype=emb.weight.dtype)
    if fam.learned_positions:
        x = x + _mod(hf, p.pos_embed).weight[torch.arange(tokens.shape[1])]
    r = fam.residual_multiplier
    for l, layer in enumerate(_mod(hf, p.layers)):
        attn, mlp = _mod(layer, p.attn), _mod(layer, p.mlp)
        n1, n2 = _mod(layer, p.attn_norm), _mod(layer, p.mlp_norm)
        if fam.parallel == "shared_norm":
            h = _norm(fam, n1, x)
            x = x + attention(fam, attn, h, l) + _mlp(fam, mlp, h)
        elif fam.parallel == "two_norms":
            x = x + attention(fam, attn, _norm(fam, n1, x), l) + _mlp(fam, mlp, _norm(fam, n2, x))
        elif fam.placement == "pre":
            x = x + r * attention(fam, attn, _norm(fam, n1, x), l)
            x = x + r * _mlp(fam, mlp, _norm(fam, n2, x))
        elif fam.placement == "sandwich":
            x = x + _norm(fam, _mod(layer, p.post_attn_norm), attention(fam, attn, _norm(fam, n1, x), l))
            x = x + _norm(fam, _mod(layer, p.post_mlp_norm), _mlp(fam, mlp, _norm(fam, n2, x)))
        else:  # post
            x = x + _norm(fam, _mod(layer, p.post_attn_norm), attention(fam, attn, x, l))
            x = x + _norm(fam, _mod(layer, p.post_mlp_norm), _mlp(fam, mlp, x))
    x = _norm(fam, _mod(hf, p.final_norm), x)
    logits = _lin(_mod(hf, p.lm_head), x) / fam.logits_scaling
    if fam.final_softcap is not None:
        logits = fam.final_softcap * torch.tanh(logits / fam.final_softcap)
    return logits
