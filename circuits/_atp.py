"""AtP* (Kramár, Lieberum, Shah, Nanda 2024, arXiv 2403.00745): the QK fix for same-position
edges into query and key receivers.

EAP scores an edge u → v as :math:`(z^*_u - z_u)\\cdot\\partial M/\\partial x_v`: through a
query or key input this linearises the attention softmax, and where attention is saturated
(a head putting ~all its weight on one key) the gradient through the softmax vanishes and the
edge is under-ranked. AtP*'s *QK fix* instead recomputes the attention pattern exactly with the
patched query or key and linearises only after the head's mixed value :math:`z`:

* **query receiver** of head h at position t, fed :math:`x_t + \\delta` with
  :math:`\\delta = z^*_u - z_u`: the query :math:`q'_t = Q(x_t + \\delta)` is recomputed exactly
  (norm, projection, bias, q-norm, RoPE), the row :math:`A'_{t\\cdot} = \\mathrm{softmax}(q'_t K^\\top/\\sqrt d)`
  with the model's own masking (causal, padding, sliding window), and
  :math:`g = \\sum_{t'} (A'_{tt'} - A_{tt'})\\, v_{t'}\\cdot\\partial M/\\partial z_t`;
* **key receiver** of KV group g at position t' (GQA: every query head h of the group): the key
  :math:`k'_{t'} = K(x_{t'} + \\delta)` changes one score in every row t ≥ t' by
  :math:`\\Delta_{tt'} = q_t\\cdot(k'_{t'} - k_{t'})/\\sqrt d`; re-normalising each row exactly gives
  :math:`\\Delta z_t = c_{tt'}(v_{t'} - z_t)`, :math:`c = A(e^{\\Delta}-1)/(1 + A(e^{\\Delta}-1))`, and
  :math:`g = \\sum_{h\\in g}\\sum_{t\\ge t'} c_{tt'}\\,(v_{t'} - z_t)\\cdot\\partial M/\\partial z_t`.

Value, MLP and logits receivers keep the EAP score (AtP* fixes only the QK path), and crossing
edges are already exact in the softmax (:mod:`circuits.attribution`). The gradient
:math:`\\partial M/\\partial z` is the clean run's (or, under GradDrop — AtP*'s second fix,
``attribute(method="atp*", graddrop=True)``, defined in :mod:`circuits._methods` — the gradient
of the pass with layer ℓ's outputs detached). Scores use the model's own attention logits
(:meth:`PatchableModel.score`: scale and Gemma 2's soft-cap).
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange, reduce
from jaxtyping import Float, Int
from torch import Tensor

from circuits._forward import PatchableModel
from circuits._stream import _softmax_shift

__all__ = ["qk_project", "qk_fix_block", "allowed_keys"]


def qk_project(pm: PatchableModel, layer: int, x: Float[Tensor, "batch pos n d_model"],
               position_ids: Int[Tensor, "batch pos"],
               ) -> tuple[Float[Tensor, "batch pos n head d_head"], Float[Tensor, "batch pos n kv_head d_head"]]:
    """Post-RoPE query and key of layer ``layer`` for ``n`` candidate residual inputs per token
    (the model's order: input norm → projection → bias → q/k-norm → RoPE), as
    :meth:`PatchableModel.forward` computes them for one input."""
    W = pm.layers[layer]
    b, p, n, d = x.shape
    xn = rearrange(pm._norm(x, W.ln1_w, W.ln1_b), "b p n d_model -> (b p n) d_model")
    H, G, e = W.W_Q.shape[0], W.W_K.shape[0], W.W_Q.shape[2]
    # one GEMM per projection (the per-head einsum is several times slower on CPU)
    q = rearrange(xn @ rearrange(W.W_Q, "head d_model d_head -> d_model (head d_head)"),
                  "(b p n) (head d_head) -> b p n head d_head", b=b, p=p, head=H)
    k = rearrange(xn @ rearrange(W.W_K, "kv_head d_model d_head -> d_model (kv_head d_head)"),
                  "(b p n) (kv_head d_head) -> b p n kv_head d_head", b=b, p=p, kv_head=G)
    if W.b_Q is not None:
        q = q + W.b_Q
    if W.b_K is not None:
        k = k + W.b_K
    if W.q_norm_w is not None:
        q = pm._norm(q, W.q_norm_w, None)
        k = pm._norm(k, W.k_norm_w, None)
    if pm.use_rope and pm.rotary is not None:
        cos, sin = pm._rope(x[:, :, 0], position_ids, layer)
        q = rearrange(pm._rot(rearrange(q, "b p n head e -> b p (n head) e"), cos, sin),
                      "b p (n head) e -> b p n head e", n=n)
        k = rearrange(pm._rot(rearrange(k, "b p n kv_head e -> b p (n kv_head) e"), cos, sin),
                      "b p (n kv_head) e -> b p n kv_head e", n=n)
    return q, k


def allowed_keys(pm: PatchableModel, layer: int, mask: Tensor) -> Tensor:
    """``[b q k]`` bool: key k is visible from real query q in layer ``layer`` (causal, real key,
    sliding window)."""
    W = pm.layers[layer]
    p = mask.shape[1]
    m = mask.bool()
    causal = torch.ones(p, p, dtype=torch.bool, device=mask.device).tril()
    if W.window is not None:
        causal = causal & ~torch.ones(p, p, dtype=torch.bool, device=mask.device).tril(-W.window)
    return causal[None] & m[:, None, :] & m[:, :, None]


def qk_fix_block(
    pm: PatchableModel,
    layer: int,
    resid: Float[Tensor, "batch pos d_model"],
    delta: Float[Tensor, "batch chunk n d_model"],
    c0: int,
    q: Float[Tensor, "batch pos head d_head"],
    k: Float[Tensor, "batch pos kv_head d_head"],
    v: Float[Tensor, "batch pos kv_head d_head"],
    z: Float[Tensor, "batch pos head d_head"],
    grad_z: Float[Tensor, "batch pos head d_head"],
    mask: Int[Tensor, "batch pos"],
    dtype: torch.dtype,
) -> Float[Tensor, "batch chunk n qk"]:
    """AtP* scores (module docstring) of the same-position edges from ``n`` senders (their deltas
    ``delta`` at positions ``c0 … c0+chunk``) into layer ``layer``'s query receivers (first H
    columns) and key receivers (next G columns). ``q``/``k``/``v``/``z``: the clean layer's
    recorded tensors; ``resid``: the residual the layer's attention normalises."""
    H, G = pm.n_heads, pm.n_kv_heads
    rep = H // G
    b, p = mask.shape
    c = delta.shape[1]
    c1 = c0 + c
    n = delta.shape[2]
    pos_ids = pm.position_ids(mask)[:, c0:c1]
    x0 = resid[:, c0:c1, None, :]
    q_new, k_new = qk_project(pm, layer, x0 + delta.to(x0.dtype), pos_ids)
    q_old, k_old = qk_project(pm, layer, x0, pos_ids)
    dq = (q_new - q_old).to(dtype)  # [b c n H e]
    dk = (k_new - k_old).to(dtype)  # [b c n G e]
    del q_new, k_new, q_old, k_old
    qf, kf, vf, zf, gf = (t.to(dtype) for t in (q, k, v, z, grad_z))
    idx = torch.arange(H, device=q.device) // rep
    kh, vh = kf[:, :, idx], vf[:, :, idx]  # [b p H e]
    allowed = allowed_keys(pm, layer, mask.to(q.device))  # [b q k]
    raw = einsum(qf, kh, "b query head e, b key head e -> b head query key")  # q·k before scale / soft-cap (pm.score)
    scores = pm.score(raw).masked_fill(~allowed[:, None], float("-inf"))
    A = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows of padding queries: 0
    Gv = einsum(gf, vh, "b query head e, b key head e -> b head query key")  # g_t · v_t'
    Go = einsum(gf, zf, "b query head e, b query head e -> b head query")  # g_t · z_t
    # --- query receivers at t in the chunk: the whole row t is recomputed
    r_row = rearrange(raw[:, :, c0:c1], "b head c key -> b c 1 head key")
    ok_row = allowed[:, c0:c1][:, :, None, None]  # [b c 1 1 k]
    ds = einsum(dq, kh, "b c n head e, b key head e -> b c n head key")
    A_new = torch.softmax(pm.score(r_row + ds).masked_fill(~ok_row, float("-inf")), dim=-1).nan_to_num(0.0)
    A_row = rearrange(A[:, :, c0:c1], "b head c key -> b c 1 head key")
    Gv_row = rearrange(Gv[:, :, c0:c1], "b head c key -> b c 1 head key")
    s_q = ((A_new - A_row) * Gv_row).sum(-1)  # [b c n H]
    del A_new, ds, r_row
    # --- key receivers at t' in the chunk: one score per row t >= t' moves
    dkh = dk[:, :, :, idx]  # [b c n H e]
    r_col = raw[:, None, :, :, c0:c1]  # [b 1 H t c]
    dlt = pm.score(r_col + einsum(qf, dkh, "b t head e, b c n head e -> b n head t c")) - pm.score(r_col)  # [b n H t c]
    Ac = A[:, None, :, :, c0:c1]  # [b 1 H t c]
    move = (Gv[:, :, :, c0:c1] - Go[..., None])[:, None]  # [b 1 H t c]
    ok = allowed[:, None, None, :, c0:c1]
    s_k = torch.where(ok, _softmax_shift(Ac.expand_as(dlt), dlt) * move, torch.zeros_like(dlt))
    s_k = s_k.sum(3)  # [b n H c]
    s_k = reduce(s_k, "b n (kv_head rep) c -> b c n kv_head", "sum", rep=rep)
    return torch.cat([s_q, s_k], dim=-1)
