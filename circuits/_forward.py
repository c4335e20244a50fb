"""A patchable functional forward pass over the graph of senders and receivers.

:class:`PatchableModel` re-implements a TransformerBridge's forward pass from its HF weights so
that every *edge* of the computational graph of Haklay et al. (2025) can be ablated on its own
(Haklay et al. 2025, arXiv:2502.04577; REFERENCES.md):

* **senders** (outputs written into the residual stream): ``"embed"`` (token + learned position
  embeddings), ``"L{l}H{h}"`` (head output :math:`z_h W_O[h]`, :math:`z_h = A_h V_h`), ``"M{l}"``
  (MLP output). Bias terms that do not depend on the input (attention ``b_O`` and the MLP output
  bias) are constants added to the residual stream: they are never ablated.
* **receivers** (inputs read from the residual stream): ``"L{l}H{h}.q"``, ``"L{l}KV{g}.k"``,
  ``"L{l}KV{g}.v"``, ``"M{l}"`` (MLP input) and ``"logits"`` (input of the final norm). Under
  GQA/MQA the key and value receivers belong to KV head ``g`` that query heads
  ``g·(H/G) … (g+1)·(H/G)−1`` share, so one k/v receiver feeds several heads.

Each receiver's input at position p is the sum of the outputs at position p of all senders
strictly upstream (plus the constant biases); each receiver normalises its own input (its own
copy of ``ln1``/``ln2``/``ln_final``), so q, k and v can be patched independently:

.. math:: x_r[p] = \\sum_s \\mathrm{keep}[p,s,r]\\, z_s[p] + (1-\\mathrm{keep}[p,s,r])\\, z^*_s[p]

where :math:`z` are the sender outputs of the *current* (patched) run and :math:`z^*` the fixed
ablated ones. **Crossing edges** live inside one query head h at query position t: its query
:math:`q_t` and the key :math:`k_{t'}` / value :math:`v_{t'}` of every position t' ≤ t.
``keep_cross[b, l, h, kind, t, t']`` False (kind 0 = q, 1 = k, 2 = v) replaces, for that one
(t, t') pair only, :math:`q_t` (kind q) or :math:`k_{t'}` (kind k) in the score
:math:`q_t\\cdot k_{t'}/\\sqrt{d}` by the ablated one, or :math:`v_{t'}` in the weighted sum
of query t (kind v): :math:`z_t = \\sum_{t'} A_{tt'}(M_{tt'} v_{t'} + (1-M_{tt'}) v^*_{t'})`.
All of it is vectorised over positions (four score combinations chosen by mask).

Supported families: every family :func:`interp.families.family_of` describes — llama, mistral,
qwen2, qwen3, gemma, gemma2, gemma3_text, olmo2, phi3, phi, gpt_neox, gptj, gpt2, stablelm, granite,
smollm3 (and the zoo's Llama-style toys); each is checked against HF eager logits in
``tests/test_families_circuits.py``. Weights are read through the family's module paths
(:mod:`circuits._blocks`: fused ``qkv`` of Phi-3 / GPT-NeoX (per-head ``[q k v]``) / GPT-2
``Conv1D`` and Phi-3's fused ``gate_up`` are split into per-head matrices); structural facts come
from the family (norm kind and placement, parallel blocks, q/k norms, rotary dimension and pairing,
soft-caps, sliding windows, multipliers). A model_type without a family, or a feature this module
does not implement, raises :class:`interp.families.UnsupportedFamilyError` naming the missing
piece and pointing to "Adding a model family" in CONTRIBUTING.md.

Graph definitions where a family's block is not "x + Σ heads + MLP(norm(x + Σ heads))":

* **Parallel blocks** (GPT-NeoX ``use_parallel_residual``, GPT-J, Phi, StableLM's option:
  ``x + attn(n₁(x)) + mlp(n₂(x))``): the MLP receiver of layer l reads the *same* residual as the
  layer's attention receivers, so the heads of layer l are not upstream of ``M{l}`` (no such edge
  in ``valid``; ``n_upstream(l, "mlp") == n_upstream(l, "attn")``). With a shared norm (GPT-J, Phi,
  StableLM) the MLP receiver normalises its own copy of the residual with the attention's norm
  weights; GPT-NeoX uses its second norm.
* **Sandwich norms** (Gemma 2, Gemma 3) and **post-norm only** (OLMo-2: ``x + n(attn(x))``,
  ``x + n(mlp(x))``, no input norms): the norm after attention acts on the *sum* of the heads, so
  head h's sender output is its share of the normalised output with the RMS of the same run,
  :math:`z_h = (o + g)\\odot o_h / \\mathrm{rms}(\\sum_{h'} o_{h'} + b_O)` (``o`` = 1 for Gemma's
  ``1 + g`` weights, 0 for OLMo-2): the shares sum to the block output in every run, and ablating
  an edge from head h replaces its share (numerator and RMS of the ablated run). The MLP sender
  is the normalised MLP output. Under post-norm, attention and MLP receivers read the raw
  residual (there is no input norm). Details: :mod:`circuits._gemma`.
* **q/k norm over the whole projection** (OLMo-2): each query receiver computes the full q
  projection of its *own* input, normalises it over all heads and keeps its head's slice (k
  receivers likewise over the KV heads), so patching one head's query input changes only that
  head's query. Per-head q/k norms (Qwen3, Gemma 3, Phi/StableLM LayerNorms) need no such care.
* **Soft-capped attention logits** (Gemma 2): scores are :math:`c\\tanh(s\\,q\\cdot k/c)`; a
  crossing q/k edge replaces q or k inside the capped score.
* **Partial / interleaved rotary** (GPT-NeoX, Phi, Phi-3, StableLM, GPT-J): only the first
  ``rotary_dim`` dims of q and k rotate, in half (``i, i + r/2``) or interleaved (``2i, 2i+1``,
  GPT-J) pairs; the rest pass through. NoPE layers (SmolLM3) are not rotated.
* **Granite multipliers**: ``residual_multiplier`` is folded into the output projections (head
  and MLP sender outputs are what is added to the residual stream), ``embedding_multiplier`` into
  the ``"embed"`` sender, ``attention_multiplier`` is the attention scale and logits are divided
  by ``logits_scaling``.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits._activations import Activations
from interp.families import family_of
from interp.provenance import model_name
from circuits._blocks import Layer, _b, _up, _w, get, load_layers, unsupported
from circuits._gemma import head_shares
from circuits._sparse import SparseMasks
from interp.types import Model

__all__ = ["Activations", "PatchableModel", "sender_names", "receiver_names"]

#: grouped-query attention scores and value mix (query heads grouped by the KV head they share)
_QK = "batch query kv_head rep d_head, batch key kv_head d_head -> batch kv_head rep query key"
_PV = "batch kv_head rep query key, batch key kv_head d_head -> batch query kv_head rep d_head"


# ----------------------------------------------------------------------------------------------
# graph vocabulary
# ----------------------------------------------------------------------------------------------
def sender_names(n_layers: int, n_heads: int) -> list[str]:
    """``["embed", "L0H0", …, "L0H{H-1}", "M0", "L1H0", …, "M{L-1}"]`` (residual order)."""
    out = ["embed"]
    for l in range(n_layers):
        out += [f"L{l}H{h}" for h in range(n_heads)] + [f"M{l}"]
    return out


def receiver_names(n_layers: int, n_heads: int, n_kv_heads: int) -> list[str]:
    """Per layer: q of every head, k then v of every KV head, the MLP input; then ``"logits"``."""
    out: list[str] = []
    for l in range(n_layers):
        out += [f"L{l}H{h}.q" for h in range(n_heads)]
        out += [f"L{l}KV{g}.k" for g in range(n_kv_heads)]
        out += [f"L{l}KV{g}.v" for g in range(n_kv_heads)]
        out += [f"M{l}"]
    return out + ["logits"]


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
_Layer = Layer  # the per-layer weights (circuits._blocks)


class PatchableModel:
    """Functional forward pass of a TransformerBridge with edge-level patching.

    Exact to the bridge's logits (fp32, eager attention) for the supported families (module
    docstring). Build once per model (it only references the weights) and reuse::

        pm = PatchableModel(bridge)
        logits = pm.run(tokens, mask)                       # plain forward
        acts = pm.activations(corrupt_tokens, corrupt_mask)  # ablation source
        logits = pm.run(tokens, mask, ablated=acts, keep=keep, keep_cross=keep_cross)

    Position ids are ``cumsum(attention_mask) − 1`` so left padding gives the same numbers as
    no padding.
    """

    def __init__(self, bridge: Model) -> None:
        hf = getattr(bridge, "original_model", bridge)
        cfg = hf.config
        self.bridge = bridge
        self.hf = hf
        self.model_type: str = getattr(cfg, "model_type", "?")
        self.model_name: str = model_name(bridge)
        fam = family_of(hf)  # raises UnsupportedFamilyError naming the missing adapter
        self.family = fam
        if self.model_type == "gemma3":  # multimodal wrapper: its text tower (paths say "model.…")
            root: Any = SimpleNamespace(model=hf.model.language_model, lm_head=hf.lm_head)
        else:
            root = hf
        if getattr(cfg, "use_bidirectional_attention", False) or getattr(
                getattr(cfg, "text_config", None), "use_bidirectional_attention", False):
            raise unsupported(self.model_type, "use_bidirectional_attention=True (an encoder, not causal)")
        if len(set(fam.attention_scales)) > 1:
            raise unsupported(self.model_type, "per-layer attention scales (GPT-2 scale_attn_by_inverse_layer_idx)")
        if fam.qk_norm == "proj" and fam.qk_norm_kind != "rms":
            raise unsupported(self.model_type, "a LayerNorm over the whole q/k projection")
        self.arch = {"gemma3_text": "gemma3", "gemma3": "gemma3", "mistral": "llama", "qwen2": "llama",
                     "smollm3": "llama"}.get(self.model_type, self.model_type)
        self.n_layers = fam.n_layers
        self.n_heads = fam.n_heads
        self.n_kv_heads = fam.n_kv_heads
        self.d_model = fam.d_model
        self.d_head = fam.head_dim
        self.eps = float(fam.norm_eps)
        self.norm_kind: str = fam.norm  # "rms" | "layer"
        self.norm_offset = float(fam.norm_offset)  # Gemma: RMSNorm scales by 1 + w
        self.placement: str = fam.placement  # "pre" | "sandwich" | "post"
        self.parallel: str | None = fam.parallel  # None | "shared_norm" | "two_norms"
        self.qk_norm: str | None = fam.qk_norm  # None | "head" | "proj"
        self.qk_norm_kind: str = fam.qk_norm_kind or "rms"
        self.layer_types = list(fam.layer_types)
        rot = fam.rotary
        self.rotary = None
        self.rope_keys: list[str] | None = None
        self.rope_theta: dict[str, float] = {}
        if rot is not None:
            model = get(root, fam.paths.layers.rsplit(".", 1)[0]) if "." in fam.paths.layers else root
            self.rotary = getattr(model, "rotary_emb", None)
            # a TransformerBridge wraps HF modules: call (and inspect) the HF one
            self.rotary = getattr(self.rotary, "original_component", None) or self.rotary
            if self.rotary is None:
                raise unsupported(self.model_type, "a rotary model without a rotary_emb module")
            # Gemma 3 keeps one RoPE table per layer type: rotary_emb(x, pos, layer_type)
            if "layer_type" in inspect.signature(self.rotary.forward).parameters:
                self.rope_keys = list(rot.layer_types)
            self.rope_theta = {t: float(b) for t, b in zip(rot.layer_types, rot.bases) if b is not None}
        self.use_rope = self.rotary is not None
        self.rotary_dim = rot.rotary_dim if rot is not None else 0
        self.pairing: str = rot.pairing if rot is not None else "half"
        self.layers: list[Layer] = load_layers(self, root, fam)
        self.attn_softcap = fam.attn_softcap
        self.final_softcap = fam.final_softcap
        self.logits_scaling = None if fam.logits_scaling == 1.0 else float(fam.logits_scaling)
        self.scale = float(fam.attention_scale)
        emb = get(root, fam.paths.embed)
        self.W_E = _w(emb)
        es = getattr(emb, "embed_scale", None)  # Gemma: sqrt(d_model) buffer, cast to the model dtype
        if es is not None and isinstance(es, Tensor):
            self.embed_scale: Tensor | float | None = es.detach().to(self.W_E.dtype)
        elif fam.embed_scale != 1.0:  # Granite's embedding_multiplier
            self.embed_scale = float(fam.embed_scale)
        else:
            self.embed_scale = None
        self.W_pos = _w(get(root, fam.paths.pos_embed)) if fam.learned_positions else None
        lnf = get(root, fam.paths.final_norm)
        self.lnf_w, self.lnf_b = _w(lnf), _b(lnf)
        head = get(root, fam.paths.lm_head)
        self.W_U = _w(head).T  # [d vocab]
        b_U = _b(head)
        # an all-zero unembedding bias (the bridge adds one where HF has none) is left out: adding
        # it changes nothing but costs a [b p vocab] copy
        self.b_U = None if b_U is None or not bool(b_U.any()) else b_U
        mlp0 = get(get(root, fam.paths.layers)[0], fam.paths.mlp)
        self.act = next((getattr(mlp0, n) for n in ("act_fn", "act", "activation_fn") if hasattr(mlp0, n)), None)
        if self.act is None:  # the activation as HF applies it; else the config's name
            from transformers.activations import ACT2FN

            if fam.activation not in ACT2FN:
                raise unsupported(self.model_type, f"activation {fam.activation!r}")
            self.act = ACT2FN[fam.activation]
        self.senders = sender_names(self.n_layers, self.n_heads)
        self.receivers = receiver_names(self.n_layers, self.n_heads, self.n_kv_heads)
        self.sender_index = {s: i for i, s in enumerate(self.senders)}
        self.receiver_index = {r: i for i, r in enumerate(self.receivers)}
        self.valid = self._valid()

    def _valid(self) -> Bool[Tensor, "sender receiver"]:
        S, R = len(self.senders), len(self.receivers)
        v = torch.zeros(S, R, dtype=torch.bool)
        H = self.n_heads
        per = H + 2 * self.n_kv_heads + 1
        for l in range(self.n_layers):
            r0 = l * per
            v[: self.n_upstream(l, "attn"), r0: r0 + per - 1] = True
            v[: self.n_upstream(l, "mlp"), r0 + per - 1] = True
        v[:, R - 1] = True
        return v

    # ---------------------------------------------------------------------------- index helpers
    @property
    def device(self) -> torch.device:
        return self.W_E.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_E.dtype

    def n_upstream(self, layer: int, kind: str) -> int:
        """Number of senders upstream of layer ``layer``'s attention (``"attn"``) or MLP input."""
        base = 1 + layer * (self.n_heads + 1)
        # a parallel block's MLP reads the same residual as its attention (module docstring)
        return base if (kind == "attn" or self.parallel) else base + self.n_heads

    def receiver_slice(self, layer: int) -> slice:
        """Receivers of layer ``layer``: H q, G k, G v, then the MLP input."""
        per = self.n_heads + 2 * self.n_kv_heads + 1
        return slice(layer * per, (layer + 1) * per)

    def sender_slice(self, layer: int) -> slice:
        """Senders of layer ``layer``: its H heads, then its MLP."""
        s0 = 1 + layer * (self.n_heads + 1)
        return slice(s0, s0 + self.n_heads + 1)

    # ---------------------------------------------------------------------------- primitives
    def _norm(self, x: Tensor, w: Tensor | None, b: Tensor | None) -> Tensor:
        """The family's norm (``w`` None: no norm, the identity)."""
        if w is None:
            return x
        if self.norm_kind == "layer":
            return F.layer_norm(x, (x.shape[-1],), w, b, self.eps)
        xf = _up(x)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.norm_offset:  # Gemma: (x̂ · (1 + w)) in float32, then cast
            return (y * (self.norm_offset + _up(w))).to(x.dtype)
        return w * y.to(x.dtype)

    def _qk_norm(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        """Per-head q/k norm of ``x [.. n e]`` with weights ``[e]`` or per head ``[n e]``."""
        if self.qk_norm_kind == "layer":
            if w.dim() == 1:
                return F.layer_norm(x, (x.shape[-1],), w, b, self.eps)
            y = F.layer_norm(x, (x.shape[-1],), None, None, self.eps) * w
            return y if b is None else y + b
        xf = _up(x)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.norm_offset:
            return (y * (self.norm_offset + _up(w))).to(x.dtype)
        return w * y.to(x.dtype)

    def _proj_norm(self, x: Tensor, w: Tensor) -> Tensor:
        """RMSNorm over the whole q or k projection ``x [.. n e]`` (OLMo-2), weights ``[n·e]``."""
        y = self._qk_norm(rearrange(x, "... head d_head -> ... (head d_head)"), w, None)
        return rearrange(y, "... (head d_head) -> ... head d_head", head=x.shape[-2])

    def _norm_vjp(self, x: Tensor, g: Tensor, w: Tensor | None) -> Tensor:
        """Gradient w.r.t. the norm's input ``x`` ``[b p d]`` of ``Σ g·norm(x)`` for many
        cotangents ``g`` ``[b p n d]`` at once (closed form; the statistics of ``x`` are shared):
        RMSNorm ``y = w ⊙ x r``, ``r = (mean x² + ε)^-½``: ``r (u − x̂ ⟨u, x̂⟩/d)``, ``u = w ⊙ g``;
        LayerNorm adds ``− mean(u)``; Gemma uses ``1 + w``, in float32; no norm: ``g``."""
        if w is None:
            return g
        xh, r = self._norm_stats(x)
        xh, r = xh[:, :, None], r[:, :, None]  # [b p 1 d], [b p 1 1]
        if self.norm_kind == "layer":
            u = _up(g) * _up(w)
            out = r * (u - u.mean(-1, keepdim=True) - xh * (u * xh).mean(-1, keepdim=True))
        else:
            u = _up(g) * ((self.norm_offset + _up(w)) if self.norm_offset else _up(w))
            out = r * (u - xh * (u * xh).mean(-1, keepdim=True))
        return out.to(g.dtype)

    def _norm_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The input norm's normalised input ``x̂`` (centred first for LayerNorm) and scale
        ``r = (mean x² + ε)^-½`` ``[.. 1]``, in float32 or wider."""
        xf = _up(x)
        if self.norm_kind == "layer":
            xf = xf - xf.mean(-1, keepdim=True)
        r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf * r, r

    def _proj_norm_vjp(self, u: Tensor, g: Tensor, w: Tensor, W: Tensor) -> Tensor:
        """Receiver-wise gradient through an RMSNorm over the whole projection (OLMo-2).

        Receiver ``n`` computes the full projection ``u = x̂ W + b`` ``[b p N e]`` of its own
        input and keeps slice ``n`` of ``y = w ⊙ u r``; with the cotangent ``g_n`` on that slice
        only, ``∂/∂x̂ = r ((w_n ⊙ g_n) W_nᵀ − ⟨w_n ⊙ g_n, û_n⟩/D · û Wᵀ)``, ``û = u r``, ``D = N·e``.
        Returns ``[b p N d]``."""
        b, p, N, e = u.shape
        uf = rearrange(_up(u), "b p n e -> b p (n e)")
        r = torch.rsqrt(uf.pow(2).mean(-1, keepdim=True) + self.eps)  # [b p 1]
        uh = rearrange(uf * r, "b p (n e) -> b p n e", n=N)
        wg = _up(g) * rearrange(_up(w), "(n e) -> n e", n=N)
        s = (wg * uh).sum(-1)  # [b p N]
        Wf = _up(W)
        a = einsum(wg, Wf, "batch pos receiver d_head, receiver d_model d_head -> batch pos receiver d_model")
        P = einsum(uh, Wf, "batch pos receiver d_head, receiver d_model d_head -> batch pos d_model")
        out = r[..., None] * (a - (s / (N * e))[..., None] * P[:, :, None])
        return out.to(g.dtype)

    def attn_receiver_grads(
        self, layer: int, resid: Float[Tensor, "batch pos d_model"],
        g_q: Float[Tensor, "batch pos head d_head"], g_k: Float[Tensor, "batch pos kv_head d_head"],
        g_v: Float[Tensor, "batch pos kv_head d_head"],
    ) -> Float[Tensor, "batch pos receiver d_model"]:
        """Gradients at the inputs of layer ``layer``'s attention receivers (q of every head,
        k then v of every KV head), each as if it normalised its own copy of the residual: from
        the gradients at the q/k/v grad nodes of :meth:`forward` (the projections — linear:
        ``g_x̂ = g_q W_Qᵀ`` — or, with a q/k norm over the whole projection, the normalised
        q/k: :meth:`_proj_norm_vjp`) through the input norm's Jacobian (:meth:`_norm_vjp`).
        Equal to differentiating per-receiver copies, without running H + 2G copies of the
        forward and backward."""
        W = self.layers[layer]
        if self.qk_norm == "proj":
            xn = self._norm(resid, W.ln1_w, W.ln1_b)
            uq = einsum(xn, W.W_Q, "batch pos d_model, head d_model d_head -> batch pos head d_head")
            uk = einsum(xn, W.W_K, "batch pos d_model, head d_model d_head -> batch pos head d_head")
            if W.b_Q is not None:
                uq = uq + W.b_Q
            if W.b_K is not None:
                uk = uk + W.b_K
            gq = self._proj_norm_vjp(uq, g_q, W.q_norm_w, W.W_Q)
            gk = self._proj_norm_vjp(uk, g_k, W.k_norm_w, W.W_K)
        else:
            gq = einsum(g_q, W.W_Q, "batch pos head d_head, head d_model d_head -> batch pos head d_model")
            gk = einsum(g_k, W.W_K, "batch pos kv_head d_head, kv_head d_model d_head -> batch pos kv_head d_model")
        gv = einsum(g_v, W.W_V, "batch pos kv_head d_head, kv_head d_model d_head -> batch pos kv_head d_model")
        gx = torch.cat([gq, gk, gv], dim=2)
        return self._norm_vjp(resid, gx, W.ln1_w)

    def condense_attn_grads(
        self, layer: int, resid: Float[Tensor, "batch pos d_model"],
        qkv: tuple[Tensor, Tensor, Tensor], g_qkv: tuple[Tensor, Tensor, Tensor],
    ) -> tuple[tuple[Tensor, Tensor, Tensor], Float[Tensor, "batch pos receiver"]]:
        """What :meth:`attn_receiver_grads_summed` needs of one gradient point, instead of its
        q/k/v gradients: ``(r·g_q, r·g_k, r·g_v)`` (to be summed over the points) and the
        per-receiver scalars ``s_n = r ⟨u_n, x̂⟩ / d`` — with ``u_n = w̃ ⊙ (W_n g_n)``,
        ``⟨u_n, x̂⟩ = ⟨g_n, (w̃ ⊙ x̂) W_n⟩`` read off the forward's own pre-bias projections
        ``qkv`` (minus the LayerNorm bias's share). ``r``, ``x̂``: the input norm's scale and
        normalised input (:meth:`_norm_vjp`); no norm: ``r = 1``, ``s = 0``. Not for a q/k norm
        over the whole projection (OLMo-2)."""
        W = self.layers[layer]
        gs = [_up(g) for g in g_qkv]
        if W.ln1_w is None:
            return (gs[0], gs[1], gs[2]), gs[0].new_zeros(*gs[0].shape[:2], sum(g.shape[2] for g in gs))
        r = self._norm_stats(resid)[1]  # [b p 1]
        dots = []
        for g, t, Wm in zip(gs, qkv, (W.W_Q, W.W_K, W.W_V)):
            dt = einsum(g, _up(t), "b p n e, b p n e -> b p n")
            if self.norm_kind == "layer" and W.ln1_b is not None:  # ⟨g, b W⟩: the bias's share of the projection
                bw = einsum(_up(W.ln1_b), _up(Wm), "d_model, n d_model e -> n e")
                dt = dt - einsum(g, bw, "b p n e, n e -> b p n")
            dots.append(dt)
        s_ = torch.cat(dots, dim=2) * (r / self.d_model)
        return (gs[0] * r[..., None], gs[1] * r[..., None], gs[2] * r[..., None]), s_

    def attn_receiver_grads_summed(
        self, layer: int, resid: list[Tensor], rg_sum: tuple[Tensor, Tensor, Tensor],
        coef: list[Tensor], batch: int,
    ) -> Float[Tensor, "batch pos receiver d_model"]:
        """:meth:`attn_receiver_grads` summed over gradient points, each with its own norm
        Jacobian, from their condensed form (:meth:`condense_attn_grads`):
        ``Σ_k J_kᵀ W g_k = w̃ ⊙ W (Σ_k r_k g_k) [− mean] − Σ_k x̂_k s_k`` (RMSNorm
        ``J_kᵀ u = r_k(u − x̂_k⟨u, x̂_k⟩/d)``; LayerNorm also subtracts the mean of u).
        ``resid``/``coef``: per chunk of points ``[(point b) p d]`` / ``[(point b) p n]``."""
        W = self.layers[layer]
        gq, gk, gv = rg_sum
        a = torch.cat([
            einsum(gq, _up(W.W_Q), "batch pos head d_head, head d_model d_head -> batch pos head d_model"),
            einsum(gk, _up(W.W_K), "batch pos kv_head d_head, kv_head d_model d_head -> batch pos kv_head d_model"),
            einsum(gv, _up(W.W_V), "batch pos kv_head d_head, kv_head d_model d_head -> batch pos kv_head d_model"),
        ], dim=2)
        if W.ln1_w is None:
            return a.to(resid[0].dtype)
        a.mul_((self.norm_offset + _up(W.ln1_w)) if self.norm_offset else _up(W.ln1_w))
        if self.norm_kind == "layer":
            a.sub_(a.mean(-1, keepdim=True))
        for x, s_ in zip(resid, coef):
            xh = rearrange(self._norm_stats(x)[0], "(point b) p d_model -> b p point d_model", b=batch)
            sk = rearrange(s_, "(point b) p n -> b p point n", b=batch)
            a.sub_(einsum(sk, xh, "b p point n, b p point d_model -> b p n d_model"))
        return a.to(resid[0].dtype)

    def _rope(self, x: Tensor, position_ids: Tensor, layer: int = 0) -> tuple[Tensor, Tensor]:
        """``cos``, ``sin`` ``[b p rotary_dim]`` from the HF rotary module, laid out for the
        family's pairing (half: ``[f, f]``; interleaved, GPT-J: each frequency twice in a row)."""
        key = self.layers[layer].rope_key
        out = self.rotary(x, position_ids) if key is None else self.rotary(x, position_ids, key)
        if self.pairing == "interleaved":  # GPT-J's module returns (sin, cos) of half width
            sin, cos = out
            cos, sin = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
        else:
            cos, sin = out
        return cos.to(x.dtype), sin.to(x.dtype)

    def rerotate(self, t: Float[Tensor, "batch layer pos n d_head"],
                 shift: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch layer pos n d_head"]:
        """Rotate post-RoPE q or k of every layer by ``shift`` more positions (each layer with its
        own RoPE table: Gemma's local and global layers differ; NoPE layers stay). RoPE
        rotations compose."""
        if not (self.use_rope and self.rotary is not None):
            return t
        B, L, P, n, e = t.shape
        out = t.clone()
        tables: dict[Any, tuple[Tensor, Tensor]] = {}
        for l in range(L):
            if not self.layers[l].use_rope:
                continue
            key = self.layers[l].rope_key
            if key not in tables:
                tables[key] = self._rope(t[:, l], shift, l)
            out[:, l] = self._rot(t[:, l], *tables[key])
        return out

    def _rot(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate the first ``rotary_dim`` dims of ``x [b p n e]`` (``cos``/``sin`` ``[b p r]``):
        pairs ``(i, i + r/2)`` (Llama/NeoX "half") or ``(2i, 2i+1)`` (GPT-J "interleaved"); the
        remaining ``e − r`` dims pass through (partial rotary)."""
        r = cos.shape[-1]
        xr = x if r == x.shape[-1] else x[..., :r]
        if self.pairing == "interleaved":
            rot = rearrange(torch.stack((-xr[..., 1::2], xr[..., ::2]), dim=-1), "... pair two -> ... (pair two)")
        else:
            half = r // 2
            rot = torch.cat((-xr[..., half:], xr[..., :half]), dim=-1)
        y = xr * cos[:, :, None, :] + rot * sin[:, :, None, :]
        return y if r == x.shape[-1] else torch.cat((y, x[..., r:]), dim=-1)

    def score(self, dots: Tensor, inplace: bool = False) -> Tensor:
        """Attention logits from raw ``q·k``: ``× scale``, then Gemma 2's soft-cap
        ``c·tanh(s/c)`` where the family has one (``inplace``: overwrite ``dots``)."""
        s = dots.mul_(self.scale) if inplace else dots * self.scale
        if self.attn_softcap is not None:
            c = self.attn_softcap
            s = s.div_(c).tanh_().mul_(c) if inplace else torch.tanh(s / c) * c
        return s

    def _diag_proj(self, xn: Tensor, Wm: Tensor, bias: Tensor | None, w: Tensor) -> Tensor:
        """Receiver ``n`` of ``xn [b p N d]`` projects its own input onto all ``N`` heads, norms
        the whole projection (OLMo-2) and keeps head ``n``: ``[b p N e]``."""
        full = einsum(xn, Wm,
                      "batch pos receiver d_model, head_all d_model d_head -> batch pos receiver head_all d_head")
        if bias is not None:
            full = full + bias
        full = self._proj_norm(full, w)
        idx = torch.arange(Wm.shape[0], device=xn.device)
        return full[:, :, idx, idx]

    def embed(self, tokens: Int[Tensor, "batch pos"],
              position_ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The ``"embed"`` sender: token embeddings (× Gemma's sqrt(d) or Granite's multiplier,
        + learned positions for GPT-2)."""
        x = self.W_E[tokens]
        if self.embed_scale is not None:
            x = x * self.embed_scale
        if self.W_pos is not None:
            x = x + self.W_pos[position_ids]
        return x

    @staticmethod
    def position_ids(attention_mask: Tensor) -> Tensor:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    # ---------------------------------------------------------------------------- public API
    @torch.no_grad()
    def run(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | Bool[Tensor, "batch pos"] | None = None,
        *,
        ablated: Activations | None = None,
        keep: Bool[Tensor, "batch pos sender receiver"] | None = None,
        keep_cross: Bool[Tensor, "batch layer head kind qpos kpos"] | None = None,
        masks: SparseMasks | None = None,
    ) -> Float[Tensor, "batch pos vocab"]:
        """Logits with edges ``keep == False`` fed from ``ablated`` (see module docstring).

        ``ablated`` must be in the same position coordinates as ``tokens`` (use
        :meth:`Activations.align` for counterfactuals of other lengths) with batch 1 or batch.
        ``masks`` (:class:`circuits._sparse.SparseMasks`) gives the same masks sparsely, in
        place of ``keep``/``keep_cross``.
        """
        if (keep is not None or keep_cross is not None or masks is not None) and ablated is None:
            raise ValueError("keep/keep_cross/masks need `ablated` activations (from .activations(), "
                             ".mean() or .zeros_like())")
        if masks is not None and (keep is not None or keep_cross is not None):
            raise ValueError("pass either masks= (sparse) or keep=/keep_cross= (dense), not both")
        return self.forward(tokens, attention_mask, ablated=ablated, keep=keep,
                            keep_cross=keep_cross, masks=masks)["logits"]

    @torch.no_grad()
    def activations(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | Bool[Tensor, "batch pos"] | None = None,
    ) -> Activations:
        """Sender outputs, q/k/v/z and patterns of a clean run (an ablation source)."""
        return self.forward(tokens, attention_mask, record=True)["activations"]

    def forward(
        self,
        tokens: Tensor | None,
        attention_mask: Tensor | None = None,
        *,
        embeds: Tensor | None = None,
        ablated: Activations | None = None,
        keep: Tensor | None = None,
        keep_cross: Tensor | None = None,
        record: bool = False,
        grad_nodes: bool = False,
        record_pattern: bool = True,
        masks: SparseMasks | None = None,
        record_heads: bool = True,
        replace: dict[tuple[str, int], Tensor] | None = None,
        stop_grad_layer: int | None = None,
        need_logits: bool = True,
    ) -> dict[str, Any]:
        """The forward pass. Returns a dict with ``"logits"`` and, on request:

        * ``record``: ``"activations"`` (:class:`Activations`);
        * ``grad_nodes`` (unpatched runs): ``"qkv"`` (list per layer of the q/k/v projections
          ``([b p H e], [b p G e], [b p G e])``, to differentiate at; turn their gradients into
          attention-receiver gradients with :meth:`attn_receiver_grads`) and ``"ln1_in"`` (the
          residual they normalise), ``"mlp_in"`` (list ``[b p 1 d]``), ``"logits_in"``
          ``[b p 1 d]`` and ``"z"`` (list ``[b p H e]``) — tensors in the autograd graph.

        ``embeds`` (``[b p d]``) replaces the ``"embed"`` sender's output (EAP-IG).
        ``masks`` (:class:`circuits._sparse.SparseMasks`): the circuit masks stored sparsely (each
        receiver corrected over its kept or its ablated edges, whichever are fewer).
        ``record_heads=False`` records no per-head sender outputs: ``senders`` is then
        ``[b p 1+L d]`` (embed, then each layer's MLP; head outputs are recomputed from ``z``
        where needed, :func:`circuits._stream.full_senders`).
        ``replace`` maps ``("attn", l)`` to constant head outputs ``[b p H d]`` and ``("mlp", l)``
        to a constant MLP output ``[b p d]`` written into the residual stream instead of the
        computed ones (no gradient flows through a replaced component: EAP-IG-activations).
        ``stop_grad_layer=l`` detaches layer l's head and MLP outputs where they enter the
        residual stream (AtP*'s GradDrop). Both leave the forward values unchanged otherwise.
        ``need_logits=False`` skips the unembedding (``"logits"`` is then ``None``; a recording
        run that only needs activations).
        ``record_pattern=False`` records no attention patterns (``pattern`` is then an empty
        ``[b L H 0 0]``; :meth:`attention_pattern` recomputes one layer's from q and k).

        Attention: where no pattern is recorded, no crossing mask patches it (``keep_cross`` /
        ``masks``) and the family has no score soft-cap, it runs as PyTorch's
        ``scaled_dot_product_attention`` — the same :math:`\\mathrm{softmax}(qk^\\top s + m)\\,v`
        (one additive mask per sliding window, shared by the layers), whose backward recomputes
        the pattern instead of keeping ``[b H T T]`` per layer (attribution's gradient pass at long
        context); otherwise eagerly. Both agree with HF's eager attention to float rounding.
        """
        if tokens is None and embeds is None:
            raise ValueError("need tokens or embeds")
        ref = tokens if tokens is not None else embeds[..., 0]
        b, p = ref.shape[:2]
        dev = self.device
        if attention_mask is None:
            attention_mask = torch.ones(b, p, dtype=torch.long, device=dev)
        mask = attention_mask.to(dev).long()
        pos_ids = self.position_ids(mask)
        x_embed = self.embed(tokens.to(dev), pos_ids) if embeds is None else embeds
        H, G, L, d = self.n_heads, self.n_kv_heads, self.n_layers, self.d_model
        S = len(self.senders)
        # unpatched attention whose pattern nobody reads runs fused (PyTorch's scaled-dot-product
        # attention: the same softmax(q·k·scale + mask)·v, without the [b H q k] pattern that an
        # eager backward keeps); soft-capped scores (Gemma 2) stay eager
        fused = (masks is None and keep_cross is None and self.attn_softcap is None
                 and not (record and record_pattern))
        if masks is not None and record and record_pattern:
            masks.need_pattern = True  # the sparse evaluator's fused path returns no pattern otherwise
        # attention masks [b 1 q k] per sliding window (None: global): causal & real key &
        # (q − k < window); a padding query with no key sees itself
        allowed_by: dict[int | None, Tensor] = {}
        for win in {W.window for W in self.layers}:
            causal = torch.ones(p, p, dtype=torch.bool, device=dev).tril()
            if win is not None:
                causal = causal & ~torch.ones(p, p, dtype=torch.bool, device=dev).tril(-win)
            allowed = causal[None] & mask.bool()[:, None, :]
            allowed = allowed | (torch.eye(p, dtype=torch.bool, device=dev)[None] & ~allowed.any(-1, keepdim=True))
            allowed_by[win] = allowed[:, None]
        # the fused path's additive mask (0 / −inf), built once per window and shared by all
        # layers (a boolean mask would be converted, and kept for the backward, layer by layer)
        bias_by = {win: x_embed.new_zeros(m.shape).masked_fill_(~m, float("-inf"))
                   for win, m in allowed_by.items()} if fused else {}
        rope_by: dict[str | None, tuple[Tensor, Tensor]] = {}
        if self.use_rope and self.rotary is not None:
            for l, W in enumerate(self.layers):
                if W.use_rope and W.rope_key not in rope_by:
                    rope_by[W.rope_key] = self._rope(x_embed, pos_ids, l)

        patch = keep is not None
        if ablated is not None:
            if ablated.batch not in (1, b) or ablated.n_pos != p:
                raise ValueError(f"ablated activations have batch {ablated.batch}, {ablated.n_pos} "
                                 f"positions; the run has batch {b}, {p} positions. Align them "
                                 f"with Activations.align(position_map) first.")
            abl_s = ablated.senders.to(dev)
        if patch:
            if keep.shape != (b, p, S, len(self.receivers)):
                raise ValueError(f"keep must be [batch pos sender receiver] = {(b, p, S, len(self.receivers))}, got {tuple(keep.shape)}")
            drop = (~keep.to(dev)).to(x_embed.dtype)
            delta = x_embed.new_zeros(b, p, S, d)  # z_current - z_ablated, filled as we go
            delta[:, :, 0] = x_embed - abl_s[:, :, 0]

        sparse = masks is not None
        if sparse:
            if ablated is None:
                raise ValueError("masks= needs `ablated` activations")
            if tuple(masks.pos_index.shape) != (b, p):
                raise ValueError(f"masks are for a batch {tuple(masks.pos_index.shape)}, the run is {(b, p)}")
            R = len(self.receivers)
            groups = [g for l in range(L) for g in (
                (self.receiver_slice(l).start, self.receiver_slice(l).stop - 1, self.n_upstream(l, "attn")),
                (self.receiver_slice(l).stop - 1, self.receiver_slice(l).stop, self.n_upstream(l, "mlp")))]
            slot = masks.senders_needed(groups + [(R - 1, R, S)], S)
            dstore = x_embed.new_zeros(b, p, max(1, int((slot >= 0).sum())), d)  # δ of needed senders
            dcum = x_embed - abl_s[:, :, 0]  # Σ δ over the senders so far
            masks.store(dstore, slot, 0, dcum[:, :, None])
        resid = x_embed
        # recorded activations are written into buffers made once (no per-layer list and no
        # concatenated second copy); they hold values only (detached)
        rec_s: Tensor | None = None
        if record:
            rec_s = x_embed.new_empty(b, p, S if record_heads else 1 + L, d)
            rec_s[:, :, 0] = x_embed.detach()
        rec_b: dict[str, Tensor] = {}
        rec: dict[str, list[Tensor]] = {"pattern": []}

        def put(name: str, l: int, t: Tensor) -> None:
            if name not in rec_b:
                rec_b[name] = t.new_empty(t.shape[0], L, *t.shape[1:])
            rec_b[name][:, l] = t.detach()
        if (patch or masks is not None) and grad_nodes:
            raise ValueError("grad_nodes is for unpatched runs (attribution); drop keep=")
        out: dict[str, Any] = {"qkv": [], "ln1_in": [], "mlp_in": [], "z": []}
        for l, W in enumerate(self.layers):
            rs = self.receiver_slice(l)
            nA = self.n_upstream(l, "attn")
            resid_in = resid  # what a parallel block's MLP reads
            if sparse:
                dcum_in = dcum
            if patch or sparse:  # one input per receiver (each normalised on its own)
                if sparse:
                    x = masks.receiver_inputs(resid, dcum, dstore, slot, rs.start, rs.stop - 1, nA)
                else:
                    x = resid[:, :, None, :].expand(b, p, H + 2 * G, d)
                    corr = einsum(drop[:, :, :nA, rs.start: rs.stop - 1], delta[:, :, :nA],
                                  "batch pos sender receiver, batch pos sender d_model -> batch pos receiver d_model")
                    x = x - corr
                xn = self._norm(x, W.ln1_w, W.ln1_b)
                if self.qk_norm == "proj":  # each receiver: full projection of its own input
                    q = self._diag_proj(xn[:, :, :H], W.W_Q, W.b_Q, W.q_norm_w)
                    k = self._diag_proj(xn[:, :, H: H + G], W.W_K, W.b_K, W.k_norm_w)
                else:
                    q = einsum(xn[:, :, :H], W.W_Q,
                               "batch pos head d_model, head d_model d_head -> batch pos head d_head")
                    k = einsum(xn[:, :, H: H + G], W.W_K,
                               "batch pos head d_model, head d_model d_head -> batch pos head d_head")
                v = einsum(xn[:, :, H + G:], W.W_V,
                           "batch pos head d_model, head d_model d_head -> batch pos head d_head")
            else:  # fast path: all receivers read the same residual
                xn1 = self._norm(resid, W.ln1_w, W.ln1_b)
                q = einsum(xn1, W.W_Q, "batch pos d_model, head d_model d_head -> batch pos head d_head")
                k = einsum(xn1, W.W_K, "batch pos d_model, head d_model d_head -> batch pos head d_head")
                v = einsum(xn1, W.W_V, "batch pos d_model, head d_model d_head -> batch pos head d_head")
                if self.qk_norm == "proj":
                    q = self._proj_norm(q if W.b_Q is None else q + W.b_Q, W.q_norm_w)
                    k = self._proj_norm(k if W.b_K is None else k + W.b_K, W.k_norm_w)
                if grad_nodes:  # receiver gradients come from these (attn_receiver_grads)
                    out["qkv"].append((q, k, v))
                    out["ln1_in"].append(resid.detach())
            if self.qk_norm != "proj":
                if W.b_Q is not None:
                    q = q + W.b_Q
                if W.b_K is not None:
                    k = k + W.b_K
            if W.b_V is not None:
                v = v + W.b_V
            if self.qk_norm == "head":  # per-head q/k norm before RoPE (Qwen3, Gemma 3, …)
                q = self._qk_norm(q, W.q_norm_w, W.q_norm_b)
                k = self._qk_norm(k, W.k_norm_w, W.k_norm_b)
            if W.use_rope and W.rope_key in rope_by:
                cos, sin = rope_by[W.rope_key]
                q = self._rot(q, cos, sin)
                k = self._rot(k, cos, sin)
            kc = None if keep_cross is None else keep_cross[:, l].to(dev)  # [b H 3 q k]
            qg = rearrange(q, "b q (g r) e -> b q g r e", g=G)  # query heads grouped by their KV head
            if sparse:
                z, A = masks.attend(self, l, q, k, v, ablated.q[:, l].to(dev).expand_as(q),
                                    ablated.k[:, l].to(dev).expand_as(k),
                                    ablated.v[:, l].to(dev).expand_as(v), allowed_by[W.window])
            elif kc is not None:
                qa = rearrange(ablated.q[:, l].to(dev).expand_as(q), "b q (g r) e -> b q g r e", g=G)
                ka = ablated.k[:, l].to(dev).expand_as(k)
                va = ablated.v[:, l].to(dev).expand_as(v)
                Mq, Mk, Mv = kc[:, :, 0], kc[:, :, 1], kc[:, :, 2]

                def sc(qq: Tensor, kk: Tensor) -> Tensor:
                    return rearrange(einsum(qq, kk, _QK), "b g r q k -> b (g r) q k")

                scores = torch.where(Mq, torch.where(Mk, sc(qg, k), sc(qg, ka)),
                                     torch.where(Mk, sc(qa, k), sc(qa, ka)))
            elif fused:  # no pattern wanted: fused attention, no [b H q k] kept for the backward
                z = rearrange(F.scaled_dot_product_attention(
                    rearrange(q, "b q head e -> b head q e"), rearrange(k, "b k kv_head e -> b kv_head k e"),
                    rearrange(v, "b k kv_head e -> b kv_head k e"), attn_mask=bias_by[W.window],
                    scale=self.scale, enable_gqa=G != H), "b head q e -> b q head e")
                A = None
            else:
                scores = rearrange(einsum(qg, k, _QK), "b g r q k -> b (g r) q k")
            if not sparse and not fused:
                scores = self.score(scores).masked_fill(~allowed_by[W.window], float("-inf"))
                A = torch.softmax(scores, dim=-1)
                Ag = rearrange(A, "b (g r) q k -> b g r q k", g=G)
                if kc is not None:
                    Mv_f = rearrange(Mv.to(A.dtype), "b (g r) q k -> b g r q k", g=G)
                    z = einsum(Ag * Mv_f, v, _PV) + einsum(Ag * (1 - Mv_f), va, _PV)
                else:
                    z = einsum(Ag, v, _PV)
                z = rearrange(z, "b q g r e -> b q (g r) e")
            if grad_nodes:
                out["z"].append(z)
            head_out = einsum(z, W.W_O, "batch query head d_head, head d_head d_model -> batch query head d_model")
            if W.post_attn_w is not None:  # sandwich / post-norm: shares of the normalised sum
                head_out, bias_share = head_shares(head_out, W.b_O, W.post_attn_w, self.eps,
                                                   self.norm_offset)
                if replace is not None and ("attn", l) in replace:
                    head_out = replace[("attn", l)].to(head_out.dtype)
                    bias_share = None if bias_share is None else bias_share.detach()
                if stop_grad_layer == l:
                    head_out = head_out.detach()
                    bias_share = None if bias_share is None else bias_share.detach()
                resid = resid + head_out.sum(2)
                if bias_share is not None:
                    resid = resid + bias_share
            else:
                if replace is not None and ("attn", l) in replace:
                    head_out = replace[("attn", l)].to(head_out.dtype)
                if stop_grad_layer == l:
                    head_out = head_out.detach()
                resid = resid + head_out.sum(2)
                if W.b_O is not None:
                    resid = resid + W.b_O
            ss = self.sender_slice(l)
            if patch:
                delta[:, :, ss.start: ss.stop - 1] = head_out - abl_s[:, :, ss.start: ss.stop - 1]
            elif sparse:
                dh = head_out - abl_s[:, :, ss.start: ss.stop - 1]
                masks.store(dstore, slot, ss.start, dh)
                dcum = dcum + dh.sum(2)
            # MLP (a parallel block's MLP reads the block's input, not the attention output)
            nM = self.n_upstream(l, "mlp")
            xm = (resid_in if self.parallel else resid).unsqueeze(2)  # a view of its own: its gradient is the MLP input's only
            if patch:
                xm = xm - einsum(drop[:, :, :nM, rs.stop - 1], delta[:, :, :nM],
                                 "batch pos sender, batch pos sender d_model -> batch pos d_model").unsqueeze(2)
            elif sparse:
                xm = masks.receiver_inputs(resid_in if self.parallel else resid,
                                           dcum_in if self.parallel else dcum, dstore, slot,
                                           rs.stop - 1, rs.stop, nM)
            if grad_nodes:
                out["mlp_in"].append(xm)
            xm = xm[:, :, 0]
            hm = self._norm(xm, W.ln2_w, W.ln2_b)
            pre = hm @ W.W_in
            if W.b_in is not None:
                pre = pre + W.b_in
            if W.W_gate is not None:
                g = hm @ W.W_gate
                if W.b_gate is not None:
                    g = g + W.b_gate
                act = self.act(g) * pre
            else:
                act = self.act(pre)
            mlp_out = act @ W.W_out
            if W.post_mlp_w is not None:  # sandwich / post-norm: the MLP sender is the normed output
                if W.b_out is not None:
                    mlp_out = mlp_out + W.b_out
                mlp_out = self._norm(mlp_out, W.post_mlp_w, None)
            elif W.b_out is not None:
                resid = resid + W.b_out
            if replace is not None and ("mlp", l) in replace:
                mlp_out = replace[("mlp", l)].to(mlp_out.dtype)
            if stop_grad_layer == l:
                mlp_out = mlp_out.detach()
            resid = resid + mlp_out
            if patch:
                delta[:, :, ss.stop - 1] = mlp_out - abl_s[:, :, ss.stop - 1]
            elif sparse:
                dm = mlp_out - abl_s[:, :, ss.stop - 1]
                masks.store(dstore, slot, ss.stop - 1, dm[:, :, None])
                dcum = dcum + dm
            if record:
                assert rec_s is not None
                if record_heads:
                    rec_s[:, :, ss.start: ss.stop - 1] = head_out.detach()
                    rec_s[:, :, ss.stop - 1] = mlp_out.detach()
                else:
                    rec_s[:, :, 1 + l] = mlp_out.detach()
                for name, t in (("q", q), ("k", k), ("v", v), ("z", z)):
                    put(name, l, t)
                if record_pattern:
                    rec["pattern"].append(A)
        xf = resid.unsqueeze(2)
        if patch:
            xf = xf - einsum(drop[:, :, :, -1], delta,
                             "batch pos sender, batch pos sender d_model -> batch pos d_model").unsqueeze(2)
        elif sparse:
            R = len(self.receivers)
            xf = masks.receiver_inputs(resid, dcum, dstore, slot, R - 1, R, S)
        out["logits_in"] = xf
        if record:
            out["activations"] = Activations(
                senders=rec_s, q=rec_b["q"], k=rec_b["k"], v=rec_b["v"], z=rec_b["z"],
                pattern=(torch.stack(rec["pattern"], 1) if record_pattern
                         else x_embed.new_zeros(b, L, H, 0, 0)),
                attention_mask=mask)
        if not need_logits:  # a recording run (an ablation source): no [b p vocab] block
            out["logits"] = None
            return out
        xf = xf[:, :, 0]
        logits = self._norm(xf, self.lnf_w, self.lnf_b) @ self.W_U
        # in place on the fresh product (neither the bias add nor the division needs it for its
        # gradient): no second [b p vocab] block
        if self.b_U is not None:
            logits += self.b_U
        if self.logits_scaling is not None:  # Granite
            logits /= self.logits_scaling
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        out["logits"] = logits
        return out

    def attention_pattern(
        self, layer: int, q: Float[Tensor, "batch qpos head d_head"],
        k: Float[Tensor, "batch pos kv_head d_head"],
        attention_mask: Int[Tensor, "batch pos"] | Bool[Tensor, "batch pos"],
        q_offset: int = 0,
    ) -> Float[Tensor, "batch head qpos pos"]:
        """Attention pattern of layer ``layer`` of an unpatched run from its post-rotary ``q``
        and ``k`` (as recorded in :class:`Activations`): the same masking (causal, padding keys,
        sliding window) and softmax as :meth:`forward`, for one layer at a time (streamed
        attribution recomputes patterns instead of holding all layers'). ``q_offset``: ``q``
        holds the queries from that position on only (rows ``q_offset …`` of the pattern)."""
        W = self.layers[layer]
        b, p = k.shape[:2]
        G = k.shape[2]
        dev = q.device
        mask = attention_mask.to(dev).bool()
        causal = torch.ones(p, p, dtype=torch.bool, device=dev).tril()
        if W.window is not None:
            causal = causal & ~torch.ones(p, p, dtype=torch.bool, device=dev).tril(-W.window)
        allowed = causal[None] & mask[:, None, :]
        allowed = allowed | (torch.eye(p, dtype=torch.bool, device=dev)[None] & ~allowed.any(-1, keepdim=True))
        allowed = allowed[:, q_offset:]
        qg = rearrange(q, "b q (g r) e -> b q g r e", g=G)
        scores = rearrange(einsum(qg, k, _QK), "b g r q k -> b (g r) q k")  # a fresh tensor: in place below
        scores = self.score(scores, inplace=True).masked_fill_(~allowed[:, None], float("-inf"))
        return torch.softmax(scores, dim=-1)

    def __repr__(self) -> str:
        return (f"PatchableModel({self.model_name!r}, arch={self.arch}, layers={self.n_layers}, "
                f"heads={self.n_heads}, kv_heads={self.n_kv_heads}, senders={len(self.senders)}, "
                f"receivers={len(self.receivers)})")
