"""Attention sinks and extreme tokens: sink importance, massive activations, value drains,
residual peaks, active/dormant heads and the repeated-token check.

Three lines in a notebook::

    m = interp.load_model()
    r = interp.sinks.sink_analysis(m, interp.prompts.DEFAULT_PROMPTS)
    r.plot(); r.sink_rate(k=0); r.discover().top(5); r.massive.top(5)

Definitions (sources in REFERENCES.md):

* **Sink importance** (Gu et al., ICLR 2025): for head ``(l, h)`` and key ``k`` of a prompt of
  ``T`` tokens, ``α_k = (1/(T−k)) Σ_{t≥k} A[t, k]``. ``Sink_k^ε`` is the share of heads with
  ``α_k > ε`` (strict), averaged over prompts (ε = 0.3 by default; 0-indexed ``k``, so the paper's
  ``Sink_1`` is ``k = 0``).
* **Massive activations** (Sun et al. 2024): a residual entry ``x[t, d]`` of layer ``l``'s output
  with ``|x| > abs_threshold`` (100) and ``|x| > ratio · median|x|`` (1000), the median over all
  positions and dimensions of that prompt's hidden state at that layer.
* **Value-state drains** (Guo et al. 2024): ``‖v_j W_O^h‖`` per head and source position ``j``; under
  GQA query head ``h`` reads KV head ``h // (n_heads / n_kv_heads)``, pushed through its own
  ``W_O^h`` slice. Computed as ``sqrt(v_jᵀ (W_O^h W_O^hᵀ) v_j)``.
* **Residual-state peaks**: ``‖resid_post_l[t]‖`` per position; the peak ratio is the norm at the
  sink position over the largest norm elsewhere.
* **Active/dormant heads** (Guo et al. 2024): the loss change when a head is zero-ablated
  (``hook_z`` of the head set to 0) or its attention is moved to the sink (pattern rows set to the
  one-hot at the sink position), compared across prompt domains (prose vs code by default).
* **Repeated-token check** (Gu et al. 2025): ``Sink_0^ε`` on one token repeated ``T`` times; it
  vanishes in RoPE/NoPE models without a BOS token and survives with learned absolute positions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from einops import einsum, reduce, repeat
from jaxtyping import Float
from torch import Tensor

from interp._attnstats import (
    PatternAccumulator,
    PromptBatch,
    check_attention_model,
    check_eps,
    n_kv_heads,
    source_of,
)
from interp.provenance import model_name
from interp.capture import ActivationStore, StreamBatch, stream
from interp._active_dormant import ActiveDormantResult, active_dormant  # noqa: F401  (public here)
from interp.plots import layer_head_heatmap, lines
from interp.prompts import DOMAINS
from interp.results import Result, head_label
from interp.types import Model

__all__ = [
    "DOMAINS",
    "SinkResult",
    "SinkDiscovery",
    "MassiveActivationsResult",
    "RepeatedTokenResult",
    "ActiveDormantResult",
    "sink_analysis",
    "massive_activations",
    "repeated_token_sink",
    "active_dormant",
    "sink_rate",
]

_DELIM = re.compile(r"^\s*[.,;:!?\-—()\[\]{}\"']+\s*$")


def sink_rate(alpha: Float[Tensor, "prompt layer head key"], k: int = 0, eps: float = 0.3) -> float:
    """``Sink_k^ε``: share of heads with ``α_k > ε``, averaged over the prompts that have key ``k``."""
    check_eps(eps)
    if not 0 <= k < alpha.shape[-1]:
        raise ValueError(f"key position {k} outside 0..{alpha.shape[-1] - 1}.")
    a = alpha[..., k]  # [prompt layer head]
    ok = ~torch.isnan(a[:, 0, 0])
    if not bool(ok.any()):
        raise ValueError(f"No prompt is longer than {k} tokens.")
    share = (a[ok] > eps).float().mean(dim=(1, 2))
    return float(share.mean())


# ---------------------------------------------------------------------------- results


@dataclass
class MassiveActivationsResult(Result):
    """Per layer, the largest residual magnitudes with dimension and token, and the flagged ones.

    ``top_values[l, i]`` is the i-th largest ``|resid_post_l|`` over all prompts/positions/dims and
    ``top_dims``, ``top_positions``, ``top_prompts``, ``top_tokens`` where it sits;
    ``median[l]`` the mean over prompts of the per-prompt median magnitude; ``n_flagged[l]`` how
    many entries pass both rules; ``flagged_dims[l]`` their dimensions with counts.
    """

    model: str
    prepend_bos: bool
    abs_threshold: float
    ratio: float
    top_values: Float[Tensor, "layer k"]
    top_ratio: Float[Tensor, "layer k"]
    top_dims: list[list[int]]
    top_positions: list[list[int]]
    top_prompts: list[list[int]]
    top_tokens: list[list[str]]
    median: Float[Tensor, " layer"]
    n_flagged: list[int]
    flagged_dims: list[dict[int, int]]
    flagged_tokens: list[dict[str, int]]

    def top(self, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` largest activations over all layers (layer, dim, position, token, value, ratio)."""
        rows = []
        for l in range(self.top_values.shape[0]):
            for i in range(self.top_values.shape[1]):
                rows.append(dict(layer=l, dim=self.top_dims[l][i], position=self.top_positions[l][i],
                                 prompt=self.top_prompts[l][i], token=self.top_tokens[l][i],
                                 value=float(self.top_values[l, i]), ratio_to_median=float(self.top_ratio[l, i]),
                                 massive=bool(abs(float(self.top_values[l, i])) > self.abs_threshold
                                              and float(self.top_ratio[l, i]) > self.ratio)))
        rows.sort(key=lambda r: -abs(r["value"]))
        return rows[:n]

    def to_frame(self) -> Any:
        """One row per recorded activation (layer, rank, dim, position, prompt, token, value,
        ratio_to_median, massive)."""
        from interp.results import require_pandas

        rows = self.top(self.top_values.numel())
        df = require_pandas().DataFrame(rows)
        df["model"], df["prepend_bos"] = self.model, self.prepend_bos
        return df

    def massive_layers(self) -> list[int]:
        return [l for l, n in enumerate(self.n_flagged) if n > 0]

    def plot(self) -> go.Figure:
        """Top-1/2/3 magnitude and the median per layer (log scale), massive ones annotated."""
        L = self.top_values.shape[0]
        series = {f"top {i + 1}": [abs(float(v)) for v in self.top_values[:, i]] for i in range(min(3, self.top_values.shape[1]))}
        series["median"] = [float(v) for v in self.median]
        fig = lines([float(i) for i in range(L)], series, title=f"Largest residual magnitudes per layer — {self.model}",
                    xaxis_title="layer", yaxis_title="|activation|")
        fig.update_yaxes(type="log")
        for l in range(L):
            if self.n_flagged[l]:
                fig.add_annotation(x=l, y=math.log10(max(abs(float(self.top_values[l, 0])), 1e-9)),
                                   text=f"d{self.top_dims[l][0]} '{self.top_tokens[l][0]}'", showarrow=False,
                                   yshift=10, font=dict(size=9))
        return fig


@dataclass
class SinkDiscovery(Result):
    """Which positions and tokens act as sinks: share of heads with ``α_k > ε`` per occurrence.

    ``categories``: per category (``position 0``, ``first token after BOS``, ``first delimiter``,
    ``newline``, ``other``) the number of occurrences and mean/max share of heads;
    ``tokens``: per token string, same statistics, sorted by mean share.
    """

    eps: float
    min_queries: int
    prepend_bos: bool
    categories: dict[str, dict[str, Any]]
    tokens: list[dict[str, Any]]
    positions: list[dict[str, Any]]

    def top(self, n: int = 10) -> list[dict[str, Any]]:
        return self.tokens[:n]

    def to_frame(self) -> Any:
        """One row per token string: ``token``, ``count``, ``mean_share``, ``max_share`` (sorted by
        mean share of heads with α > ε); the categories are in ``df.attrs["categories"]``."""
        from interp.results import require_pandas

        df = require_pandas().DataFrame(self.tokens, columns=["token", "count", "mean_share", "max_share"])
        df["prepend_bos"] = self.prepend_bos
        df.attrs["categories"] = self.categories
        return df


@dataclass
class SinkResult(Result):
    """Sink importance of every key for every head, plus drains, peaks and massive activations.

    ``alpha[b, l, h, k]``: α_k of prompt ``b`` (NaN for ``k ≥ T_b``); ``alpha_mean[l, h, k]``: mean
    over the prompts having key ``k``. ``value_norm[l, h, k]``: mean ``‖v_k W_O^h‖``;
    ``resid_norm[l, k]``: mean ``‖resid_post_l[k]‖``; ``drain_ratio[l, h]``: value norm at
    ``sink_position`` over the mean value norm at the other positions (< 1 = drain);
    ``resid_peak_ratio[l]``: per-prompt ‖resid‖ at the sink over the largest norm elsewhere, averaged.
    """

    model: str
    prepend_bos: bool
    eps: float
    sink_position: int
    n_kv_heads: int
    alpha: Float[Tensor, "prompt layer head key"]
    alpha_mean: Float[Tensor, "layer head key"]
    str_tokens: list[list[str]]
    value_norm: Float[Tensor, "layer head key"] | None = None
    drain_ratio: Float[Tensor, "layer head"] | None = None
    resid_norm: Float[Tensor, "layer key"] | None = None
    resid_peak_ratio: Float[Tensor, " layer"] | None = None
    massive: MassiveActivationsResult | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """All fields (the per-prompt ``alpha`` too, NaN past each prompt's end written as
        ``null``, so :meth:`from_json` rebuilds a result whose every method works), plus
        ``Sink_k^ε`` for every ``k`` and the sink discovery table."""
        out = super().to_json()
        from interp.results import to_jsonable

        out["sink_rate"] = to_jsonable(self.sink_curve())
        out["discovery"] = self.discover().to_json()
        return out

    def sink_rate(self, k: int = 0, eps: float | None = None) -> float:
        """``Sink_k^ε`` (share of heads with ``α_k > ε``, mean over prompts)."""
        return sink_rate(self.alpha, k, self.eps if eps is None else eps)

    def sink_curve(self, eps: float | None = None) -> list[float]:
        """``Sink_k^ε`` for every key position ``k`` (NaN where no prompt has ``k``)."""
        out = []
        for k in range(self.alpha.shape[-1]):
            try:
                out.append(self.sink_rate(k, eps))
            except ValueError:
                out.append(float("nan"))
        return out

    def head_sink_share(self, k: int = 0, eps: float | None = None) -> Float[Tensor, "layer head"]:
        """Per head, the share of prompts where ``α_k > ε``."""
        e = self.eps if eps is None else eps
        check_eps(e)
        a = self.alpha[..., k]
        ok = ~torch.isnan(a[:, 0, 0])
        return (a[ok] > e).float().mean(0)

    def top(self, n: int = 10, k: int | None = None) -> list[tuple[str, float]]:
        """Heads ranked by mean ``α_k`` (``k`` = ``sink_position`` by default)."""
        kk = self.sink_position if k is None else k
        s = torch.nan_to_num(self.alpha_mean[:, :, kk], nan=-1.0)
        vals, idx = s.flatten().topk(min(n, s.numel()))
        H = s.shape[1]
        return [(head_label(int(i) // H, int(i) % H), float(v)) for v, i in zip(vals, idx)]

    def to_frame(self) -> Any:
        """One row per (layer, head, key): mean ``alpha`` (α_k over the prompts having key k), and
        ``value_norm`` when computed; ``head_label`` ``L{l}H{h}``."""
        from interp.results import tensor_frame

        df = tensor_frame(self.alpha_mean, ["layer", "head", "key"], value="alpha", model=self.model,
                          prepend_bos=self.prepend_bos)
        if self.value_norm is not None:
            df["value_norm"] = self.value_norm.detach().float().reshape(-1).numpy()
        return df

    def discover(self, eps: float | None = None, *, min_queries: int = 4) -> SinkDiscovery:
        """Which positions/tokens are sinks. Keys with fewer than ``min_queries`` queries after
        them (``T − k < min_queries``) are skipped: their α is dominated by self-attention."""
        e = self.eps if eps is None else eps
        check_eps(e)
        share = (self.alpha > e).float().mean(dim=(1, 2))  # [prompt key]
        cats: dict[str, list[float]] = {c: [] for c in ("position 0", "first token after BOS", "first delimiter", "newline", "other")}
        toks: dict[str, list[float]] = {}
        positions: list[dict[str, Any]] = []
        for b, st in enumerate(self.str_tokens):
            T = len(st)
            first_delim = next((k for k in range(1, T) if _DELIM.match(st[k]) and "\\n" not in st[k]), None)
            for k in range(T):
                if T - k < min_queries:
                    continue
                s = float(share[b, k])
                t = st[k]
                if k == 0:
                    cat = "position 0"
                elif k == 1 and self.prepend_bos:
                    cat = "first token after BOS"
                elif k == first_delim:
                    cat = "first delimiter"
                elif "\\n" in t:
                    cat = "newline"
                else:
                    cat = "other"
                cats[cat].append(s)
                toks.setdefault(t, []).append(s)
                positions.append(dict(prompt=b, position=k, token=t, category=cat, share=s))
        stat = lambda v: dict(count=len(v), mean_share=float(sum(v) / len(v)) if v else float("nan"),
                              max_share=max(v) if v else float("nan"))
        tok_rows = [dict(token=t, **stat(v)) for t, v in toks.items()]
        tok_rows.sort(key=lambda r: -r["mean_share"])
        positions.sort(key=lambda r: -r["share"])
        return SinkDiscovery(eps=e, min_queries=min_queries, prepend_bos=self.prepend_bos,
                             categories={c: stat(v) for c, v in cats.items()}, tokens=tok_rows,
                             positions=positions[:50])

    # ---------------------------------------------------------------- plots
    def plot(self, k: int | None = None) -> go.Figure:
        """Layer × head heatmap of mean ``α_k`` (``k`` = sink position by default)."""
        kk = self.sink_position if k is None else k
        share = self.head_sink_share(kk)
        hover = [[f"share of prompts α>{self.eps}: {float(share[l, h]):.2f}" for h in range(share.shape[1])]
                 for l in range(share.shape[0])]
        return layer_head_heatmap(
            self.alpha_mean[:, :, kk], title=f"Sink importance α_{kk} — {self.model}, "
            f"Sink_{kk}^{self.eps}={self.sink_rate(kk):.3f}, BOS={'yes' if self.prepend_bos else 'no'}",
            colorbar_title=f"α_{kk}", diverging=False, zmin=0.0, zmax=1.0, hover_extra=hover)

    def plot_sink_curve(self, eps: float | None = None) -> go.Figure:
        c = self.sink_curve(eps)
        return lines([float(i) for i in range(len(c))], {f"Sink_k^{self.eps if eps is None else eps}": c},
                     title=f"Share of sink heads per key position — {self.model}",
                     xaxis_title="key position k", yaxis_title="Sink_k^ε")

    def plot_drains(self) -> go.Figure:
        if self.drain_ratio is None:
            raise ValueError("Value drains were not computed (drains=False).")
        return layer_head_heatmap(
            self.drain_ratio, title=f"Value-state drain: ‖v W_O‖ at position {self.sink_position} / mean elsewhere — {self.model}",
            colorbar_title="ratio", diverging=False)

    def plot_resid_peaks(self) -> go.Figure:
        if self.resid_norm is None:
            raise ValueError("Residual norms were not computed (peaks=False).")
        L, T = self.resid_norm.shape
        fig = go.Figure(go.Heatmap(z=self.resid_norm.numpy(), x=list(range(T)), y=[f"L{l}" for l in range(L)],
                                   colorscale="Viridis", colorbar=dict(title="‖resid‖"),
                                   hovertemplate="layer %{y}<br>position %{x}<br>‖resid‖=%{z:.1f}<extra></extra>"))
        fig.update_layout(title=f"Residual-state norms per position — {self.model}", xaxis_title="position",
                          yaxis_title="layer", yaxis_autorange="reversed")
        return fig


def sink_analysis(
    model: Model | ActivationStore,
    prompts: Any = None,
    *,
    eps: float = 0.3,
    prepend_bos: bool = True,
    sink_position: int = 0,
    batch_size: int = 8,
    drains: bool | None = None,
    peaks: bool = True,
    massive: bool = True,
    massive_threshold: float = 100.0,
    massive_ratio: float = 1000.0,
    top_k: int = 5,
) -> SinkResult:
    """α_k for every head and key, value drains, residual peaks and massive activations, one pass.

    Args:
        model: a live model (TransformerBridge), or an :class:`~interp.capture.ActivationStore`
            holding ``blocks.*.attn.hook_pattern`` (and ``blocks.*.hook_resid_post`` for
            ``peaks``/``massive``) of every layer, with ``prompts=None``: the same reducers run on
            the stored activations (:func:`interp.capture.stream`), and a store captured from the
            same prompts with the same ``batch_size`` and right padding gives bit-identical numbers.
            ``params["source"]`` records the store (:meth:`ActivationStore.provenance`).
        prompts: strings, a right-padded ``TokenBatch``, or ``None`` (``interp.prompts.DEFAULT_PROMPTS``).
        drains: value drains ``‖v_j W_O^h‖`` (need ``hook_v`` and the weights ``W_O``, so a live
            model). ``None`` (default): on for a model, off for a store (a store holds no weights;
            ``drains=True`` with a store raises a ValueError).
        eps: sink threshold ε in [0, 1) (strict ``α > ε``).
        sink_position: the position used for drain and peak ratios (0 = BOS/first token).
        massive_threshold, massive_ratio: Sun et al.'s rules ``|x| > 100`` and ``|x| > 1000·median``.
        top_k: largest activations kept per layer.

    Memory: ``alpha`` holds ``prompts × layers × heads × max_len`` floats.
    """
    return _sink_pass(model, prompts, eps=eps, prepend_bos=prepend_bos, sink_position=sink_position,
                      batch_size=batch_size, drains=drains, peaks=peaks, massive=massive,
                      massive_threshold=massive_threshold, massive_ratio=massive_ratio, top_k=top_k)[0]


def _sink_pass(model: Any, prompts: Any, *, eps: float, prepend_bos: bool, sink_position: int,
               batch_size: int, drains: bool | None, peaks: bool, massive: bool, massive_threshold: float,
               massive_ratio: float, top_k: int, min_len: int = 0, analysis: str = "sink_analysis",
               ) -> tuple[SinkResult, PatternAccumulator, PromptBatch]:
    """One streaming pass; also returns the pattern accumulator (head scores) and the batch."""
    src = source_of(model)
    if not src.from_store:
        check_attention_model(model)
    if drains is None:
        drains = not src.from_store
    elif drains:
        src.live_only("Value drains (drains=True: ‖v W_O‖ needs the model's W_O weights)")
    L, H = src.n_layers, src.n_heads
    if src.from_store:
        src.require([f"blocks.{l}.attn.hook_pattern" for l in range(L)], analysis=analysis)
        if peaks or massive:
            src.require([f"blocks.{l}.hook_resid_post" for l in range(L)], analysis=f"{analysis} (peaks/massive)",
                        hint="pass peaks=False, massive=False")
    check_eps(eps)
    if massive_threshold < 0 or massive_ratio < 1:
        raise ValueError(f"massive_threshold must be >= 0 and massive_ratio >= 1, got {massive_threshold}, {massive_ratio}.")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    batch = src.batch(prompts, prepend_bos=prepend_bos, min_len=max(min_len, sink_position + 2))
    N, Tm = len(batch), max(batch.lengths)
    acc = PatternAccumulator(N, L, H, Tm, keep_alpha=True)
    vn = _ValueNorms(model, N, Tm) if drains else None
    rn = _ResidStats(N, L, Tm, batch, top_k, massive_threshold, massive_ratio) if (peaks or massive) else None

    def make(sb: StreamBatch):
        hooks = acc.hooks(sb)
        if vn is not None:
            hooks += vn.hooks(sb)
        if rn is not None:
            hooks += rn.hooks(sb)
        return hooks

    stream(model, None if src.from_store else batch, make, batch_size=batch_size)
    alpha = acc.alpha
    assert alpha is not None
    res = SinkResult(
        model=src.name, prepend_bos=batch.prepend_bos, eps=eps, sink_position=sink_position,
        n_kv_heads=src.n_kv_heads, alpha=alpha, alpha_mean=torch.nanmean(alpha, dim=0),
        str_tokens=batch.str_tokens,
        params=dict(batch_size=batch_size, lengths=list(batch.lengths), massive_threshold=massive_threshold,
                    massive_ratio=massive_ratio, **src.provenance()),
    )
    if vn is not None:
        res.value_norm = vn.mean()
        res.drain_ratio = _ratio_elsewhere(res.value_norm, sink_position)
    if rn is not None:
        if peaks:
            res.resid_norm = rn.mean_norm()
            res.resid_peak_ratio = rn.peak_ratio(sink_position)
        if massive:
            res.massive = rn.massive_result(src.name, batch.prepend_bos)
    return res, acc, batch


def _ratio_elsewhere(v: Float[Tensor, "layer head key"], k: int) -> Float[Tensor, "layer head"]:
    others = torch.cat([v[..., :k], v[..., k + 1:]], dim=-1)
    return v[..., k] / torch.nanmean(others, dim=-1).clamp(min=1e-12)


class _ValueNorms:
    """Streams ``‖v_j W_O^h‖`` for every layer, query head and source position (GQA aware)."""

    def __init__(self, model: Any, n: int, Tm: int) -> None:
        W_O = model.W_O.detach().float()  # [layer head d_head d_model]
        self.gram = einsum(W_O, W_O, "layer head d_head d_model, layer head e_head d_model -> layer head d_head e_head")
        self.L, self.H = W_O.shape[0], W_O.shape[1]
        self.group = self.H // n_kv_heads(model)
        self.sum = torch.zeros(self.L, self.H, Tm, dtype=torch.float64)
        self.count = torch.zeros(Tm, dtype=torch.float64)

    def hooks(self, sb: StreamBatch):
        lengths = sb.lengths
        width = max(lengths)
        dev_lens = torch.tensor(lengths)
        valid = (torch.arange(width)[None, :] < dev_lens[:, None])  # [b, t]
        self.count[:width] += valid.sum(0).double()

        def hook(v: Tensor, hook: Any) -> None:
            l = int(hook.name.split(".")[1])
            # query head h reads KV head h // group
            vq = repeat(v.detach().float(), "batch pos kv d_head -> batch pos (kv group) d_head", group=self.group)
            g = self.gram[l].to(vq.device)
            sq = (einsum(vq, g, "batch pos head d_head, head d_head e_head -> batch pos head e_head") * vq
                  ).sum(-1).clamp(min=0).sqrt()
            sq = sq * valid.to(sq.device)[:, :, None]
            self.sum[l, :, :width] += reduce(sq, "batch pos head -> head pos", "sum").double().cpu()

        return [(f"blocks.{l}.attn.hook_v", hook) for l in range(self.L)]

    def mean(self) -> Float[Tensor, "layer head key"]:
        out = (self.sum / self.count.clamp(min=1)).float()
        out[:, :, self.count == 0] = float("nan")
        return out


class _ResidStats:
    """Streams residual norms per position and the largest residual entries per layer."""

    def __init__(self, n: int, L: int, Tm: int, batch: PromptBatch, top_k: int, thr: float, ratio: float) -> None:
        self.L, self.top_k, self.thr, self.ratio = L, top_k, thr, ratio
        self.batch = batch
        self.norm_sum = torch.zeros(L, Tm, dtype=torch.float64)
        self.count = torch.zeros(Tm, dtype=torch.float64)
        self.norms: list[list[Tensor]] = [[torch.empty(0)] * n for _ in range(L)]
        self.cands: list[list[tuple[float, float, int, int, int]]] = [[] for _ in range(L)]
        self.medians = torch.zeros(L, n)
        self.n_flagged = [0] * L
        self.flag_dims: list[dict[int, int]] = [{} for _ in range(L)]
        self.flag_toks: list[dict[str, int]] = [{} for _ in range(L)]

    def hooks(self, sb: StreamBatch):
        offset, lengths = sb.offset, sb.lengths
        width = max(lengths)
        valid = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
        self.count[:width] += valid.sum(0).double()

        def hook(x: Tensor, hook: Any) -> None:
            l = int(hook.name.split(".")[1])
            x = x.detach().float().cpu()
            nrm = x.norm(dim=-1) * valid  # [b t]
            self.norm_sum[l, :width] += nrm.sum(0).double()
            for i, T in enumerate(lengths):
                b = offset + i
                self.norms[l][b] = nrm[i, :T].clone()
                a = x[i, :T].abs()
                med = float(a.median())
                self.medians[l, b] = med
                flat = a.flatten()
                vals, idx = flat.topk(min(self.top_k, flat.numel()))
                d = x.shape[-1]
                for v, j in zip(vals.tolist(), idx.tolist()):
                    t, dim = divmod(j, d)
                    self.cands[l].append((float(x[i, t, dim]), v / max(med, 1e-12), b, t, dim))
                flagged = (a > self.thr) & (a > self.ratio * med)
                if bool(flagged.any()):
                    ts, ds = flagged.nonzero(as_tuple=True)
                    self.n_flagged[l] += int(ts.numel())
                    for t, dim in zip(ts.tolist(), ds.tolist()):
                        self.flag_dims[l][dim] = self.flag_dims[l].get(dim, 0) + 1
                        tok = self.batch.str_tokens[b][t]
                        self.flag_toks[l][tok] = self.flag_toks[l].get(tok, 0) + 1
            self.cands[l] = sorted(self.cands[l], key=lambda c: -abs(c[0]))[: self.top_k]

        return [(f"blocks.{l}.hook_resid_post", hook) for l in range(self.L)]

    def mean_norm(self) -> Float[Tensor, "layer key"]:
        return (self.norm_sum / self.count.clamp(min=1)).float()

    def peak_ratio(self, k: int) -> Float[Tensor, " layer"]:
        out = torch.zeros(self.L)
        for l in range(self.L):
            r = [float(n[k] / torch.cat([n[:k], n[k + 1:]]).max().clamp(min=1e-12)) for n in self.norms[l]]
            out[l] = sum(r) / len(r)
        return out

    def massive_result(self, name: str, prepend_bos: bool) -> MassiveActivationsResult:
        K = min(len(c) for c in self.cands)
        return MassiveActivationsResult(
            model=name, prepend_bos=prepend_bos, abs_threshold=self.thr, ratio=self.ratio,
            top_values=torch.tensor([[c[0] for c in cs[:K]] for cs in self.cands]),
            top_ratio=torch.tensor([[c[1] for c in cs[:K]] for cs in self.cands]),
            top_dims=[[c[4] for c in cs[:K]] for cs in self.cands],
            top_positions=[[c[3] for c in cs[:K]] for cs in self.cands],
            top_prompts=[[c[2] for c in cs[:K]] for cs in self.cands],
            top_tokens=[[self.batch.str_tokens[c[2]][c[3]] for c in cs[:K]] for cs in self.cands],
            median=self.medians.mean(1), n_flagged=list(self.n_flagged),
            flagged_dims=self.flag_dims, flagged_tokens=self.flag_toks,
        )


def massive_activations(
    model: Model | ActivationStore, prompts: Any = None, *, threshold: float = 100.0, ratio: float = 1000.0,
    prepend_bos: bool = True, top_k: int = 5, batch_size: int = 8,
) -> MassiveActivationsResult:
    """Sun et al. (2024) massive activations of every layer's residual output (see module doc).
    ``model`` may be an :class:`~interp.capture.ActivationStore` holding ``blocks.*.attn.hook_pattern``
    and ``blocks.*.hook_resid_post`` (see :func:`sink_analysis`)."""
    r = sink_analysis(model, prompts, prepend_bos=prepend_bos, batch_size=batch_size, drains=False,
                      peaks=False, massive=True, massive_threshold=threshold, massive_ratio=ratio, top_k=top_k)
    assert r.massive is not None
    return r.massive


# ---------------------------------------------------------------------- repeated token


@dataclass
class RepeatedTokenResult(Result):
    """Sink on one token repeated ``T`` times: ``alpha[l, h, k]``, ``Sink_0^ε`` and per-head α₀."""

    model: str
    token: str
    token_id: int
    length: int
    prepend_bos: bool
    eps: float
    sink_rate: float
    alpha: Float[Tensor, "layer head key"]
    reference_sink_rate: float | None = None  # Sink_0^ε on natural text with the same BOS policy

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        s = self.alpha[:, :, 0]
        vals, idx = s.flatten().topk(min(n, s.numel()))
        return [(head_label(int(i) // s.shape[1], int(i) % s.shape[1]), float(v)) for v, i in zip(vals, idx)]

    def plot(self) -> go.Figure:
        return layer_head_heatmap(
            self.alpha[:, :, 0], title=f"α₀ on '{self.token}'×{self.length} (BOS={'yes' if self.prepend_bos else 'no'}) "
            f"— Sink_0^{self.eps}={self.sink_rate:.3f} — {self.model}", colorbar_title="α₀", diverging=False,
            zmin=0.0, zmax=1.0)


def repeated_token_sink(
    model: Model, token: str | int | None = None, *, length: int = 64, prepend_bos: bool = False,
    eps: float = 0.3, reference_prompts: Any = None,
) -> RepeatedTokenResult:
    """The repeated-token check of Gu et al. (2025): ``Sink_0^ε`` on ``[BOS?] x x … x`` (``length`` x's).

    ``token``: a string (its first token is used), a token id, or ``None`` (the token of " the",
    else the first non-special id). ``reference_prompts``: optional natural prompts measured with
    the same BOS policy for comparison.
    """
    check_attention_model(model)
    check_eps(eps)
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}.")
    tok = model.tokenizer
    if token is None:
        ids = tok(" the", add_special_tokens=False)["input_ids"] or tok("the", add_special_tokens=False)["input_ids"]
        tid = int(ids[0]) if ids else next(i for i in range(len(tok)) if i not in set(tok.all_special_ids))
    elif isinstance(token, str):
        ids = tok(token, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"Token string {token!r} encodes to no tokens.")
        tid = int(ids[0])
    else:
        tid = int(token)
    if not 0 <= tid < int(model.cfg.d_vocab):
        raise ValueError(f"token id {tid} outside the vocabulary (0..{int(model.cfg.d_vocab) - 1}).")
    toks = torch.full((1, length), tid, dtype=torch.long)
    if prepend_bos:
        from interp.tokens import bos_token_id

        toks = torch.cat([torch.tensor([[bos_token_id(model)]]), toks], dim=1)
    from interp.tokens import _display

    T = toks.shape[1]
    dev = getattr(model.cfg, "device", None) or "cpu"
    strs = [_display(t) for t in tok.convert_ids_to_tokens(toks[0].tolist())]
    pb = PromptBatch(toks.to(dev), torch.ones_like(toks).to(dev), [T], [strs], prepend_bos)
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    acc = PatternAccumulator(1, L, H, T, keep_alpha=True)
    stream(model, pb, acc.hooks, batch_size=1)
    assert acc.alpha is not None
    ref = None
    if reference_prompts is not None:
        ref = sink_analysis(model, reference_prompts, eps=eps, prepend_bos=prepend_bos, drains=False,
                            peaks=False, massive=False).sink_rate(0)
    return RepeatedTokenResult(model=model_name(model), token=_display(tok.convert_ids_to_tokens([tid])[0]),
                               token_id=tid, length=length, prepend_bos=prepend_bos, eps=eps,
                               sink_rate=sink_rate(acc.alpha, 0, eps), alpha=acc.alpha[0],
                               reference_sink_rate=ref)
