"""Band ablation (p-RoPE style) and positional heads by frequency.

Band ablation runs the real model with a set S of rotary chunks edited in every layer, through
hooks on ``hook_rot_q``/``hook_rot_k``:

* ``"unrotate"`` — the chunks in S are not rotated (angle 0; p-RoPE, Barbero et al. 2025, keeps
  rotation on the highest fraction p of frequencies and removes it from the rest);
* ``"zero"`` — the chunks in S of q and k are set to 0 (they contribute nothing to the logits).

It reports the next-token loss and every head's previous-token and self (diagonal) scores —
TransformerLens ``head_detector`` "mul" scores Σ(A⊙P)/ΣA, the same accumulator as
:func:`interp.heads.positional_heads` — before and after. Barbero et al. found that Gemma 7B's
diagonal / previous-token heads are built on the highest frequencies, so they should lose their
pattern when the high band goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp._attnstats import PatternAccumulator
from interp.capture import StreamBatch, stream
from interp.results import Result, head_label
from interp.rope._common import (
    as_mask,
    batch_of,
    exposes_rotated,
    fmt_fraction,
    name_of,
    next_token_loss,
    rope_model,
    rotation_hooks,
    select_chunks,
)
from interp.rope.usage import _Acc
from interp.types import Model

__all__ = ["BandAblationResult", "band_ablation", "PositionalFrequencyResult", "positional_frequency_heads"]

SCORES = PatternAccumulator.NAMES  # previous_token, self, first_token, duplicate_token, induction


@dataclass
class BandAblationResult(Result):
    """Loss and per-head positional scores under band ablations; condition 0 is the intact model.

    ``removed[c]`` is the chunk set S of condition c, ``modes[c]`` its mode (``"none"`` for the
    baseline); ``loss[c]`` the mean next-token cross-entropy over all predicted tokens;
    ``scores[c, l, h, s]`` score ``score_names[s]``: the TransformerLens mul scores
    (previous_token, self, first_token, duplicate_token, induction; mean over prompts) then
    ``offset_Δ`` = A(Δ), the attention at relative offset Δ pooled over prompts and queries.
    ``prompt_nll[c, p]``: summed next-token cross-entropy of prompt ``p`` under condition ``c``
    over its ``prompt_predictions[p]`` predictions (so ``loss[c] = Σ_p prompt_nll[c, p] /
    Σ_p prompt_predictions[p]`` up to float rounding), for losses of any subset of the prompts
    (:meth:`group_loss_change`).
    """

    model: str
    prepend_bos: bool
    n_prompts: int
    n_predictions: int
    conditions: list[str]
    modes: list[str]
    removed: Bool[Tensor, "condition chunk"]
    loss: Float[Tensor, "condition"]
    score_names: list[str]
    scores: Float[Tensor, "condition layer head score"]
    prompt_nll: Float[Tensor, "condition prompt"] | None = None
    prompt_predictions: Int[Tensor, " prompt"] | None = None

    def group_loss_change(self, groups: Sequence[Sequence[int]]) -> Float[Tensor, "group condition"]:
        """Loss change of every condition on each group of prompts (indices into the prompts):
        ``Σ_{p∈g} prompt_nll[c, p] / Σ_{p∈g} prompt_predictions[p]`` minus the same for the
        intact model -- what :func:`band_ablation` on that group alone measures, from this one run."""
        if self.prompt_nll is None or self.prompt_predictions is None:
            raise ValueError("this result has no per-prompt losses (made by an older version): run band_ablation again")
        out = []
        for g in groups:
            idx = torch.as_tensor(list(g), dtype=torch.long)
            if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.n_prompts:
                raise ValueError(f"a group must hold prompt indices in 0..{self.n_prompts - 1}, got {list(g)}")
            n = int(self.prompt_predictions[idx].sum())
            if n == 0:
                raise ValueError(f"the prompts {list(g)} have no next-token predictions (one token each)")
            loss = self.prompt_nll[:, idx].sum(1) / n
            out.append(loss - loss[0])
        return torch.stack(out)

    def _s(self, name: str) -> int:
        if name not in self.score_names:
            raise KeyError(f"unknown score {name!r}; choose one of {self.score_names}")
        return self.score_names.index(name)

    def _c(self, condition: int | str) -> int:
        if isinstance(condition, str):
            if condition not in self.conditions:
                raise KeyError(f"unknown condition {condition!r}; choose one of {self.conditions}")
            return self.conditions.index(condition)
        return int(condition)

    @property
    def loss_change(self) -> Float[Tensor, "condition"]:
        return self.loss - self.loss[0]

    def score_change(self, name: str = "previous_token") -> Float[Tensor, "condition layer head"]:
        s = self.scores[..., self._s(name)]
        return s - s[:1]

    def lost_pattern(self, condition: int | str, name: str = "previous_token", *, min_score: float = 0.3,
                     keep: float = 0.5) -> list[tuple[str, float, float]]:
        """Heads with baseline score ≥ ``min_score`` whose score falls below ``keep`` × baseline."""
        c, s = self._c(condition), self._s(name)
        before, after = self.scores[0, ..., s], self.scores[c, ..., s]
        hit = (before >= min_score) & (after < keep * before)
        out = [(head_label(l, h), float(before[l, h]), float(after[l, h])) for l, h in hit.nonzero().tolist()]
        return sorted(out, key=lambda r: r[2] - r[1])

    def top(self, n: int = 10, condition: int | str = 1, name: str = "previous_token") -> list[tuple[str, float]]:
        """Heads whose score dropped most under ``condition``."""
        d = self.score_change(name)[self._c(condition)]
        idx = d.flatten().argsort()[:n]
        H = d.shape[1]
        return [(head_label(int(i) // H, int(i) % H), float(d.flatten()[i])) for i in idx]

    def plot(self) -> go.Figure:
        """Bar chart of the loss change of each condition."""
        fig = go.Figure(go.Bar(x=self.conditions[1:], y=self.loss_change[1:].numpy(),
                               text=[f"{v:+.3f}" for v in self.loss_change[1:].tolist()]))
        fig.update_layout(title=f"{self.model}: next-token loss change under RoPE band ablation "
                                f"(baseline {self.loss[0]:.3f} nats)",
                          xaxis_title="condition", yaxis_title="Δ loss (nats/token)")
        return fig

    def plot_heads(self, name: str = "previous_token", n: int = 12) -> go.Figure:
        """Grouped bars: the ``n`` heads with the highest baseline score, under every condition."""
        s = self.scores[..., self._s(name)]
        H = s.shape[2]
        idx = s[0].flatten().argsort(descending=True)[:n].tolist()
        labels = [head_label(i // H, i % H) for i in idx]
        fig = go.Figure()
        for c, cond in enumerate(self.conditions):
            fig.add_bar(x=labels, y=[float(s[c].flatten()[i]) for i in idx], name=cond)
        fig.update_layout(title=f"{self.model}: {name} score of the top heads under band ablation",
                          xaxis_title="head", yaxis_title=f"{name} score", barmode="group")
        return fig


def _default_bands(rope: Any, fraction: float) -> dict[str, Tensor]:
    p = fmt_fraction(fraction)
    return {f"highest {p}": select_chunks(rope, highest=fraction),
            f"lowest {p}": select_chunks(rope, lowest=fraction)}


def _score_names(max_offset: int) -> list[str]:
    return list(SCORES) + [f"offset_{d}" for d in range(max_offset + 1)]


def _measure(model: Any, batch: Any, extra: Any, batch_size: int, spec: Any, max_offset: int,
             usage: _Acc | None = None) -> tuple[float, int, Tensor, Tensor, Tensor]:
    acc = PatternAccumulator(len(batch), spec.n_layers, spec.n_heads, max(batch.lengths), keep_alpha=False)
    tot = [0.0, 0]
    row_nll = torch.zeros(len(batch), dtype=torch.float64)  # per prompt
    row_n = torch.zeros(len(batch), dtype=torch.long)

    def hooks(sb: StreamBatch) -> list[Any]:
        h = list(extra()) + acc.hooks(sb)
        if usage is not None:
            h += usage.hooks(sb)
        return h

    def on_logits(sb: StreamBatch, logits: Tensor) -> None:
        s, n, rs, rn = next_token_loss(logits, sb.tokens, sb.lengths, by_row=True)
        tot[0] += s
        tot[1] += n
        row_nll[sb.indices] = rs
        row_n[sb.indices] = rn

    stream(model, batch, hooks, batch_size=batch_size, on_logits=on_logits)
    rel = acc.rel_curve()[..., : max_offset + 1]
    if rel.shape[-1] < max_offset + 1:
        raise ValueError(f"prompts are shorter than max_offset + 1 = {max_offset + 1} tokens")
    return tot[0] / max(tot[1], 1), tot[1], torch.cat([acc.mean_scores(), rel], dim=-1), row_nll, row_n


def band_ablation(
    model: Model,
    prompts: Any = None,
    *,
    fraction: float = 0.25,
    bands: Mapping[str, Sequence[int] | Tensor] | None = None,
    modes: Sequence[str] = ("unrotate", "zero"),
    max_offset: int = 8,
    prepend_bos: bool = True,
    batch_size: int = 8,
) -> BandAblationResult:
    """Remove rotation from (or zero) chunk bands in every layer; loss and head scores before/after.

    Args:
        model: a rotary TransformerBridge.
        prompts: strings or a right-padded ``TokenBatch`` (default: a few English/code prompts).
        fraction: with ``bands=None``, the bands are the highest and the lowest ``fraction`` of
            chunks (:func:`select_chunks`).
        bands: ``{name: chunk indices or a bool mask [chunk]}``.
        modes: any of ``"unrotate"`` and ``"zero"``; every band is run in every mode.
        max_offset: also score the attention at relative offsets Δ = 0 … max_offset
            (``offset_Δ`` = mean over queries t ≥ Δ of A[t, t−Δ]).

    Returns:
        :class:`BandAblationResult` (condition 0 = intact model).
    """
    spec, rope = rope_model(model)
    batch = batch_of(model, prompts, prepend_bos)
    bands_m = _default_bands(rope, fraction) if bands is None else {k: as_mask(rope, v) for k, v in bands.items()}
    for m in modes:
        if m not in ("unrotate", "zero"):
            raise ValueError(f"mode must be 'unrotate' or 'zero', got {m!r}")
    exposed = exposes_rotated(model)
    conds, mode_l, masks, losses, scores = ["intact"], ["none"], [torch.zeros(rope.n_chunks, dtype=torch.bool)], [], []
    loss, n_pred, sc, nll0, row_n = _measure(model, batch, lambda: [], batch_size, spec, max_offset)
    losses.append(loss)
    scores.append(sc)
    nlls = [nll0]
    for mode in modes:
        for name, mask in bands_m.items():
            l, _, s, nll, _ = _measure(model, batch, lambda m=mask, md=mode: rotation_hooks(spec, m, md, exposed=exposed),
                                       batch_size, spec, max_offset)
            conds.append(f"{mode} {name}")
            mode_l.append(mode)
            masks.append(mask)
            losses.append(l)
            scores.append(s)
            nlls.append(nll)
    return BandAblationResult(
        model=name_of(model), prepend_bos=batch.prepend_bos, n_prompts=len(batch), n_predictions=n_pred,
        conditions=conds, modes=mode_l, removed=torch.stack(masks), loss=torch.tensor(losses),
        score_names=_score_names(max_offset), scores=torch.stack(scores),
        prompt_nll=torch.stack(nlls), prompt_predictions=row_n,
    )


@dataclass
class PositionalFrequencyResult(Result):
    """Each head's positional score against the share of its q·k bound in the high band.

    ``positional[l, h]`` = max_{0 ≤ Δ ≤ max_offset} A(Δ), the head's strongest fixed-offset
    attention (Δ = 0 diagonal, Δ = 1 previous token); ``high_share[l, h]`` = share of
    Σ_k mean‖q^(k)‖·mean‖k^(k)‖ carried by the highest ``fraction`` of chunks; ``correlation`` the
    Spearman rank correlation of the two over all heads; ``heads``: heads with
    positional ≥ ``threshold``, by decreasing high-frequency share.
    """

    model: str
    prepend_bos: bool
    fraction: float
    threshold: float
    score_names: list[str]
    scores: Float[Tensor, "layer head score"]
    positional: Float[Tensor, "layer head"]
    high_share: Float[Tensor, "layer head"]
    correlation: float
    heads: list[tuple[str, float, float]]

    def top(self, n: int = 10) -> list[tuple[str, float, float]]:
        return self.heads[:n]

    def plot(self) -> go.Figure:
        L, H = self.positional.shape
        labels = [head_label(l, h) for l in range(L) for h in range(H)]
        fig = go.Figure(go.Scatter(x=self.high_share.flatten().numpy(), y=self.positional.flatten().numpy(),
                                   mode="markers", text=labels,
                                   marker=dict(color=[l for l in range(L) for _ in range(H)],
                                               colorscale="Viridis", colorbar=dict(title="layer")),
                                   hovertemplate="%{text}<br>high share=%{x:.3f}<br>score=%{y:.3f}"
                                                 "<extra></extra>"))
        fig.update_layout(title=f"{self.model}: positional score vs share of the highest "
                                f"{fmt_fraction(self.fraction)} frequencies (Spearman ρ={self.correlation:.2f})",
                          xaxis_title="high-frequency share of Σ‖q⁽ᵏ⁾‖‖k⁽ᵏ⁾‖",
                          yaxis_title="max_Δ A(Δ) (fixed-offset attention)")
        return fig


def _spearman(a: Tensor, b: Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.norm() * rb.norm()).item()
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def positional_frequency_heads(
    model: Model,
    prompts: Any = None,
    *,
    fraction: float = 0.25,
    threshold: float = 0.3,
    max_offset: int = 8,
    prepend_bos: bool = True,
    batch_size: int = 8,
) -> PositionalFrequencyResult:
    """Relate each head's positional score to its high-frequency share, in one forward pass."""
    spec, rope = rope_model(model)
    batch = batch_of(model, prompts, prepend_bos)
    usage = _Acc(spec, rope, decompose=False, keep_full=False, exposed=exposes_rotated(model))
    _, _, sc, _, _ = _measure(model, batch, lambda: [], batch_size, spec, max_offset, usage=usage)
    q = usage.q / max(usage.n_tok, 1)
    k = (usage.k / max(usage.n_tok, 1)).repeat_interleave(spec.group_size, dim=1)
    bound = (q * k).float()
    m = select_chunks(rope, highest=fraction)
    share = bound[..., m].sum(-1) / bound.sum(-1).clamp_min(1e-30)
    pos = sc[..., len(SCORES):].amax(-1)
    H = spec.n_heads
    heads = [(head_label(l, h), float(pos[l, h]), float(share[l, h]))
             for l in range(spec.n_layers) for h in range(H) if pos[l, h] >= threshold]
    heads.sort(key=lambda r: -r[2])
    return PositionalFrequencyResult(
        model=name_of(model), prepend_bos=batch.prepend_bos, fraction=fraction, threshold=threshold,
        score_names=_score_names(max_offset), scores=sc, positional=pos, high_share=share,
        correlation=_spearman(pos.flatten(), share.flatten()), heads=heads,
    )
