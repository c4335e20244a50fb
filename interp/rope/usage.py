"""Frequency usage (Barbero et al. 2025) and the exact decomposition of attention logits by chunk.

Notation: the rotated query of head h at position t is q_t (``hook_rot_q``), the rotated key of
its KV head at position s is k_s (``hook_rot_k``); chunk k holds the two dims rotated at
frequency θ_k (see :mod:`interp.spec`), ``q^(k)`` its 2-vector. Then

    score[h, t, s] = scale · q_t · k_s = Σ_k scale · q_t^(k) · k_s^(k)  +  scale · q_t^pass · k_s^pass

(``scale`` = 1/√d_head, or Gemma 3's ``query_pre_attn_scalar^−½``; "pass" = the non-rotated
dims when d_rot < d_head). Each term is one chunk's contribution; |q^(k)·k^(k)| ≤ ‖q^(k)‖‖k^(k)‖,
and rotation preserves the chunk norms, so the mean norms measure how much each frequency *can*
contribute. Barbero et al. ("Round and Round We Go! What makes Rotary Positional Encodings
useful?", ICLR 2025) found most norm in the lowest frequencies of Gemma 7B and Llama 3.1 8B, and
positional (diagonal / previous-token) heads built on the highest ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from einops import einsum, repeat
from jaxtyping import Bool, Float
from torch import Tensor

from interp._attnstats import Source, source_of
from interp.capture import ActivationStore, StreamBatch, stream
from interp.plots import SEQUENTIAL
from interp.results import Result, head_label
from interp.rope._common import (
    batch_of, exposes_rotated, name_of, pre_rotation_hooks, rope_model, scores_are_pattern, to_bphd, valid_tokens,
)
from interp.spec import ModelSpec, RopeSpec
from interp.types import Model

__all__ = ["FrequencyUsage", "LogitDecomposition", "frequency_usage", "logit_decomposition", "chunk_logits"]


def chunk_logits(
    q_rot: Float[Tensor, "batch qpos head d_head"],
    k_rot: Float[Tensor, "batch kpos kv_head d_head"],
    rope: RopeSpec,
    scale: float,
) -> Float[Tensor, "batch head component qpos kpos"]:
    """Contribution of each chunk (then the non-rotated dims, if any) to the attention logits.

    ``out[b, h, k, t, s] = scale · q_rot[b, t, h]^(k) · k_rot[b, s, h // g]^(k)`` with
    ``g = heads / kv_heads`` (GQA); the last component is the non-rotated dims when
    ``d_rot < d_head``. Summing over components gives ``scale · q_t · k_s`` exactly (before any
    soft-capping and masking).
    """
    g = q_rot.shape[2] // k_rot.shape[2]
    k = repeat(k_rot, "batch pos kv d -> batch pos (kv group) d", group=g) if g > 1 else k_rot
    qc, kc = rope.chunks(q_rot), rope.chunks(k)  # [b p h c 2]
    out = einsum(qc, kc, "batch query head chunk pair, batch key head chunk pair -> batch head chunk query key")
    if rope.n_pass:
        rest = einsum(q_rot[..., rope.rotary_dim:], k[..., rope.rotary_dim:],
                      "batch query head d, batch key head d -> batch head query key")
        out = torch.cat([out, rest[:, :, None]], dim=2)
    return out * scale


def _components(rope: RopeSpec) -> list[str]:
    return [f"chunk {k}" for k in range(rope.n_chunks)] + (["pass"] if rope.n_pass else [])


@dataclass
class LogitDecomposition(Result):
    """Attention logits split by rotary chunk, aggregated over real causal (query, key) pairs.

    ``mean_abs[l, h, c]`` = mean |contribution of component c| over every real query t and
    visible key s ≤ t (inside the sliding window on sliding layers) of every prompt;
    ``mean[l, h, c]`` the signed mean. Components are the chunks 0 … d_rot/2−1 (chunk 0 = highest
    frequency) then ``"pass"`` when d_rot < d_head. ``max_abs_error`` = max over all those
    entries of |Σ_c contribution (soft-capped if the model caps) − hook_attn_scores|: the
    decomposition is exact when it is ~1e-6. ``full`` (only with ``keep_full=True``): per prompt,
    ``[layer head component q k]`` trimmed to the prompt's length.
    """

    model: str
    prepend_bos: bool
    n_prompts: int
    n_pairs: int
    components: list[str]
    layer_types: list[str]
    mean_abs: Float[Tensor, "layer head component"]
    mean: Float[Tensor, "layer head component"]
    max_abs_error: float
    full: list[Tensor] | None = field(default=None, metadata={"json": False})

    def share(self) -> Float[Tensor, "layer head component"]:
        """``mean_abs`` normalised to sum to 1 over components."""
        return self.mean_abs / self.mean_abs.sum(-1, keepdim=True).clamp_min(1e-30)

    def plot(self) -> go.Figure:
        """Layer × component heatmap of the share of |logit| (mean over heads)."""
        z = self.share().mean(1)
        fig = go.Figure(go.Heatmap(z=z.numpy(), x=self.components, y=[f"L{l} ({t})" for l, t in
                                                                         enumerate(self.layer_types)],
                                   colorscale=SEQUENTIAL, colorbar=dict(title="share of |logit|")))
        fig.update_layout(title=f"{self.model}: attention-logit share by rotary chunk "
                                f"(chunk 0 = highest frequency)",
                          xaxis_title="component", yaxis_title="layer", yaxis_autorange="reversed")
        return fig

    def plot_head(self, layer: int, head: int) -> go.Figure:
        """Signed and absolute mean contribution of each component for one head."""
        fig = go.Figure()
        fig.add_bar(x=self.components, y=self.mean_abs[layer, head].numpy(), name="mean |contribution|")
        fig.add_bar(x=self.components, y=self.mean[layer, head].numpy(), name="mean contribution")
        fig.update_layout(title=f"{self.model} {head_label(layer, head)}: logit contribution by chunk",
                          xaxis_title="component (chunk 0 = highest frequency)", yaxis_title="logit",
                          barmode="group")
        return fig


@dataclass
class FrequencyUsage(Result):
    """Mean chunk norms of rotated queries and keys per layer and head (Barbero et al. 2025).

    ``q_norm[l, h, k]`` = mean over real tokens of ‖q^(k)‖ (query head h), ``k_norm[l, j, k]``
    the same for keys (KV head j under GQA); ``q_pass``/``k_pass`` the norm of the non-rotated
    dims (zeros when d_rot = d_head). ``frequencies``/``wavelengths``: θ_k (rad/token) and 2π/θ_k
    (tokens) at each layer (each layer's own base: Gemma 3 sliding vs global layers).
    ``rotations[l, k]`` = (context − 1)·θ_k/2π with ``context`` = the longest prompt;
    ``slow`` marks chunks completing less than one rotation within it (near-constant, "semantic"
    channels); ``slow_trained`` the same for the trained context ``max_position_embeddings``.
    """

    model: str
    prepend_bos: bool
    n_prompts: int
    n_tokens: int
    context: int
    trained_context: int | None
    group_size: int
    layer_types: list[str]
    bases: list[float]
    q_norm: Float[Tensor, "layer head chunk"]
    k_norm: Float[Tensor, "layer kv_head chunk"]
    q_pass: Float[Tensor, "layer head"]
    k_pass: Float[Tensor, "layer kv_head"]
    frequencies: Float[Tensor, "layer chunk"]
    wavelengths: Float[Tensor, "layer chunk"]
    rotations: Float[Tensor, "layer chunk"]
    slow: Bool[Tensor, "layer chunk"]
    slow_trained: Bool[Tensor, "layer chunk"]
    decomposition: LogitDecomposition | None = None
    source: dict[str, Any] | None = None  # an ActivationStore's provenance when read from one

    # ---- derived ------------------------------------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return int(self.q_norm.shape[-1])

    def q_share(self) -> Float[Tensor, "layer head chunk"]:
        """‖q^(k)‖ normalised to sum to 1 over chunks."""
        return self.q_norm / self.q_norm.sum(-1, keepdim=True).clamp_min(1e-30)

    def k_share(self) -> Float[Tensor, "layer kv_head chunk"]:
        return self.k_norm / self.k_norm.sum(-1, keepdim=True).clamp_min(1e-30)

    def bound(self) -> Float[Tensor, "layer head chunk"]:
        """mean‖q^(k)‖ · mean‖k^(k)‖ per query head (its KV head's keys): the per-chunk logit scale."""
        return self.q_norm * self.k_norm.repeat_interleave(self.group_size, dim=1)

    def _band(self, fraction: float, highest: bool) -> Tensor:
        n = self.n_chunks
        k = int(round(fraction * n))
        m = torch.zeros(n, dtype=torch.bool)
        if highest:
            m[:k] = True
        else:
            m[n - k:] = True
        return m

    def band_share(self, fraction: float = 0.25, *, highest: bool = True, which: str = "bound") -> Tensor:
        """Share of ``which`` (``"q"``, ``"k"`` or ``"bound"``) in the highest (or lowest) fraction of chunks."""
        v = {"q": self.q_norm, "k": self.k_norm, "bound": self.bound()}[which]
        m = self._band(fraction, highest)
        return v[..., m].sum(-1) / v.sum(-1).clamp_min(1e-30)

    def summary(self, fraction: float = 0.25) -> dict[str, Any]:
        """Model-wide shares of query/key norm in the lowest and highest fraction of chunks, per layer type."""
        out: dict[str, Any] = {}
        for t in dict.fromkeys(self.layer_types):
            ls = [i for i, x in enumerate(self.layer_types) if x == t]
            row = {}
            for which in ("q", "k"):
                v = (self.q_norm if which == "q" else self.k_norm)[ls]
                tot = v.sum()
                row[f"{which}_lowest_{fraction}"] = float(v[..., self._band(fraction, False)].sum() / tot)
                row[f"{which}_highest_{fraction}"] = float(v[..., self._band(fraction, True)].sum() / tot)
            row["argmax_chunk_q"] = int(self.q_norm[ls].sum((0, 1)).argmax())
            row["argmax_chunk_k"] = int(self.k_norm[ls].sum((0, 1)).argmax())
            row["n_slow_chunks"] = int(self.slow[ls[0]].sum())
            out[t] = row
        return out

    def top(self, n: int = 10, fraction: float = 0.25) -> list[tuple[str, float]]:
        """Heads with the largest high-frequency share of the q·k bound."""
        s = self.band_share(fraction, highest=True)
        idx = s.flatten().argsort(descending=True)[:n]
        H = s.shape[1]
        return [(head_label(int(i) // H, int(i) % H), float(s.flatten()[i])) for i in idx]

    # ---- plots --------------------------------------------------------------------------------
    def plot(self, which: str = "q") -> go.Figure:
        """Layer × chunk heatmap of the query (``"q"``) or key (``"k"``) norm share, mean over heads."""
        if which not in ("q", "k"):
            raise ValueError("which must be 'q' or 'k'")
        z = (self.q_share() if which == "q" else self.k_share()).mean(1)
        hover = [[f"θ={self.frequencies[l, k]:.3g} rad/tok, λ={self.wavelengths[l, k]:.4g} tok"
                  + (" (<1 turn in context)" if self.slow[l, k] else "") for k in range(self.n_chunks)]
                 for l in range(z.shape[0])]
        fig = go.Figure(go.Heatmap(z=z.numpy(), x=[str(k) for k in range(self.n_chunks)],
                                   y=[f"L{l} ({t.split('_')[0]})" for l, t in enumerate(self.layer_types)],
                                   text=hover, hovertemplate="%{y} chunk %{x}<br>%{text}<br>share=%{z:.3f}"
                                   "<extra></extra>", colorscale=SEQUENTIAL,
                                   colorbar=dict(title=f"‖{which}⁽ᵏ⁾‖ share")))
        fig.update_layout(title=f"{self.model}: {'query' if which == 'q' else 'key'} norm by rotary chunk "
                                "(chunk 0 = highest frequency)",
                          xaxis_title="chunk k (frequency decreasing →)", yaxis_title="layer",
                          yaxis_autorange="reversed")
        return fig

    def plot_profile(self, layer: int, head: int) -> go.Figure:
        """One head's query and (its KV head's) key norm per chunk against wavelength."""
        kv = head // self.group_size
        x = self.wavelengths[layer].numpy()
        fig = go.Figure()
        fig.add_scatter(x=x, y=self.q_norm[layer, head].numpy(), mode="lines+markers", name="‖q⁽ᵏ⁾‖")
        fig.add_scatter(x=x, y=self.k_norm[layer, kv].numpy(), mode="lines+markers", name=f"‖k⁽ᵏ⁾‖ (KV {kv})")
        fig.add_vline(x=self.context, line_dash="dash", annotation_text="context")
        fig.update_layout(title=f"{self.model} {head_label(layer, head)}: frequency profile "
                                f"(base {self.bases[layer]:.3g})",
                          xaxis_title="wavelength 2π/θ_k (tokens, log)", yaxis_title="mean chunk norm",
                          xaxis_type="log")
        return fig


class _Acc:
    """Streaming sums inside hooks."""

    def __init__(self, spec: Any, rope: RopeSpec, decompose: bool, keep_full: bool, exposed: bool = True,
                 pattern_scores: bool = False) -> None:
        L, H, KV, C = spec.n_layers, spec.n_heads, spec.n_kv_heads, rope.n_chunks
        self.spec, self.rope = spec, rope
        self.q = torch.zeros(L, H, C, dtype=torch.float64)
        self.k = torch.zeros(L, KV, C, dtype=torch.float64)
        self.qp = torch.zeros(L, H, dtype=torch.float64)
        self.kp = torch.zeros(L, KV, dtype=torch.float64)
        self.n_tok = 0
        self.decompose, self.keep_full = decompose, keep_full
        NC = C + (1 if rope.n_pass else 0)
        self.abs = torch.zeros(L, H, NC, dtype=torch.float64)
        self.sum = torch.zeros(L, H, NC, dtype=torch.float64)
        self.pairs = torch.zeros(L, dtype=torch.float64)
        self.err = 0.0
        self.full: list[list[Tensor]] = []
        self.windows = [rope.window(l) for l in range(spec.n_layers)]
        self.exposed = exposed
        self.pattern_scores = pattern_scores

    def hooks(self, sb: StreamBatch) -> list[tuple[str, Any]]:
        """The reducer for :func:`interp.capture.stream`."""
        toks, lengths = sb.tokens, sb.lengths
        rope, spec = self.rope, self.spec
        valid = valid_tokens(lengths, toks.shape[1], toks.device)
        vf = valid.to(torch.float32)[..., None, None]  # [b p 1 1]
        self.n_tok += int(valid.sum())
        stash: dict[int, Tensor] = {}
        acc = self
        T = toks.shape[1]
        pos = torch.arange(T, device=toks.device)
        causal = pos[None, :] <= pos[:, None]
        full_rows: list[list[Tensor]] = [[] for _ in lengths]

        qn, kn, transposed = pre_rotation_hooks(spec)

        def rotated(x: Tensor, l: int) -> Tensor:
            # bridges without hook_rot_q/k: rotate the pre-rotation q/k like HF (RopeSpec.apply;
            # on_scores checks the result against hook_attn_scores)
            return x if acc.exposed else rope.apply(to_bphd(spec, x, transposed), pos, l)

        def on_q(x: Tensor, hook: Any) -> None:
            l = int(hook.name.split(".")[1])
            x = rotated(x.detach(), l)
            n = rope.chunks(x.float()).norm(dim=-1)  # b p h c
            acc.q[l] += (n * vf).sum((0, 1)).double().cpu()
            if rope.n_pass:
                acc.qp[l] += (x[..., rope.rotary_dim:].float().norm(dim=-1) * vf[..., 0]).sum((0, 1)).double().cpu()
            if acc.decompose:
                stash[l] = x

        def on_k(x: Tensor, hook: Any) -> None:
            l = int(hook.name.split(".")[1])
            x = rotated(x.detach(), l)
            n = rope.chunks(x.float()).norm(dim=-1)
            acc.k[l] += (n * vf).sum((0, 1)).double().cpu()
            if rope.n_pass:
                acc.kp[l] += (x[..., rope.rotary_dim:].float().norm(dim=-1) * vf[..., 0]).sum((0, 1)).double().cpu()
            if acc.decompose:
                stash[-l - 1] = x

        def on_scores(s: Tensor, hook: Any) -> None:
            l = int(hook.name.split(".")[1])
            q, k = stash.pop(l), stash.pop(-l - 1)
            c = chunk_logits(q.float(), k.float(), rope, spec.scale(l))  # b h C t s
            ok = causal[None] & valid[:, :, None] & valid[:, None, :]
            if acc.windows[l] is not None:
                ok = ok & ((pos[:, None] - pos[None, :]) < acc.windows[l])[None]
            tot = c.sum(2)
            if spec.attn_softcap:
                tot = spec.attn_softcap * torch.tanh(tot / spec.attn_softcap)
            okh = ok[:, None]
            if acc.pattern_scores:  # the bridge's hook_attn_scores holds softmax probabilities
                tot = torch.softmax(tot.masked_fill(~okh, float("-inf")), dim=-1).nan_to_num(0.0)
            d = (tot - s.detach().float()).abs()
            acc.err = max(acc.err, float(d.masked_fill(~okh, 0).max()))
            okf = ok[:, None, None].to(c.dtype)
            acc.abs[l] += (c.abs() * okf).sum((0, 3, 4)).double().cpu()
            acc.sum[l] += (c * okf).sum((0, 3, 4)).double().cpu()
            acc.pairs[l] += float(ok.sum())
            if acc.keep_full:
                for b, n in enumerate(lengths):
                    full_rows[b].append(c[b, :, :, :n, :n].masked_fill(~ok[b, None, None, :n, :n], 0).cpu())
                if l == spec.n_layers - 1:
                    acc.full.extend(torch.stack(r) for r in full_rows)

        hooks: list[tuple[str, Any]] = []
        for l in range(spec.n_layers):
            if self.exposed:
                hooks += [(f"blocks.{l}.attn.hook_rot_q", on_q), (f"blocks.{l}.attn.hook_rot_k", on_k)]
            else:
                hooks += [(f"blocks.{l}.attn.{qn}", on_q), (f"blocks.{l}.attn.{kn}", on_k)]
            if self.decompose:
                hooks.append((f"blocks.{l}.attn.hook_attn_scores", on_scores))
        return hooks


def _store_spec(src: Source) -> tuple[ModelSpec, RopeSpec, bool]:
    """The spec a store recorded, and whether it holds the rotated q/k (``hook_rot_q``/``hook_rot_k``)
    or only the pre-rotation ones (``hook_q``/``hook_k``, rotated here as for bridges that fire no
    rotated hooks; same norms up to rounding)."""
    d = src.obj.meta.get("spec")
    if d is None:
        raise ValueError("This ActivationStore records no model spec (captured by an older version, or a model "
                         "family without an adapter): capture it again, or pass the model.")
    spec = ModelSpec.from_json(d)
    rope = spec.require_rope()
    L = spec.n_layers
    rot = [f"blocks.{l}.attn.hook_rot_{w}" for l in range(L) for w in "qk"]
    if all(h in src.hooks for h in rot):
        return spec, rope, True
    qn, kn, _ = pre_rotation_hooks(spec)
    pre = [f"blocks.{l}.attn.{n}" for l in range(L) for n in (qn, kn)]
    if not spec.qk_norm and all(h in src.hooks for h in pre):
        return spec, rope, False
    src.require(rot, analysis="frequency_usage")
    raise AssertionError("unreachable")  # pragma: no cover


def _run(model: Any, prompts: Any, *, prepend_bos: bool, batch_size: int, decompose: bool,
         keep_full: bool) -> tuple[Any, RopeSpec, Any, _Acc]:
    src = source_of(model)
    if src.from_store:
        if decompose:
            raise ValueError("The logit decomposition (decompose=True, logit_decomposition) is not computed from an "
                             "ActivationStore: pass the model.")
        spec, rope, exposed = _store_spec(src)
        batch = src.batch(prompts, prepend_bos=prepend_bos, min_len=2)
        acc = _Acc(spec, rope, decompose, keep_full, exposed, False)
        stream(model, None, acc.hooks, batch_size=batch_size)
        return spec, rope, batch, acc
    spec, rope = rope_model(model)
    batch = batch_of(model, prompts, prepend_bos)
    acc = _Acc(spec, rope, decompose, keep_full, exposes_rotated(model), scores_are_pattern(model))
    stream(model, batch, acc.hooks, batch_size=batch_size)
    return spec, rope, batch, acc


def _decomposition(model: Any, spec: Any, rope: RopeSpec, batch: Any, acc: _Acc) -> LogitDecomposition:
    pairs = acc.pairs.clamp_min(1)[:, None, None]
    return LogitDecomposition(
        model=name_of(model), prepend_bos=batch.prepend_bos, n_prompts=len(batch),
        n_pairs=int(acc.pairs[0]), components=_components(rope), layer_types=list(rope.layer_types),
        mean_abs=(acc.abs / pairs).float(), mean=(acc.sum / pairs).float(), max_abs_error=acc.err,
        full=acc.full if acc.keep_full else None,
    )


def frequency_usage(
    model: Model | ActivationStore,
    prompts: Any = None,
    *,
    prepend_bos: bool = True,
    batch_size: int = 8,
    decompose: bool = False,
) -> FrequencyUsage:
    """Mean ‖q^(k)‖ and ‖k^(k)‖ per rotary chunk, layer and head over ``prompts``.

    Norms are taken from ``hook_rot_q``/``hook_rot_k`` (rotation preserves chunk norms, so they
    equal the pre-rotation ones for the model's pairing) over every real token (BOS included
    when prepended; padding excluded). With ``decompose=True`` the same forward pass also
    computes :func:`logit_decomposition` (``result.decomposition``).

    ``model`` may be an :class:`~interp.capture.ActivationStore` (``prompts=None``) holding
    ``blocks.*.attn.hook_rot_q`` and ``blocks.*.attn.hook_rot_k`` (or, for a model without q/k
    norms, the pre-rotation ``hook_q``/``hook_k``, rotated here with the recorded
    :class:`~interp.spec.RopeSpec`): the same reducer runs on the stored q/k, and a store of the
    rotated hooks captured from the same prompts with the same ``batch_size`` and right padding gives
    bit-identical norms; ``result.source`` records the store. ``decompose=True`` needs the model.

    Raises:
        NoRotaryError: the model has no rotary embeddings (the message names its positional kind).
    """
    src = source_of(model)
    spec, rope, batch, acc = _run(model, prompts, prepend_bos=prepend_bos, batch_size=batch_size,
                                  decompose=decompose, keep_full=False)
    n = max(acc.n_tok, 1)
    context = max(batch.lengths)
    freqs = torch.stack([rope.frequencies(l) for l in range(spec.n_layers)])
    rot = (context - 1) * freqs.double() / (2 * math.pi)
    trained = rope.max_position_embeddings
    rot_tr = ((trained - 1) * freqs.double() / (2 * math.pi)) if trained else torch.full_like(rot, math.inf)
    return FrequencyUsage(
        model=src.name, prepend_bos=batch.prepend_bos, n_prompts=len(batch), n_tokens=acc.n_tok,
        context=context, trained_context=trained, group_size=spec.group_size,
        layer_types=list(rope.layer_types), bases=list(rope.bases),
        q_norm=(acc.q / n).float(), k_norm=(acc.k / n).float(), q_pass=(acc.qp / n).float(),
        k_pass=(acc.kp / n).float(), frequencies=freqs, wavelengths=2 * math.pi / freqs,
        rotations=rot.float(), slow=rot < 1, slow_trained=rot_tr < 1,
        decomposition=_decomposition(model, spec, rope, batch, acc) if decompose else None,
        source=src.provenance().get("source"),
    )


def logit_decomposition(
    model: Model,
    prompts: Any = None,
    *,
    prepend_bos: bool = True,
    batch_size: int = 8,
    keep_full: bool = False,
) -> LogitDecomposition:
    """Exact split of every head's attention logits into rotary-chunk contributions.

    score[h, t, s] = Σ_k scale·q_t^(k)·k_s^(k) (+ the non-rotated dims), computed from
    ``hook_rot_q``/``hook_rot_k`` inside the forward pass and checked against
    ``hook_attn_scores`` on every visible (query, key) pair (``result.max_abs_error``; soft-capped
    models are compared after ``cap·tanh(·/cap)``; where the bridge's ``hook_attn_scores`` carries
    the softmax pattern (TransformerLens' GPT-J) the softmax of the summed chunks is compared).
    Bridges that fire no ``hook_rot_q``/``hook_rot_k`` (fused-qkv NeoX/Phi-3, GPT-J) are rotated
    here from the pre-rotation q/k with ``RopeSpec.apply``. ``keep_full=True`` keeps the per-prompt
    ``[layer head component q k]`` tensors (memory: L·H·(d_rot/2)·T² floats per prompt).
    """
    spec, rope, batch, acc = _run(model, prompts, prepend_bos=prepend_bos, batch_size=batch_size,
                                  decompose=True, keep_full=keep_full)
    return _decomposition(model, spec, rope, batch, acc)
