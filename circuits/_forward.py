"""A patchable functional forward pass over the graph of senders and receivers.

:class:`PatchableModel` re-implements a TransformerBridge's forward pass from its HF weights so
that every *edge* of the computational graph of Haklay et al. (2025) can be ablated on its own
(see ``../shared/REFERENCES.md`` §1):

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

Supported families: Llama-style (RMSNorm, RoPE, GQA, gated MLP: SmolLM2, Llama, Mistral, Qwen2
and RoPE/NoPE toys), GPT-2 (LayerNorm, learned positions, biases) and Gemma 3 (``gemma3_text``:
sandwich norms, q/k norms, sliding-window and global layers with their own RoPE bases, MQA).
Anything else raises :class:`NotImplementedError`.

**Gemma 3 (graph definition): head senders are shares of the normalised block output.** Gemma
normalises the *sum* of the heads (``post_attention_layernorm``), so head h's sender output is
:math:`z_h = (1+g)\\odot o_h / \\mathrm{rms}(\\sum_{h'} o_{h'})` with :math:`o_h` its output
through its slice of ``o_proj`` and the RMS of the *same* run: :math:`\\sum_h z_h` is exactly
the block output in the clean, corrupt and every patched run, and ablating an edge from head h
replaces its share (not its pre-norm output). Receivers stay the residual inputs; the MLP sender
is the post-feed-forward-normed MLP output. Details in :mod:`circuits._gemma`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits._activations import Activations

__all__ = ["Activations", "PatchableModel", "sender_names", "receiver_names"]


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
# weights
# ----------------------------------------------------------------------------------------------
def _w(mod: Any) -> Tensor:
    return mod.weight.detach()


def _b(mod: Any) -> Tensor | None:
    b = getattr(mod, "bias", None)
    return None if b is None else b.detach()


@dataclass
class _Layer:
    ln1_w: Tensor
    ln1_b: Tensor | None
    W_Q: Tensor  # [H d e]
    W_K: Tensor  # [G d e]
    W_V: Tensor  # [G d e]
    b_Q: Tensor | None  # [H e]
    b_K: Tensor | None
    b_V: Tensor | None
    W_O: Tensor  # [H e d]
    b_O: Tensor | None  # [d]
    ln2_w: Tensor
    ln2_b: Tensor | None
    W_gate: Tensor | None  # [d m] (gated MLPs)
    b_gate: Tensor | None
    W_in: Tensor  # [d m]
    b_in: Tensor | None
    W_out: Tensor  # [m d]
    b_out: Tensor | None
    # Gemma 3 only (None elsewhere): q/k norms, sandwich norms, RoPE table and sliding window
    q_norm_w: Tensor | None = None  # [e]
    k_norm_w: Tensor | None = None
    post_attn_w: Tensor | None = None  # [d]
    post_mlp_w: Tensor | None = None
    rope_key: str | None = None  # HF layer type ("sliding_attention" / "full_attention")
    window: int | None = None  # sliding window (keys t' with t − t' < window)


class PatchableModel:
    """Functional forward pass of a TransformerBridge with edge-level patching.

    Exact to the bridge's logits (fp32, eager attention) for the supported families. Build
    once per model (it only references the weights) and reuse::

        pm = PatchableModel(bridge)
        logits = pm.run(tokens, mask)                       # plain forward
        acts = pm.activations(corrupt_tokens, corrupt_mask)  # ablation source
        logits = pm.run(tokens, mask, ablated=acts, keep=keep, keep_cross=keep_cross)

    Position ids are ``cumsum(attention_mask) − 1`` so left padding gives the same numbers as
    no padding.
    """

    def __init__(self, bridge: Any) -> None:
        hf = getattr(bridge, "original_model", bridge)
        cfg = hf.config
        self.bridge = bridge
        self.hf = hf
        self.model_type: str = getattr(cfg, "model_type", "?")
        self.model_name: str = str(getattr(getattr(bridge, "cfg", None), "model_name", None)
                                   or getattr(cfg, "_name_or_path", self.model_type))
        self.embed_scale: Tensor | None = None
        self.final_softcap: float | None = None
        if self.model_type in ("llama", "mistral", "qwen2", "smollm3"):
            self._init_llama(hf, cfg)
        elif self.model_type == "gpt2":
            self._init_gpt2(hf, cfg)
        elif self.model_type in ("gemma3_text", "gemma3"):
            from circuits._gemma import init_gemma

            init_gemma(self, hf, cfg)
        else:
            raise NotImplementedError(
                f"circuits.PatchableModel supports Llama-family (llama, mistral, qwen2), GPT-2 and "
                f"Gemma 3 (gemma3_text) models; got model_type={self.model_type!r}. Add a "
                f"re-implementation of its forward in circuits/_forward.py (see circuits/_gemma.py "
                f"for a family with non-additive head outputs).")
        self.senders = sender_names(self.n_layers, self.n_heads)
        self.receivers = receiver_names(self.n_layers, self.n_heads, self.n_kv_heads)
        self.sender_index = {s: i for i, s in enumerate(self.senders)}
        self.receiver_index = {r: i for i, r in enumerate(self.receivers)}
        self.valid = self._valid()

    # ---------------------------------------------------------------------------- init helpers
    def _init_llama(self, hf: Any, cfg: Any, core: Any = None, sandwich: bool = False) -> None:
        self.arch = "llama"
        core = hf.model if core is None else core
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_model = cfg.hidden_size
        self.d_head = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.eps = float(getattr(cfg, "rms_norm_eps", 1e-6))
        self.W_E = _w(core.embed_tokens)
        self.W_pos = None
        H, G, e, d = self.n_heads, self.n_kv_heads, self.d_head, self.d_model
        self.layers: list[_Layer] = []
        for blk in core.layers:
            at, mlp = blk.self_attn, blk.mlp
            if not sandwich and (hasattr(at, "q_norm") or hasattr(blk, "post_feedforward_layernorm")):
                raise NotImplementedError(f"{self.model_type}: q/k norms and sandwich norms are "
                                          f"only supported for Gemma 3")

            def heads(lin: Any, n: int) -> tuple[Tensor, Tensor | None]:
                w = _w(lin).view(n, e, d).transpose(1, 2).contiguous()  # [n d e]
                b = _b(lin)
                return w, None if b is None else b.view(n, e)

            W_Q, b_Q = heads(at.q_proj, H)
            W_K, b_K = heads(at.k_proj, G)
            W_V, b_V = heads(at.v_proj, G)
            W_O = _w(at.o_proj).view(d, H, e).permute(1, 2, 0).contiguous()  # [H e d]
            self.layers.append(_Layer(
                ln1_w=_w(blk.input_layernorm), ln1_b=None, W_Q=W_Q, W_K=W_K, W_V=W_V,
                b_Q=b_Q, b_K=b_K, b_V=b_V, W_O=W_O, b_O=_b(at.o_proj),
                ln2_w=_w(blk.post_attention_layernorm), ln2_b=None,
                W_gate=_w(mlp.gate_proj).T.contiguous(), b_gate=_b(mlp.gate_proj),
                W_in=_w(mlp.up_proj).T.contiguous(), b_in=_b(mlp.up_proj),
                W_out=_w(mlp.down_proj).T.contiguous(), b_out=_b(mlp.down_proj)))
        self.scale = float(getattr(core.layers[0].self_attn, "scaling", self.d_head ** -0.5))
        self.lnf_w, self.lnf_b = _w(core.norm), None
        self.W_U = _w(hf.lm_head).T  # [d vocab]
        self.b_U = _b(hf.lm_head)
        self.act = _act(getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", "silu"))
        self.rotary = core.rotary_emb
        self.use_rope = not bool(getattr(cfg, "nope", False))

    def _init_gpt2(self, hf: Any, cfg: Any) -> None:
        self.arch = "gpt2"
        core = hf.transformer
        self.n_layers = cfg.n_layer
        self.n_heads = cfg.n_head
        self.n_kv_heads = self.n_heads
        self.d_model = cfg.n_embd
        self.d_head = self.d_model // self.n_heads
        self.eps = float(cfg.layer_norm_epsilon)
        self.W_E = _w(core.wte)
        self.W_pos = _w(core.wpe)
        H, e, d = self.n_heads, self.d_head, self.d_model
        self.layers = []
        for blk in core.h:
            at, mlp = blk.attn, blk.mlp
            Wc, bc = _w(at.c_attn), _b(at.c_attn)  # Conv1D: [d, 3d]
            if Wc.shape[0] != d:  # some wrappers store nn.Linear layout
                Wc = Wc.T
            Wq, Wk, Wv = Wc.split(d, dim=1)
            bq, bk, bv = (None, None, None) if bc is None else bc.split(d)

            def hw(w: Tensor) -> Tensor:
                return w.reshape(d, H, e).permute(1, 0, 2).contiguous()

            def hb(b: Tensor | None) -> Tensor | None:
                return None if b is None else b.reshape(H, e)

            Wp = _w(at.c_proj)
            if Wp.shape[0] != d:
                Wp = Wp.T
            Wfc, Wfp = _w(mlp.c_fc), _w(mlp.c_proj)
            if Wfc.shape[0] != d:
                Wfc, Wfp = Wfc.T, Wfp.T
            self.layers.append(_Layer(
                ln1_w=_w(blk.ln_1), ln1_b=_b(blk.ln_1), W_Q=hw(Wq), W_K=hw(Wk), W_V=hw(Wv),
                b_Q=hb(bq), b_K=hb(bk), b_V=hb(bv), W_O=Wp.reshape(H, e, d).contiguous(),
                b_O=_b(at.c_proj), ln2_w=_w(blk.ln_2), ln2_b=_b(blk.ln_2), W_gate=None,
                b_gate=None, W_in=Wfc.contiguous(), b_in=_b(mlp.c_fc), W_out=Wfp.contiguous(),
                b_out=_b(mlp.c_proj)))
        self.scale = (1.0 / math.sqrt(self.d_head)) if getattr(cfg, "scale_attn_weights", True) else 1.0
        if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) or getattr(cfg, "reorder_and_upcast_attn", False):
            raise NotImplementedError("GPT-2 scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn")
        self.lnf_w, self.lnf_b = _w(core.ln_f), _b(core.ln_f)
        self.W_U = _w(hf.lm_head).T
        self.b_U = _b(hf.lm_head)
        self.act = _act(getattr(cfg, "activation_function", "gelu_new"))
        self.rotary = None
        self.use_rope = False

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
        return base if kind == "attn" else base + self.n_heads

    def receiver_slice(self, layer: int) -> slice:
        """Receivers of layer ``layer``: H q, G k, G v, then the MLP input."""
        per = self.n_heads + 2 * self.n_kv_heads + 1
        return slice(layer * per, (layer + 1) * per)

    def sender_slice(self, layer: int) -> slice:
        """Senders of layer ``layer``: its H heads, then its MLP."""
        s0 = 1 + layer * (self.n_heads + 1)
        return slice(s0, s0 + self.n_heads + 1)

    # ---------------------------------------------------------------------------- primitives
    def _norm(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        if self.arch == "gpt2":
            return F.layer_norm(x, (x.shape[-1],), w, b, self.eps)
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.arch == "gemma3":  # Gemma: (x̂ · (1 + w)) in float32, then cast
            return (y * (1.0 + w.float())).to(x.dtype)
        return w * y.to(x.dtype)

    def _norm_vjp(self, x: Tensor, g: Tensor, w: Tensor) -> Tensor:
        """Gradient w.r.t. the norm's input ``x`` ``[b p d]`` of ``Σ g·norm(x)`` for many
        cotangents ``g`` ``[b p n d]`` at once (closed form; the statistics of ``x`` are shared):
        RMSNorm ``y = w ⊙ x r``, ``r = (mean x² + ε)^-½``: ``r (u − x̂ ⟨u, x̂⟩/d)``, ``u = w ⊙ g``;
        LayerNorm adds ``− mean(u)``; Gemma uses ``1 + w``, in float32."""
        xf = x.float()[:, :, None]  # [b p 1 d]
        if self.arch == "gpt2":
            xc = xf - xf.mean(-1, keepdim=True)
            r = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + self.eps)
            xh = xc * r
            u = g.float() * w.float()
            out = r * (u - u.mean(-1, keepdim=True) - xh * (u * xh).mean(-1, keepdim=True))
        else:
            r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
            xh = xf * r
            u = g.float() * ((1.0 + w.float()) if self.arch == "gemma3" else w.float())
            out = r * (u - xh * (u * xh).mean(-1, keepdim=True))
        return out.to(g.dtype)

    def attn_receiver_grads(
        self, layer: int, resid: Float[Tensor, "batch pos d_model"],
        g_q: Float[Tensor, "batch pos head d_head"], g_k: Float[Tensor, "batch pos kv_head d_head"],
        g_v: Float[Tensor, "batch pos kv_head d_head"],
    ) -> Float[Tensor, "batch pos receiver d_model"]:
        """Gradients at the inputs of layer ``layer``'s attention receivers (q of every head,
        k then v of every KV head), each as if it normalised its own copy of the residual: from
        the gradients at the q/k/v projections (linear: ``g_x̂ = g_q W_Qᵀ``) through the norm's
        Jacobian (:meth:`_norm_vjp`). Equal to differentiating per-receiver copies, without
        running H + 2G copies of the norm forward and backward."""
        W = self.layers[layer]
        gx = torch.cat([torch.einsum("bphe,hde->bphd", g_q, W.W_Q),
                        torch.einsum("bpge,gde->bpgd", g_k, W.W_K),
                        torch.einsum("bpge,gde->bpgd", g_v, W.W_V)], dim=2)
        return self._norm_vjp(resid, gx, W.ln1_w)

    def _rope(self, x: Tensor, position_ids: Tensor, layer: int = 0) -> tuple[Tensor, Tensor]:
        key = self.layers[layer].rope_key
        cos, sin = (self.rotary(x, position_ids) if key is None
                    else self.rotary(x, position_ids, key))  # [b p e]
        return cos.to(x.dtype), sin.to(x.dtype)

    def rerotate(self, t: Float[Tensor, "batch layer pos n d_head"],
                 shift: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch layer pos n d_head"]:
        """Rotate post-RoPE q or k of every layer by ``shift`` more positions (each layer with its
        own RoPE table: Gemma's local and global layers differ). RoPE rotations compose."""
        if not (self.use_rope and self.rotary is not None):
            return t
        B, L, P, n, e = t.shape
        out = torch.empty_like(t)
        tables: dict[Any, tuple[Tensor, Tensor]] = {}
        for l in range(L):
            key = self.layers[l].rope_key
            if key not in tables:
                tables[key] = self._rope(t[:, l], shift, l)
            out[:, l] = self._rot(t[:, l], *tables[key])
        return out

    @staticmethod
    def _rot(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        # x [b p n e], cos/sin [b p e]; NeoX/Llama pairing (i, i + e/2)
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        rot = torch.cat((-x2, x1), dim=-1)
        return x * cos[:, :, None, :] + rot * sin[:, :, None, :]

    def embed(self, tokens: Int[Tensor, "batch pos"],
              position_ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The ``"embed"`` sender: token embeddings (+ learned positions for GPT-2)."""
        x = self.W_E[tokens]
        if self.embed_scale is not None:  # Gemma: × sqrt(d_model), cast to the model dtype
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
    ) -> Float[Tensor, "batch pos vocab"]:
        """Logits with edges ``keep == False`` fed from ``ablated`` (see module docstring).

        ``ablated`` must be in the same position coordinates as ``tokens`` (use
        :meth:`Activations.align` for counterfactuals of other lengths) with batch 1 or batch.
        """
        if (keep is not None or keep_cross is not None) and ablated is None:
            raise ValueError("keep/keep_cross need `ablated` activations (from .activations(), "
                             ".mean() or .zeros_like())")
        return self.forward(tokens, attention_mask, ablated=ablated, keep=keep,
                            keep_cross=keep_cross)["logits"]

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
    ) -> dict[str, Any]:
        """The forward pass. Returns a dict with ``"logits"`` and, on request:

        * ``record``: ``"activations"`` (:class:`Activations`);
        * ``grad_nodes`` (unpatched runs): ``"qkv"`` (list per layer of the q/k/v projections
          ``([b p H e], [b p G e], [b p G e])``, to differentiate at; turn their gradients into
          attention-receiver gradients with :meth:`attn_receiver_grads`) and ``"ln1_in"`` (the
          residual they normalise), ``"mlp_in"`` (list ``[b p 1 d]``), ``"logits_in"``
          ``[b p 1 d]`` and ``"z"`` (list ``[b p H e]``) — tensors in the autograd graph.

        ``embeds`` (``[b p d]``) replaces the ``"embed"`` sender's output (EAP-IG).
        ``record_pattern=False`` records no attention patterns (``pattern`` is then an empty
        ``[b L H 0 0]``; :meth:`attention_pattern` recomputes one layer's from q and k).
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
        H, G, L, d, e = self.n_heads, self.n_kv_heads, self.n_layers, self.d_model, self.d_head
        S = len(self.senders)
        rep = H // G
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
        rope_by: dict[str | None, tuple[Tensor, Tensor]] = {}
        if self.use_rope and self.rotary is not None:
            for l, W in enumerate(self.layers):
                if W.rope_key not in rope_by:
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

        resid = x_embed
        rec_s: list[Tensor] = [x_embed[:, :, None]]
        rec: dict[str, list[Tensor]] = {k: [] for k in ("q", "k", "v", "z", "pattern")}
        if patch and grad_nodes:
            raise ValueError("grad_nodes is for unpatched runs (attribution); drop keep=")
        out: dict[str, Any] = {"qkv": [], "ln1_in": [], "mlp_in": [], "z": []}
        for l, W in enumerate(self.layers):
            rs = self.receiver_slice(l)
            nA = self.n_upstream(l, "attn")
            if patch:  # one input per receiver (each normalised on its own)
                x = resid[:, :, None, :].expand(b, p, H + 2 * G, d)
                corr = torch.einsum("bpsr,bpsd->bprd", drop[:, :, :nA, rs.start: rs.stop - 1], delta[:, :, :nA])
                x = x - corr
                xn = self._norm(x, W.ln1_w, W.ln1_b)
                q = torch.einsum("bphd,hde->bphe", xn[:, :, :H], W.W_Q)
                k = torch.einsum("bphd,hde->bphe", xn[:, :, H: H + G], W.W_K)
                v = torch.einsum("bphd,hde->bphe", xn[:, :, H + G:], W.W_V)
            else:  # fast path: all receivers read the same residual
                xn1 = self._norm(resid, W.ln1_w, W.ln1_b)
                q = torch.einsum("bpd,hde->bphe", xn1, W.W_Q)
                k = torch.einsum("bpd,hde->bphe", xn1, W.W_K)
                v = torch.einsum("bpd,hde->bphe", xn1, W.W_V)
                if grad_nodes:  # receiver gradients come from these (attn_receiver_grads)
                    out["qkv"].append((q, k, v))
                    out["ln1_in"].append(resid.detach())
            if W.b_Q is not None:
                q = q + W.b_Q
            if W.b_K is not None:
                k = k + W.b_K
            if W.b_V is not None:
                v = v + W.b_V
            if W.q_norm_w is not None:  # Gemma: per-head RMSNorm of q and k before RoPE
                q = self._norm(q, W.q_norm_w, None)
                k = self._norm(k, W.k_norm_w, None)
            if W.rope_key in rope_by:
                cos, sin = rope_by[W.rope_key]
                q = self._rot(q, cos, sin)
                k = self._rot(k, cos, sin)
            kc = None if keep_cross is None else keep_cross[:, l].to(dev)  # [b H 3 q k]
            qg = q.view(b, p, G, rep, e)
            if kc is not None:
                qa = ablated.q[:, l].to(dev).expand_as(q).reshape(b, p, G, rep, e)
                ka = ablated.k[:, l].to(dev).expand_as(k)
                va = ablated.v[:, l].to(dev).expand_as(v)
                Mq, Mk, Mv = kc[:, :, 0], kc[:, :, 1], kc[:, :, 2]

                def sc(qq: Tensor, kk: Tensor) -> Tensor:
                    return torch.einsum("bqgre,bkge->bgrqk", qq, kk).reshape(b, H, p, p)

                scores = torch.where(Mq, torch.where(Mk, sc(qg, k), sc(qg, ka)),
                                     torch.where(Mk, sc(qa, k), sc(qa, ka)))
            else:
                scores = torch.einsum("bqgre,bkge->bgrqk", qg, k).reshape(b, H, p, p)
            scores = (scores * self.scale).masked_fill(~allowed_by[W.window], float("-inf"))
            A = torch.softmax(scores, dim=-1)
            Ag = A.view(b, G, rep, p, p)
            if kc is not None:
                Mv_f = Mv.to(A.dtype).view(b, G, rep, p, p)
                z = (torch.einsum("bgrqk,bkge->bqgre", Ag * Mv_f, v)
                     + torch.einsum("bgrqk,bkge->bqgre", Ag * (1 - Mv_f), va))
            else:
                z = torch.einsum("bgrqk,bkge->bqgre", Ag, v)
            z = z.reshape(b, p, H, e)
            if grad_nodes:
                out["z"].append(z)
            head_out = torch.einsum("bqhe,hed->bqhd", z, W.W_O)
            if W.post_attn_w is not None:  # Gemma: shares of the normalised sum (module doc)
                from circuits._gemma import head_shares

                head_out, bias_share = head_shares(head_out, W.b_O, W.post_attn_w, self.eps)
                resid = resid + head_out.sum(2)
                if bias_share is not None:
                    resid = resid + bias_share
            else:
                resid = resid + head_out.sum(2)
                if W.b_O is not None:
                    resid = resid + W.b_O
            ss = self.sender_slice(l)
            if patch:
                delta[:, :, ss.start: ss.stop - 1] = head_out - abl_s[:, :, ss.start: ss.stop - 1]
            # MLP
            nM = self.n_upstream(l, "mlp")
            xm = resid.unsqueeze(2)  # a view of its own: its gradient is the MLP input's only
            if patch:
                xm = xm - torch.einsum("bps,bpsd->bpd", drop[:, :, :nM, rs.stop - 1], delta[:, :, :nM]).unsqueeze(2)
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
            if W.post_mlp_w is not None:  # Gemma: the MLP sender is the post-norm output
                if W.b_out is not None:
                    mlp_out = mlp_out + W.b_out
                mlp_out = self._norm(mlp_out, W.post_mlp_w, None)
            elif W.b_out is not None:
                resid = resid + W.b_out
            resid = resid + mlp_out
            if patch:
                delta[:, :, ss.stop - 1] = mlp_out - abl_s[:, :, ss.stop - 1]
            if record:
                rec_s += [head_out, mlp_out[:, :, None]]
                rec["q"].append(q)
                rec["k"].append(k)
                rec["v"].append(v)
                rec["z"].append(z)
                if record_pattern:
                    rec["pattern"].append(A)
        xf = resid.unsqueeze(2)
        if patch:
            xf = xf - torch.einsum("bps,bpsd->bpd", drop[:, :, :, -1], delta).unsqueeze(2)
        out["logits_in"] = xf
        xf = xf[:, :, 0]
        logits = self._norm(xf, self.lnf_w, self.lnf_b) @ self.W_U
        if self.b_U is not None:
            logits = logits + self.b_U
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        out["logits"] = logits
        if record:
            out["activations"] = Activations(
                senders=torch.cat(rec_s, dim=2),
                q=torch.stack(rec["q"], 1), k=torch.stack(rec["k"], 1), v=torch.stack(rec["v"], 1),
                z=torch.stack(rec["z"], 1),
                pattern=(torch.stack(rec["pattern"], 1) if record_pattern
                         else x_embed.new_zeros(b, L, H, 0, 0)),
                attention_mask=mask)
        return out

    def attention_pattern(
        self, layer: int, q: Float[Tensor, "batch pos head d_head"],
        k: Float[Tensor, "batch pos kv_head d_head"],
        attention_mask: Int[Tensor, "batch pos"] | Bool[Tensor, "batch pos"],
    ) -> Float[Tensor, "batch head qpos kpos"]:
        """Attention pattern of layer ``layer`` of an unpatched run from its post-rotary ``q``
        and ``k`` (as recorded in :class:`Activations`): the same masking (causal, padding keys,
        sliding window) and softmax as :meth:`forward`, for one layer at a time (streamed
        attribution recomputes patterns instead of holding all layers')."""
        W = self.layers[layer]
        b, p, H, e = q.shape
        G = k.shape[2]
        dev = q.device
        mask = attention_mask.to(dev).bool()
        causal = torch.ones(p, p, dtype=torch.bool, device=dev).tril()
        if W.window is not None:
            causal = causal & ~torch.ones(p, p, dtype=torch.bool, device=dev).tril(-W.window)
        allowed = causal[None] & mask[:, None, :]
        allowed = allowed | (torch.eye(p, dtype=torch.bool, device=dev)[None] & ~allowed.any(-1, keepdim=True))
        scores = torch.einsum("bqgre,bkge->bgrqk", q.view(b, p, G, H // G, e), k).reshape(b, H, p, p)
        scores = (scores * self.scale).masked_fill(~allowed[:, None], float("-inf"))
        return torch.softmax(scores, dim=-1)

    def __repr__(self) -> str:
        return (f"PatchableModel({self.model_name!r}, arch={self.arch}, layers={self.n_layers}, "
                f"heads={self.n_heads}, kv_heads={self.n_kv_heads}, senders={len(self.senders)}, "
                f"receivers={len(self.receivers)})")


def _act(name: str) -> Any:
    from transformers.activations import ACT2FN

    if name not in ACT2FN:
        raise NotImplementedError(f"activation {name!r}")
    return ACT2FN[name]
