"""Gemma 3 (HF ``gemma3_text``) support for :class:`circuits._forward.PatchableModel`.

Facts taken from the installed ``transformers/models/gemma3/modeling_gemma3.py`` (the model:
Gemma-3-270M, ``../shared/REFERENCES.md`` §7; graph of senders/receivers: §1, Haklay et al. 2025):

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
pre-norm output. A bias of ``o_proj`` (absent in Gemma 3) would add the non-ablatable term
:math:`(1+g) \\odot b_O / \\mathrm{rms}` of the current run. The MLP is a single sender, so its
output is simply the post-feed-forward-normed MLP output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["init_gemma", "head_shares"]


def head_shares(head_out: Tensor, b_O: Tensor | None, g: Tensor,
                eps: float) -> tuple[Tensor, Tensor | None]:
    """Per-head shares ``[b p H d]`` of ``RMSNorm_g(Σ_h o_h + b_O)`` (Gemma's float32 norm with
    ``1 + g``), and the bias share ``[b p d]`` (None without a bias)."""
    total = head_out.sum(2)
    if b_O is not None:
        total = total + b_O
    tf = total.float()
    r = torch.rsqrt(tf.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + g.float())  # [b p d]
    shares = (head_out.float() * r[:, :, None]).to(head_out.dtype)
    bias = None if b_O is None else (b_O.float() * r).to(head_out.dtype)
    return shares, bias


def init_gemma(pm: Any, hf: Any, cfg: Any) -> None:
    """Fill ``pm`` (a PatchableModel under construction) from a Gemma 3 HF model.

    Accepts ``Gemma3ForCausalLM`` (``gemma3_text``) and the text tower of
    ``Gemma3ForConditionalGeneration`` (``gemma3``, its ``text_config``)."""
    if pm.model_type == "gemma3":  # multimodal wrapper: use the language model
        cfg = cfg.text_config
        core = hf.model.language_model
    else:
        core = hf.model
    if getattr(cfg, "use_bidirectional_attention", False):
        raise NotImplementedError("Gemma 3 with use_bidirectional_attention=True (an encoder) is "
                                  "not supported by circuits.PatchableModel: it is not causal")
    pm._init_llama(hf, cfg, core=core, sandwich=True)  # then the Gemma-specific parts
    pm.arch = "gemma3"
    types = list(getattr(cfg, "layer_types", None) or ["full_attention"] * pm.n_layers)
    window = getattr(cfg, "sliding_window", None)
    for blk, W, kind in zip(core.layers, pm.layers, types):
        at = blk.self_attn
        W.q_norm_w = at.q_norm.weight.detach()
        W.k_norm_w = at.k_norm.weight.detach()
        W.post_attn_w = blk.post_attention_layernorm.weight.detach()
        W.ln2_w = blk.pre_feedforward_layernorm.weight.detach()
        W.post_mlp_w = blk.post_feedforward_layernorm.weight.detach()
        W.rope_key = kind
        if kind == "sliding_attention":
            if window is None:
                raise ValueError("Gemma 3 config has sliding layers but no sliding_window")
            W.window = int(window)
        elif kind != "full_attention":
            raise NotImplementedError(f"Gemma 3 layer type {kind!r}")
    pm.layer_types = types
    pm.rope_theta = {k: float(v["rope_theta"]) for k, v in (cfg.rope_parameters or {}).items()
                     if v is not None and "rope_theta" in v}
    pm.embed_scale = core.embed_tokens.embed_scale.detach().to(pm.W_E.dtype)
    pm.final_softcap = getattr(cfg, "final_logit_softcapping", None)
    pm.use_rope = True
