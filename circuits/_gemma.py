"""Head shares: the sender definition for norms that act on the *sum* of the heads.

Used by :class:`circuits._forward.PatchableModel` for Gemma 2 and Gemma 3 (sandwich norms, weight
``1 + g``) and OLMo-2 (post-norm only, weight ``g``: ``x + RMSNorm(attn(x))``, no input norm). The
family facts themselves live in :mod:`interp.families`; Gemma 3 as the worked case follows.

Facts taken from the installed ``transformers/models/gemma3/modeling_gemma3.py`` (the model:
Gemma-3-270M; graph of senders/receivers: Haklay et al. 2025, arXiv:2502.04577):

* embeddings are multiplied by :math:`\\sqrt{d_{model}}` (cast to the model dtype);
* every RMSNorm computes in float32 and multiplies by :math:`1 + w` (weights stored centred on 0);
* per-head ``q_norm`` / ``k_norm`` (RMSNorm over ``head_dim``) after the q/k projections and before
  RoPE; attention scale ``query_pre_attn_scalar ** -0.5``. ``attn_logit_softcapping`` is stored
  on the HF attention module but *not* passed to the attention function (transformers 5.x), so
  it has no effect on HF's Gemma 3 and none here either (checked against HF with it set);
* ``config.layer_types`` makes each layer ``sliding_attention`` (causal and
  :math:`t - t' <` ``sliding_window``) or ``full_attention``, each type with its own RoPE
  parameters (``config.rope_parameters[layer_type]``, e.g. base 10 000 local, 1 000 000 global),
  applied by the HF rotary module ``rotary_emb(x, position_ids, layer_type)``;
* sandwich norms: ``x + post_attention_layernorm(attn(input_layernorm(x)))`` then
  ``x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))``; gated
  ``gelu_pytorch_tanh`` MLP; final norm, tied ``lm_head``, optional ``final_logit_softcapping``.

**Graph definition (the linearisation).** ``post_attention_layernorm`` normalises the *sum* of
the head outputs :math:`o_h = \\mathrm{attn}_h W_O[h]`, so heads are not additive senders. Head
h's sender output is its share of the normalised block output with the RMS of the same run,

.. math:: z_h = (1+g) \\odot o_h \\,/\\, \\mathrm{rms}\\big(\\textstyle\\sum_{h'} o_{h'} + b_O\\big),

which sums to the true block output in every run (clean, corrupt, patched). Patching the edge
from head h therefore replaces its share (numerator *and* RMS of the ablated run), not its
pre-norm output (OLMo-2: :math:`g` in place of :math:`1+g`). A bias of ``o_proj`` (absent in Gemma 3) would add the non-ablatable term
:math:`(1+g) \\odot b_O / \\mathrm{rms}` of the current run. The MLP is a single sender, so its
output is simply the post-feed-forward-normed MLP output.
"""

from __future__ import annotations

import torch
from torch import Tensor

from circuits._blocks import _up

__all__ = ["head_shares"]


def head_shares(head_out: Tensor, b_O: Tensor | None, g: Tensor,
                eps: float, offset: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """Per-head shares ``[b p H d]`` of ``RMSNorm_g(Σ_h o_h + b_O)`` (float32 norm with weight
    ``offset + g``: Gemma ``1 + g``, OLMo-2 ``g``), and the bias share ``[b p d]`` (None without
    a bias)."""
    total = head_out.sum(2)
    if b_O is not None:
        total = total + b_O
    tf = _up(total)
    r = torch.rsqrt(tf.pow(2).mean(-1, keepdim=True) + eps) * (offset + _up(g))  # [b p d]
    shares = (_up(head_out) * r[:, :, None]).to(head_out.dtype)
    bias = None if b_O is None else (_up(b_O) * r).to(head_out.dtype)
    return shares, bias
