"""Positional MLP neurons (Voita, Ferrando & Nalmpantis 2024): mutual information between a
neuron's firing and the token position.

Three lines in a notebook::

    m = interp.load_model()
    r = interp.neurons.positional_neurons(m, interp.prompts.DEFAULT_PROMPTS)
    r.top(10); r.plot(); r.plot_curves()

With ``fr(pos)`` the firing rate at position ``pos`` (share of prompts having that position where
the neuron fires) and ``fr`` the overall rate (all tokens pooled),

    I(act; pos) = (1/T) Σ_pos [ fr(pos) log(fr(pos)/fr) + (1 − fr(pos)) log((1 − fr(pos))/(1 − fr)) ]

in nats (``0 log 0 = 0``); a neuron is positional when ``I > threshold`` (0.05). With the same
number of prompts at every position this is exactly the mutual information between a uniform
position and the binary firing variable.

**Small-sample bias.** This plug-in estimate is biased upwards. For a neuron whose firing does
not depend on position, each term is ``KL(fr̂(pos) ‖ fr̂) ≈ (fr̂(pos) − fr̂)² / (2 fr (1 − fr))`` with
``Var(fr̂(pos) − fr̂) = fr (1 − fr)(1/n_pos − 1/N_tok)`` (``n_pos`` tokens at ``pos``, ``N_tok`` in
all), so (:func:`small_sample_bias`)

    bias = (1/T) Σ_pos (1/(2 n_pos) − 1/(2 N_tok))

nats, which is Miller–Madow's ``(T − 1) / (2 N_tok)`` (Miller 1955) when every position has the
same number of prompts, and larger when late positions are covered by few (short prompts): the
positions average with equal weight, so the sparsest positions dominate the bias. It is
``≈ 1/(2·n_prompts)``: with 2 prompts almost every neuron looks positional. ``info_corrected``
subtracts it and :meth:`PositionalNeuronsResult.positional` uses it by default; a warning is
raised when the bias exceeds half the threshold (use ≥ 20–50 prompts per position). For a count
that is stable between prompt draws, give every position the same prompts (prompts of at least
``T`` tokens cut to ``T``; the report does this): then ``I`` is exactly the mutual information
with a uniform position and no position is estimated from a handful of long prompts.

**Activation rule.** Voita et al. study OPT (ReLU): a neuron fires when its activation is > 0.
For SiLU/GELU (and gated SwiGLU/GeGLU MLPs) we use the sign of the *input of the nonlinearity*
``mlp.hook_pre`` (the gate pre-activation in gated MLPs): ``fires ⇔ pre > 0``. For ReLU this is
the same rule; for SiLU and GELU ``act(x) > 0 ⇔ x > 0`` and the negative branch is bounded
(SiLU ≥ −0.28, GELU ≥ −0.17), so "fires" means the neuron is on its growing, unbounded branch.
In gated MLPs the up projection only scales (and signs) the output; it does not switch the neuron
on or off, so it is not part of the rule. ``rule="quantile"`` is the alternative: fires when
``|mlp.hook_post|`` is above the neuron's ``quantile`` over the tokens of the first mini-batch
(robust to neurons that are almost always on).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import plotly.graph_objects as go
import torch
from einops import einsum, reduce
from jaxtyping import Float
from torch import Tensor

from interp._attnstats import source_of
from interp.capture import ActivationStore, StreamBatch, stream
from interp.plots import lines
from interp.results import Result
from interp.types import Model

__all__ = ["PositionalNeuronsResult", "positional_neurons", "position_mutual_information", "small_sample_bias"]


def position_mutual_information(
    fires: Float[Tensor, "*neuron pos"], totals: Float[Tensor, " pos"]
) -> Float[Tensor, "*neuron"]:
    """Voita et al.'s ``I(act; pos)`` from firing counts per position and tokens per position.

    ``fires[..., p]``: how many tokens at position ``p`` fired; ``totals[p]``: tokens at ``p``.
    Positions with ``totals == 0`` are skipped; ``T`` is the number of positions kept.
    """
    keep = totals > 0
    if not bool(keep.any()):
        raise ValueError("No position has any token.")
    f = fires[..., keep].double()
    n = totals[keep].double()
    fr_pos = f / n
    fr = f.sum(-1, keepdim=True) / n.sum()

    def term(p: Tensor, q: Tensor) -> Tensor:
        return torch.where(p > 0, p * torch.log(p / q.clamp(min=1e-300)), torch.zeros_like(p))

    info = term(fr_pos, fr) + term(1 - fr_pos, 1 - fr)
    return info.mean(-1).float()


def small_sample_bias(totals: Float[Tensor, " pos"], sq_totals: Float[Tensor, " pos"] | None = None) -> float:
    """Expected plug-in ``I(act; pos)`` of a neuron whose firing is independent of position, to
    first order: ``(1/T) Σ_pos (1/(2 n_pos) − 1/(2 N_tok))`` over the ``T`` positions with
    ``n_pos = totals[pos] > 0`` tokens (``N_tok = Σ n_pos``). Equal ``n_pos`` give Miller–Madow's
    ``(T − 1)/(2 N_tok)`` (Miller 1955; Paninski 2003, Neural Computation 15(6)).

    Each term is a binary KL divergence ≈ ``χ²/(2·…)``: ``KL(p̂_pos ‖ p̂) ≈ (p̂_pos − p̂)²/(2p(1−p))``
    and ``Var(p̂_pos − p̂) = p(1−p)(1/n_pos − 1/N_tok)`` (``p̂`` pools ``p̂_pos``), whence the
    formula; it does not depend on the firing rate ``p``.

    Weighted tokens (bootstrap replicates: ``totals[pos] = Σ_i w_i``, ``sq_totals[pos] = Σ_i w_i²``
    over the prompts covering ``pos``): the weighted rate has variance ``p(1−p) Σw²/(Σw)²``, so
    each count is replaced by Kish's effective size ``(Σw)²/Σw²`` (Kish 1965); with 0/1 weights
    this is the plain count. Without it a Poisson(1) replicate (effective size ≈ n/2) keeps about
    as much bias again as was subtracted, and every replicate count is shifted and spread.
    """
    t = torch.as_tensor(totals, dtype=torch.float64)
    keep = t > 0
    if not bool(keep.any()):
        raise ValueError("No position has any token.")
    if sq_totals is None:
        n = t[keep]
        return float((0.5 / n).mean() - 0.5 / n.sum())
    q = torch.as_tensor(sq_totals, dtype=torch.float64)[keep]
    n = t[keep] ** 2 / q
    return float((0.5 / n).mean() - 0.5 * float(q.sum()) / float(t[keep].sum()) ** 2)


@dataclass
class PositionalNeuronsResult(Result):
    """``info[l, n]`` = I(act; pos) of MLP neuron ``n`` in layer ``l``; ``firing_rate[l, n, p]``
    = fr(pos); ``overall_rate[l, n]`` = fr; ``tokens_per_position[p]``."""

    model: str
    prepend_bos: bool
    rule: str
    threshold: float
    info: Float[Tensor, "layer neuron"]
    firing_rate: Float[Tensor, "layer neuron pos"]
    overall_rate: Float[Tensor, "layer neuron"]
    tokens_per_position: Float[Tensor, " pos"]
    bias: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def info_corrected(self) -> Float[Tensor, "layer neuron"]:
        """Bias-corrected ``I − bias`` (:func:`small_sample_bias`; Miller–Madow's
        ``(T − 1)/(2 N_tok)`` when every position has the same number of prompts)."""
        return self.info - self.bias

    def info_from(self, first: int) -> Float[Tensor, "layer neuron"]:
        """Bias-corrected ``I`` over positions ``≥ first`` only (e.g. ``first=1`` leaves out the BOS
        position, where every prompt has the same token, so firing there is the BOS token's, not
        the position's), from ``firing_rate × tokens_per_position``."""
        tot = self.tokens_per_position[first:].double()
        fires = torch.nan_to_num(self.firing_rate[..., first:].double()) * tot
        return (position_mutual_information(fires, tot) - small_sample_bias(tot)).float()

    def positional(self, corrected: bool = True) -> Float[Tensor, "layer neuron"]:
        """1 where ``I > threshold`` (bias-corrected ``I`` by default)."""
        return ((self.info_corrected if corrected else self.info) > self.threshold).float()

    def to_frame(self) -> Any:
        """One row per MLP neuron: ``layer``, ``neuron``, ``label`` ``L{l}N{i}``, ``info`` (nats),
        ``info_corrected``, ``overall_rate``, ``positional`` (corrected I > threshold)."""
        from interp.results import tensor_frame

        df = tensor_frame(self.info, ["layer", "neuron"], value="info", model=self.model,
                          prepend_bos=self.prepend_bos)
        df.insert(2, "label", [f"L{l}N{n}" for l, n in zip(df["layer"], df["neuron"])])
        df["info_corrected"] = self.info_corrected.float().reshape(-1).numpy()
        df["overall_rate"] = self.overall_rate.float().reshape(-1).numpy()
        df["positional"] = self.positional().bool().reshape(-1).numpy()
        return df

    def count_per_layer(self) -> list[int]:
        return [int(x) for x in self.positional().sum(1)]

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` most positional neurons as ``[("L{l}N{i}", I), ...]``."""
        flat = torch.nan_to_num(self.info.flatten(), nan=-1.0)
        vals, idx = flat.topk(min(n, flat.numel()))
        N = self.info.shape[1]
        return [(f"L{int(i) // N}N{int(i) % N}", float(v)) for v, i in zip(vals, idx)]

    def to_json(self) -> dict[str, Any]:
        """Summary JSON: info for every neuron, firing curves only for the top 50 (size)."""
        from interp.results import to_jsonable

        top = self.top(50)
        curves = {}
        for name, _ in top:
            l, n = (int(x) for x in name[1:].split("N"))
            curves[name] = self.firing_rate[l, n]
        return {"type": type(self).__name__, "model": self.model, "prepend_bos": self.prepend_bos,
                "rule": self.rule, "threshold": self.threshold, "info": to_jsonable(self.info),
                "bias": self.bias,
                "positional_per_layer": self.count_per_layer(), "top": top,
                "firing_rate_top": to_jsonable(curves), "tokens_per_position": to_jsonable(self.tokens_per_position),
                "overall_rate": to_jsonable(self.overall_rate), "firing_rate_shape": list(self.firing_rate.shape),
                "params": to_jsonable(self.params)}

    @classmethod
    def _json_fields(cls, d: dict[str, Any]) -> dict[str, Any]:
        """:meth:`from_json` hook: the JSON keeps firing curves of the top 50 neurons only (size:
        SmolLM2 has 46,080 neurons), so the rebuilt ``firing_rate`` is NaN for the others."""
        if "firing_rate" not in d and "firing_rate_shape" in d:
            fr = torch.full(tuple(d["firing_rate_shape"]), float("nan"))
            for name, curve in (d.get("firing_rate_top") or {}).items():
                l, n = (int(x) for x in name[1:].split("N"))
                fr[l, n] = torch.tensor([float("nan") if c is None else c for c in curve])
            d["firing_rate"] = fr.tolist()
        return d

    def plot(self) -> go.Figure:
        """Number of positional neurons per layer and the max I per layer."""
        L = self.info.shape[0]
        fig = go.Figure()
        fig.add_trace(go.Bar(x=list(range(L)), y=self.count_per_layer(), name=f"# I > {self.threshold}"))
        fig.add_trace(go.Scatter(x=list(range(L)), y=[float(v) for v in self.info.amax(1)], name="max I",
                                 yaxis="y2", mode="lines+markers"))
        fig.update_layout(title=f"Positional neurons per layer ({self.rule} rule) — {self.model}",
                          xaxis_title="layer", yaxis_title="count",
                          yaxis2=dict(title="max I(act; pos) (nats)", overlaying="y", side="right"))
        return fig

    def plot_curves(self, neurons: Sequence[str] | None = None) -> go.Figure:
        """Firing-rate curves fr(pos) of chosen neurons (``"L{l}N{i}"``, default the top 6)."""
        names = [n for n, _ in self.top(6)] if neurons is None else list(neurons)
        series = {}
        for name in names:
            try:
                l, n = (int(x) for x in name.upper()[1:].split("N"))
            except ValueError as e:
                raise ValueError(f"Neuron label {name!r} is not of the form 'L{{layer}}N{{index}}'.") from e
            series[f"{name} (I={float(self.info[l, n]):.3f})"] = [float(v) for v in self.firing_rate[l, n]]
        return lines([float(i) for i in range(self.firing_rate.shape[-1])], series,
                     title=f"Firing rate by position — {self.model}", xaxis_title="position",
                     yaxis_title="fr(pos)")


def positional_neurons(
    model: Model | ActivationStore,
    prompts: Any = None,
    *,
    rule: str = "positive",
    quantile: float = 0.9,
    threshold: float = 0.05,
    prepend_bos: bool = True,
    batch_size: int = 8,
    layers: Sequence[int] | None = None,
    n_boot: int = 0,
    seed: int = 0,
    replicate_weights: Float[Tensor, "replicate prompt"] | None = None,
    replicate_from: Sequence[int] = (),
) -> PositionalNeuronsResult:
    """I(act; pos) for every MLP neuron (see the module docstring for the rule and formula).

    ``model`` is a live model, or an :class:`~interp.capture.ActivationStore` that holds
    ``blocks.{l}.mlp.hook_pre`` (``hook_post`` for ``rule="quantile"``) of every layer asked for
    (``prompts`` must then be ``None``): the same reducer runs on the stored activations through
    :func:`interp.capture.stream`, and a store captured from the same prompts with the same
    ``batch_size`` gives the same numbers as the live run.

    ``n_boot > 0`` also counts positional neurons on ``n_boot`` Poisson-bootstrap replicates of
    the prompts (each prompt weighted by a Poisson(1) draw, Hanley & MacGibbon 2006 — the
    streaming form of resampling prompts with replacement), each with its own small-sample bias
    correction, in the same forward pass; the per-replicate counts per layer are kept in
    ``params["bootstrap_counts"]`` (``[replicate][layer]``). ``replicate_weights`` (one row of
    per-prompt weights per replicate, e.g. 0/1 indicators of two halves of the prompts) replaces
    the Poisson draws. ``replicate_from``: for each ``first`` in it, also the replicate counts with
    ``I`` over positions ``≥ first`` (:meth:`PositionalNeuronsResult.info_from`), in
    ``params["bootstrap_counts_from"][first]``.
    """
    if rule not in ("positive", "quantile"):
        raise ValueError(f"rule must be 'positive' or 'quantile', got {rule!r}.")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}.")
    if not 0.0 <= threshold <= math.log(2):
        raise ValueError(f"threshold must be in [0, log 2] nats (the maximum of I for a binary variable), got {threshold}.")
    src = source_of(model)
    from_store, L, name = src.from_store, src.n_layers, src.name
    layers = list(range(L)) if layers is None else list(layers)
    hook_name = "mlp.hook_pre" if rule == "positive" else "mlp.hook_post"
    available = src.hooks
    for l in layers:
        if not 0 <= l < L:
            raise ValueError(f"layer {l} outside 0..{L - 1}.")
        if f"blocks.{l}.{hook_name}" not in available:
            if from_store:
                raise ValueError(f"The ActivationStore has no 'blocks.{l}.{hook_name}': capture "
                                 f"'blocks.*.{hook_name}' for rule={rule!r}, or pass the model.")
            raise ValueError(f"Model {name!r} has no 'blocks.{l}.{hook_name}' hook (no MLP?).")
    batch = src.batch(prompts, prepend_bos=prepend_bos, min_len=2)
    Tm = max(batch.lengths)
    fires: dict[int, Tensor] = {}
    totals = torch.zeros(Tm, dtype=torch.float64)
    thresholds: dict[int, Tensor] = {}
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}.")
    if replicate_weights is not None:
        wts = torch.as_tensor(replicate_weights, dtype=torch.float32)
        if wts.ndim != 2 or wts.shape[1] != len(batch) or bool((wts < 0).any()):
            raise ValueError(f"replicate_weights must be [replicate, {len(batch)}] non-negative weights, "
                             f"got shape {tuple(wts.shape)}.")
        n_boot = int(wts.shape[0])
    else:
        wts = torch.poisson(torch.ones(n_boot, len(batch)), generator=torch.Generator().manual_seed(seed)) if n_boot else None
    bfires: dict[int, Tensor] = {}
    btotals = torch.zeros(n_boot, Tm, dtype=torch.float64)
    bsq = torch.zeros(n_boot, Tm, dtype=torch.float64)

    def make(sb: StreamBatch):
        offset, lengths = sb.offset, sb.lengths
        width = max(lengths)
        valid = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None])
        totals[:width] += valid.sum(0).double()
        w = None
        if wts is not None:
            w = wts[:, offset:offset + len(lengths)]  # [boot b]
            btotals[:, :width] += (w @ valid.float()).double()
            bsq[:, :width] += ((w * w) @ valid.float()).double()

        def hook(x: Tensor, hook: Any) -> None:
            l = int(hook.name.split(".")[1])
            x = x.detach().float().cpu()
            if rule == "positive":
                on = x > 0
            else:
                a = x.abs()
                if l not in thresholds:
                    thresholds[l] = torch.quantile(a[valid], quantile, dim=0)
                on = a > thresholds[l]
            cnt = reduce((on & valid[:, :, None]).long(), "batch pos neuron -> neuron pos", "sum").double()
            if l not in fires:
                fires[l] = torch.zeros(x.shape[-1], Tm, dtype=torch.float64)
            fires[l][:, :width] += cnt
            if w is not None:
                if l not in bfires:
                    bfires[l] = torch.zeros(n_boot, x.shape[-1], Tm)
                bfires[l][:, :, :width] += einsum(w, (on & valid[:, :, None]).float(),
                                                  "replicate batch, batch pos neuron -> replicate neuron pos")

        return [(f"blocks.{l}.{hook_name}", hook) for l in layers]

    stream(model, None if from_store else batch, make, batch_size=batch_size)
    d_mlp = next(iter(fires.values())).shape[0]
    info = torch.full((L, d_mlp), float("nan"))
    fr_pos = torch.full((L, d_mlp, Tm), float("nan"))
    fr = torch.full((L, d_mlp), float("nan"))
    n = totals.clamp(min=1)
    for l, f in fires.items():
        info[l] = position_mutual_information(f.float(), totals.float())
        fr_pos[l] = (f / n).float()
        fr[l] = (f.sum(-1) / totals.sum()).float()
    bias = small_sample_bias(totals)
    if bias > threshold / 2:
        warnings.warn(
            f"I(act; pos) from {len(batch)} prompts has a small-sample bias of about {bias:.3f} nats "
            f"(threshold {threshold}); use at least {math.ceil(1 / max(threshold, 1e-3))} prompts per "
            "position — info_corrected subtracts it.", stacklevel=2)
    params_extra: dict[str, Any] = {}
    if n_boot:
        def rep_counts(first: int) -> list[list[int]]:
            out = []
            for r in range(n_boot):
                tot = btotals[r, first:]
                bias_r = small_sample_bias(tot, bsq[r, first:])
                out.append([int(((position_mutual_information(bfires[l][r][:, first:], tot.float()) - bias_r)
                                 > threshold).sum()) if l in bfires else 0 for l in range(L)])
            return out

        params_extra = {"bootstrap_counts": rep_counts(0), "n_boot": n_boot, "boot_seed": seed}
        if replicate_from:
            params_extra["bootstrap_counts_from"] = {int(f): rep_counts(int(f)) for f in replicate_from}
    return PositionalNeuronsResult(
        model=name, prepend_bos=batch.prepend_bos, rule=rule, threshold=threshold, info=info,
        firing_rate=fr_pos, overall_rate=fr, tokens_per_position=totals.float(), bias=bias,
        params=dict(quantile=quantile, layers=layers, hook=hook_name, n_prompts=len(batch),
                    lengths=list(batch.lengths), **params_extra,
                    **src.provenance()))
