"""Positional heads: previous-token, self, first-token, offset-k, duplicate-token and induction.

Three lines in a notebook::

    m = interp.load_model()
    r = interp.heads.positional_heads(m, interp.prompts.DEFAULT_PROMPTS)
    r.plot()            # layer × head heatmap of the previous-token score; r.top(10); r.to_json()

Scores (all per head ``(l, h)``, pattern ``A[t, s]`` of a prompt of ``T`` tokens, mean over prompts):

* TransformerLens ``head_detector`` "mul" scores ``Σ(A ⊙ P)/ΣA`` (``ΣA = T``) for
  previous-token (``P[t, t−1] = 1``), self/diagonal (``P[t, t] = 1``), first-token
  (``P[t, 0] = 1``; equals the sink importance α₀ of Gu et al. 2025), duplicate-token
  (``P[t, s] = 1`` iff ``s < t`` and ``x_s = x_t``) and induction (``P[t, s] = 1`` iff
  ``x_{s−1} = x_t``, ``1 ≤ s ≤ t``) — Olsson et al. 2022; TransformerLens ``detect_head``.
* Relative-distance profile ``A(Δ) = mean_{b, t ≥ Δ} A_b[t, t−Δ]`` (pooled over prompts and
  queries); the offset-``k`` score is ``A(k)``.
* Position-versus-content test: the same scores on the prompts with every non-BOS token replaced
  by a uniformly random token (same lengths, same BOS policy). A positional head keeps its
  pattern (``random / text ≥ keep_ratio``), a content head loses it. Induction and duplicate
  scores are also measured on repeated random sequences ``[BOS] r r`` (the standard induction test).

All statistics are computed inside ``hook_pattern`` hooks while streaming over mini-batches; the
patterns themselves are never stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor

from interp._attnstats import (
    PatternAccumulator,
    PromptBatch,
    as_batch,
    Source,
    check_attention_model,
    random_like,
    repeated_random,
    source_of,
)
from interp.provenance import model_name
from interp.capture import ActivationStore, StreamBatch, stream
from interp.plots import attention_heatmap, layer_head_heatmap, lines
from interp.prompts import DEFAULT_PROMPTS
from interp.results import Result, head_label
from interp.types import Model

__all__ = [
    "DEFAULT_PROMPTS",
    "SCORE_NAMES",
    "PositionalHeadsResult",
    "HeadClass",
    "positional_heads",
    "attention_patterns",
    "attention_viewer",
    "classify_heads",
]

SCORE_NAMES = PatternAccumulator.NAMES

@dataclass
class HeadClass:
    """Classification of one head with the evidence behind it."""

    layer: int
    head: int
    label: str  # primary role: previous-token, self, offset-k, induction, duplicate-token, first-token, other
    roles: list[str]  # every role whose score passed its threshold
    positional: bool | None  # True: keeps its pattern on random tokens; None if no positional role
    evidence: dict[str, float]

    @property
    def name(self) -> str:
        return head_label(self.layer, self.head)


@dataclass
class PositionalHeadsResult(Result):
    """Positional-head scores of every head.

    ``scores[l, h, i]`` is score ``score_names[i]`` on the prompts (mean over prompts);
    ``random_scores`` the same on random tokens of the same lengths; ``repeated_scores`` on
    repeated random sequences (induction test). ``offset[l, h, Δ] = A(Δ)`` on the prompts and
    ``random_offset`` on random tokens (NaN where no query has a key at distance Δ).
    ``per_prompt[b, l, h, i]`` keeps the per-prompt scores.
    """

    model: str
    prepend_bos: bool
    n_prompts: int
    max_offset: int
    score_names: list[str]
    scores: Float[Tensor, "layer head score"]
    random_scores: Float[Tensor, "layer head score"] | None
    repeated_scores: Float[Tensor, "layer head score"] | None
    offset: Float[Tensor, "layer head delta"]
    random_offset: Float[Tensor, "layer head delta2"] | None
    per_prompt: Float[Tensor, "prompt layer head score"]
    classes: list[HeadClass]
    params: dict[str, Any] = field(default_factory=dict)
    n_kv_heads: int = 0

    # ------------------------------------------------------------------ access
    def score(self, name: str, *, control: str = "text") -> Float[Tensor, "layer head"]:
        """One score per head. ``name``: a score name or ``"offset-k"``; ``control``:
        ``"text"`` (the prompts), ``"random"`` or ``"repeated"``."""
        if name.startswith("offset-"):
            k = int(name.split("-", 1)[1])
            src = {"text": self.offset, "random": self.random_offset}.get(control)
            if src is None:
                raise KeyError(f"No offset profile for control {control!r} (use 'text' or 'random').")
            if not 1 <= k < src.shape[-1]:
                raise KeyError(f"offset {k} out of range 1..{src.shape[-1] - 1}.")
            return src[:, :, k]
        if name not in self.score_names:
            raise KeyError(f"Unknown score {name!r}; choose from {self.score_names} or 'offset-k'.")
        src = {"text": self.scores, "random": self.random_scores, "repeated": self.repeated_scores}[control]
        if src is None:
            raise KeyError(f"Control {control!r} was not computed (random_control/induction_control).")
        return src[:, :, self.score_names.index(name)]

    def top(self, n: int = 10, score: str = "previous_token", *, control: str = "text") -> list[tuple[str, float]]:
        """The ``n`` heads with the highest ``score`` as ``[("L{l}H{h}", value), ...]``."""
        s = self.score(score, control=control)
        flat = torch.nan_to_num(s.flatten(), nan=-math.inf)
        vals, idx = flat.topk(min(n, flat.numel()))
        H = s.shape[1]
        return [(head_label(int(i) // H, int(i) % H), float(v)) for v, i in zip(vals, idx)]

    def to_frame(self) -> Any:
        """One row per head: ``layer``, ``head``, ``head_label``, every score (and its random /
        repeated control when computed), the class ``label``, ``roles`` and ``positional``."""
        from interp.results import require_pandas

        L, H = self.scores.shape[:2]
        cls = {(c.layer, c.head): c for c in self.classes}
        rows = []
        for l in range(L):
            for h in range(H):
                r: dict[str, Any] = {"layer": l, "head": h, "head_label": head_label(l, h)}
                for i, n in enumerate(self.score_names):
                    r[n] = float(self.scores[l, h, i])
                    if self.random_scores is not None:
                        r[f"{n}_random"] = float(self.random_scores[l, h, i])
                    if self.repeated_scores is not None:
                        r[f"{n}_repeated"] = float(self.repeated_scores[l, h, i])
                c = cls.get((l, h))
                r.update(label=c.label if c else None, roles=",".join(c.roles) if c else "",
                         positional=c.positional if c else None)
                rows.append(r)
        df = require_pandas().DataFrame(rows)
        df["model"], df["prepend_bos"] = self.model, self.prepend_bos
        return df

    def heads_with(self, label: str) -> list[str]:
        """Labels of heads whose primary class or roles include ``label``."""
        return [c.name for c in self.classes if c.label == label or label in c.roles]

    # ------------------------------------------------------------------ plots
    def plot(self, score: str = "previous_token", *, control: str = "text") -> go.Figure:
        """Layer × head heatmap of one score (``"offset-k"`` allowed)."""
        s = self.score(score, control=control)
        hover = [[self._hover(l, h) for h in range(s.shape[1])] for l in range(s.shape[0])]
        return layer_head_heatmap(
            s, title=f"{score} score ({control}) — {self.model}, BOS={'yes' if self.prepend_bos else 'no'}",
            colorbar_title=score, diverging=False, zmin=0.0, zmax=1.0, hover_extra=hover,
        )

    def plot_all(self) -> dict[str, go.Figure]:
        """Heatmaps of every score, every offset 1..K, and the class map."""
        figs = {name: self.plot(name) for name in self.score_names}
        for k in range(1, self.max_offset + 1):
            if k < self.offset.shape[-1]:
                figs[f"offset-{k}"] = self.plot(f"offset-{k}")
        if self.repeated_scores is not None:
            figs["induction (repeated random)"] = self.plot("induction", control="repeated")
        figs["classes"] = self.plot_classes()
        return figs

    def plot_offsets(self, heads: Sequence[str] | None = None, *, max_delta: int | None = None) -> go.Figure:
        """A(Δ) curves for chosen heads (``"L{l}H{h}"``; default: the top 6 by max offset score)."""
        if heads is None:
            K = min(self.max_offset + 1, self.offset.shape[-1])
            peak = torch.nan_to_num(self.offset[:, :, 1:K], nan=0).amax(-1)
            H = peak.shape[1]
            heads = [head_label(int(i) // H, int(i) % H) for i in peak.flatten().topk(min(6, peak.numel())).indices]
        D = self.offset.shape[-1] if max_delta is None else min(max_delta + 1, self.offset.shape[-1])
        series = {}
        for name in heads:
            l, h = _parse(name)
            series[name] = [_f(x) for x in self.offset[l, h, :D]]
            if self.random_offset is not None:
                series[name + " (random tokens)"] = [_f(x) for x in self.random_offset[l, h, :min(D, self.random_offset.shape[-1])]]
        return lines([float(i) for i in range(D)], series, title=f"Attention by relative distance A(Δ) — {self.model}",
                     xaxis_title="Δ = query − key", yaxis_title="mean attention A(Δ)")

    def plot_classes(self) -> go.Figure:
        """Layer × head map of the primary class (categorical colours, evidence on hover)."""
        labels = sorted({c.label for c in self.classes})
        code = {lab: i for i, lab in enumerate(labels)}
        L, H = self.scores.shape[:2]
        z = [[0.0] * H for _ in range(L)]
        text = [[""] * H for _ in range(L)]
        for c in self.classes:
            z[c.layer][c.head] = code[c.label]
            text[c.layer][c.head] = f"{c.name}: {c.label}<br>" + ", ".join(f"{k}={v:.2f}" for k, v in c.evidence.items())
        n = max(1, len(labels) - 1)
        fig = go.Figure(go.Heatmap(
            z=z, x=[f"H{h}" for h in range(H)], y=[f"L{l}" for l in range(L)], text=text,
            hovertemplate="%{text}<extra></extra>", colorscale="Turbo", zmin=0, zmax=n,
            colorbar=dict(title="class", tickvals=list(range(len(labels))), ticktext=labels),
        ))
        fig.update_layout(title=f"Head classes — {self.model}", xaxis_title="head", yaxis_title="layer",
                          yaxis_autorange="reversed")
        return fig

    def _hover(self, l: int, h: int) -> str:
        c = self.classes[l * self.scores.shape[1] + h]
        return f"class={c.label}" + ("" if c.positional is None else f" positional={c.positional}")


def _f(x: Tensor) -> float:
    v = float(x)
    return v if math.isfinite(v) else float("nan")


def _parse(name: str) -> tuple[int, int]:
    try:
        l, h = name.upper().lstrip("L").split("H")
        return int(l), int(h)
    except ValueError as e:
        raise ValueError(f"Head label {name!r} is not of the form 'L{{layer}}H{{head}}'.") from e


def _check_fraction(name: str, v: float, *, strict_upper: bool = False) -> None:
    if not (0.0 <= v <= 1.0) or (strict_upper and v == 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {v}.")


def positional_heads(
    model: Model | ActivationStore,
    prompts: Any = None,
    *,
    max_offset: int = 8,
    prepend_bos: bool = True,
    batch_size: int = 8,
    random_control: bool | None = None,
    induction_control: bool | None = None,
    induction_seg_len: int | None = None,
    induction_prompts: Any = None,
    threshold: float = 0.4,
    induction_threshold: float = 0.3,
    keep_ratio: float = 0.7,
    seed: int = 0,
) -> PositionalHeadsResult:
    """Score every head for positional and copying roles and classify it.

    Args:
        model: a TransformerBridge (GQA fine), or an :class:`~interp.capture.ActivationStore`
            holding ``blocks.*.attn.hook_pattern`` of every layer (with ``prompts=None``): the same
            reducer runs on the stored patterns, and a store captured from the same prompts with the
            same ``batch_size`` and right padding gives bit-identical scores. The controls run the
            model on new token sequences, so a store cannot give them: by default they are skipped
            for a store (``params["controls_skipped"]`` lists them; the classification then has no
            random-token test, as with ``random_control=False``), and asking for one raises a
            ValueError. ``params["source"]`` records the store.
        prompts: strings, a ``TokenBatch`` (right padded), or ``None`` for :data:`DEFAULT_PROMPTS`.
        max_offset: K, the largest fixed offset scored (needs every prompt ≥ K+1 tokens).
        prepend_bos: BOS policy (recorded in the result).
        random_control: also score on random tokens (position-versus-content test). ``None``
            (default): on for a model, off for a store.
        induction_control: also score on repeated random sequences ``[BOS] r r`` with
            ``|r| = induction_seg_len``. ``None`` (default): on for a model, off for a store.
        induction_seg_len: ``None`` (default): 20 tokens, except on a zoo toy trained on
            repeated segments (``toy-induction``), whose control is its own task layout
            ``BOS, noise, A, A`` with ``|A|`` = the manifest's ``max_segment`` (inside its
            training range; a 20-token ``[BOS] r r`` is outside it and the toy does not copy
            there), and on other zoo toys ``|r| = min(20, task length // 2)``. A given length
            always means ``[BOS] r r`` with ``|r|`` = it.
        induction_prompts: prompts to use for the induction control instead of ``[BOS] r r``
            (e.g. a model's own repeated-segment task data when it only copies in-distribution).
        threshold: a positional/duplicate score above it gives the head that role.
        induction_threshold: induction score (repeated random) above it marks an induction head.
        keep_ratio: positional if ``score_random ≥ keep_ratio · score_text``.
        seed: random tokens for the controls.

    Returns:
        :class:`PositionalHeadsResult`; ``classes`` holds one :class:`HeadClass` per head.

    Raises:
        ValueError: prompts shorter than ``max_offset + 1`` tokens, thresholds outside [0, 1],
            a model without attention patterns.
    """
    src = source_of(model)
    if not src.from_store:
        check_attention_model(model)
    if max_offset < 1:
        raise ValueError(f"max_offset must be >= 1, got {max_offset}.")
    for nm, v in (("threshold", threshold), ("induction_threshold", induction_threshold),
                  ("keep_ratio", keep_ratio)):
        _check_fraction(nm, v)
    if induction_seg_len is not None and induction_seg_len < 2:
        raise ValueError(f"induction_seg_len must be >= 2, got {induction_seg_len}.")
    random_control, induction_control, skipped = _controls(src, random_control, induction_control,
                                                           induction_prompts)
    if src.from_store:
        src.require([f"blocks.{l}.attn.hook_pattern" for l in range(src.n_layers)], analysis="positional_heads")
    batch = src.batch(prompts, prepend_bos=prepend_bos, min_len=max_offset + 1)
    L, H = src.n_layers, src.n_heads

    def measure(b: PromptBatch | None) -> PatternAccumulator:
        b = batch if b is None else b
        acc = PatternAccumulator(len(b), L, H, max(b.lengths), keep_alpha=False)
        stream(model, None if src.from_store else b, acc.hooks, batch_size=batch_size)
        return acc

    text = measure(None)
    ind_batch = None
    if induction_control and induction_prompts is not None:
        ind_batch = as_batch(model, induction_prompts, prepend_bos=prepend_bos, min_len=2)
    return _finish(src, batch, text, measure, max_offset=max_offset, random_control=random_control,
                   induction_control=induction_control, induction_seg_len=induction_seg_len,
                   induction_batch=ind_batch,
                   threshold=threshold, induction_threshold=induction_threshold, keep_ratio=keep_ratio,
                   seed=seed, batch_size=batch_size, controls_skipped=skipped)


def _controls(src: Source, random_control: bool | None, induction_control: bool | None,
              induction_prompts: Any = None) -> tuple[bool, bool, list[str]]:
    """Resolve the controls' ``None`` defaults (on for a model, off for a store); the skipped ones
    are returned for ``params["controls_skipped"]``. A control asked of a store raises."""
    if src.from_store:
        for flag, nm in ((random_control, "random_control"), (induction_control, "induction_control")):
            if flag:
                src.live_only(f"{nm}=True (it scores the heads on new random-token prompts, a forward pass of "
                              "the model)")
        if induction_prompts is not None:
            src.live_only("induction_prompts (a forward pass of the model on them)")
        skipped = [nm for flag, nm in ((random_control, "random_control"), (induction_control, "induction_control"))
                   if flag is None]
        return False, False, skipped
    return (True if random_control is None else random_control,
            True if induction_control is None else induction_control, [])


def _finish(src: Source, batch: PromptBatch, text: PatternAccumulator, measure: Any, *, max_offset: int,
            random_control: bool, induction_control: bool, induction_seg_len: int | None, threshold: float,
            induction_threshold: float, keep_ratio: float, seed: int, batch_size: int,
            induction_batch: PromptBatch | None = None, controls_skipped: list[str] | None = None,
            ) -> PositionalHeadsResult:
    """Run the controls and assemble the result from the text-pass accumulator."""
    model = src.obj
    rand = measure(random_like(model, batch, seed=seed)) if random_control else None
    rep = None
    toy_control = False
    if induction_control and induction_batch is not None:
        rep = measure(induction_batch)
    elif induction_control:
        n_rep = max(4, min(len(batch), 16))
        toy = _toy_induction_control(model, n_rep, induction_seg_len, prepend_bos=batch.prepend_bos, seed=seed + 1)
        if toy is not None:
            (induction_batch, induction_seg_len), toy_control = toy, True
            rep = measure(induction_batch)
        else:
            induction_seg_len = 20 if induction_seg_len is None else induction_seg_len
            rep = measure(repeated_random(model, n_rep, induction_seg_len, prepend_bos=batch.prepend_bos,
                                          seed=seed + 1))
    res = PositionalHeadsResult(
        model=src.name, prepend_bos=batch.prepend_bos, n_prompts=len(batch), max_offset=max_offset,
        score_names=list(SCORE_NAMES), scores=text.mean_scores(),
        random_scores=None if rand is None else rand.mean_scores(),
        repeated_scores=None if rep is None else rep.mean_scores(),
        offset=text.rel_curve(), random_offset=None if rand is None else rand.rel_curve(),
        per_prompt=text.mul, classes=[],
        params=dict(threshold=threshold, induction_threshold=induction_threshold, keep_ratio=keep_ratio,
                    seed=seed, induction_seg_len=induction_seg_len, batch_size=batch_size,
                    lengths=list(batch.lengths),
                    induction_control=("toy task layout" if toy_control else
                                       "given prompts" if induction_batch is not None else
                                       "repeated random" if induction_control else None),
                    **({"controls_skipped": list(controls_skipped)} if controls_skipped else {}),
                    **src.provenance()),
        n_kv_heads=src.n_kv_heads,
    )
    res.classes = classify_heads(res, threshold=threshold, induction_threshold=induction_threshold,
                                 keep_ratio=keep_ratio)
    return res


def _toy_induction_control(model: Any, n: int, seg_len: int | None, *, prepend_bos: bool,
                           seed: int) -> tuple[PromptBatch, int] | None:
    """The default induction control of a zoo toy, inside its training distribution; ``None``
    when ``model`` is not a zoo toy or ``seg_len`` was given (then ``[BOS] r r`` with it)."""
    from interp.zoo import TOY_MODELS

    info = TOY_MODELS.get(model_name(model))
    if info is None or seg_len is not None:
        return None
    p = dict(info.task_params)
    if info.task == "induction":
        from interp.zoo.tasks import induction_batch

        ell = int(p["max_segment"])
        tb = induction_batch(n, n_vocab=int(p["n_vocab"]), length=int(p["length"]), min_segment=ell,
                             max_segment=ell, seed=seed)
        return as_batch(model, tb.texts(), prepend_bos=prepend_bos, min_len=2), ell
    ell = max(2, min(20, int(p.get("length", 40)) // 2))
    return repeated_random(model, n, ell, prepend_bos=prepend_bos, seed=seed), ell


def classify_heads(
    r: PositionalHeadsResult, *, threshold: float = 0.4, induction_threshold: float = 0.3,
    keep_ratio: float = 0.7,
) -> list[HeadClass]:
    """Rule-based roles per head, strongest first.

    Roles: ``previous-token`` / ``self`` / ``offset-k`` (k ≥ 2) / ``first-token`` when that score
    on the prompts is ≥ ``threshold``; ``induction`` when the induction score on repeated random
    sequences is ≥ ``induction_threshold``; ``duplicate-token`` when the duplicate score there is
    ≥ ``threshold``. The primary label is the strongest non-first-token role (first-token only if
    nothing else passes — most heads of BOS-prepended LMs park attention there), else ``other``.
    A head with a positional primary role is ``positional`` when its random-token score is at least
    ``keep_ratio`` times its text score.
    """
    L, H = r.scores.shape[:2]
    idx = {n: i for i, n in enumerate(r.score_names)}
    K = min(r.max_offset, r.offset.shape[-1] - 1)
    out: list[HeadClass] = []
    for l in range(L):
        for h in range(H):
            cand: dict[str, float] = {}
            ev: dict[str, float] = {}
            for name, role in (("previous_token", "previous-token"), ("self", "self"), ("first_token", "first-token")):
                v = float(r.scores[l, h, idx[name]])
                ev[name] = v
                if r.random_scores is not None:
                    ev[name + "_random"] = float(r.random_scores[l, h, idx[name]])
                if v >= threshold:
                    cand[role] = v
            for k in range(2, K + 1):
                v = float(torch.nan_to_num(r.offset[l, h, k], nan=0.0))
                if v >= threshold:
                    cand[f"offset-{k}"] = v
                    ev[f"offset-{k}"] = v
                    if r.random_offset is not None and k < r.random_offset.shape[-1]:
                        ev[f"offset-{k}_random"] = float(torch.nan_to_num(r.random_offset[l, h, k], nan=0.0))
            src = r.repeated_scores if r.repeated_scores is not None else r.scores
            tag = "_repeated" if r.repeated_scores is not None else ""
            vi, vd = float(src[l, h, idx["induction"]]), float(src[l, h, idx["duplicate_token"]])
            ev["induction" + tag], ev["duplicate_token" + tag] = vi, vd
            if vi >= induction_threshold:
                cand["induction"] = vi
            if vd >= threshold:
                cand["duplicate-token"] = vd
            roles = sorted(cand, key=lambda k: -cand[k])
            main = [x for x in roles if x != "first-token"]
            label = main[0] if main else (roles[0] if roles else "other")
            positional: bool | None = None
            if label in ("previous-token", "self", "first-token") or label.startswith("offset-"):
                key = {"previous-token": "previous_token", "self": "self", "first-token": "first_token"}.get(label, label)
                rk = key + "_random"
                if rk in ev:
                    positional = ev[rk] >= keep_ratio * ev[key]
            out.append(HeadClass(l, h, label, roles, positional, ev))
    return out


# ---------------------------------------------------------------------- pattern viewer


def attention_patterns(
    model: Model, prompt: str, heads: Sequence[str], *, prepend_bos: bool = True,
) -> tuple[list[str], Float[Tensor, "n_heads query key"]]:
    """Token labels and the attention patterns of chosen heads (``"L{l}H{h}"``) on one prompt."""
    check_attention_model(model)
    if not heads:
        raise ValueError("Give at least one head, e.g. heads=['L0H1'].")
    batch = as_batch(model, [prompt], prepend_bos=prepend_bos)
    parsed = [_parse(h) for h in heads]
    L, H = int(model.cfg.n_layers), int(model.cfg.n_heads)
    for (l, h), name in zip(parsed, heads):
        if not (0 <= l < L and 0 <= h < H):
            raise ValueError(f"Head {name} is outside the model ({L} layers × {H} heads).")
    T = batch.lengths[0]
    out = torch.zeros(len(parsed), T, T)
    want: dict[int, list[int]] = {}
    for i, (l, _) in enumerate(parsed):
        want.setdefault(l, []).append(i)

    def make(sb: StreamBatch):
        def hook(p: Tensor, hook: Any) -> None:
            l = int(hook.name.split(".")[1])
            for i in want[l]:
                out[i] = p[0, parsed[i][1]].detach().float().cpu()

        return [(f"blocks.{l}.attn.hook_pattern", hook) for l in want]

    stream(model, batch, make, batch_size=1)
    return batch.str_tokens[0], out


def attention_viewer(
    model: Model, prompts: str | Sequence[str], heads: Sequence[str], *, prepend_bos: bool = True,
) -> go.Figure:
    """Token-labelled attention heatmaps for chosen heads and prompts, one dropdown entry each."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("Give at least one prompt.")
    figs, names = [], []
    for pi, p in enumerate(prompts):
        toks, pats = attention_patterns(model, p, heads, prepend_bos=prepend_bos)
        for i, hname in enumerate(heads):
            figs.append(attention_heatmap(pats[i], toks, title=f"{hname} on prompt {pi}"))
            names.append(f"{hname} · prompt {pi}")
    fig = go.Figure()
    for i, f in enumerate(figs):
        tr = f.data[0]
        tr.visible = i == 0
        fig.add_trace(tr)
    buttons = []
    for i, n in enumerate(names):
        vis = [j == i for j in range(len(names))]
        buttons.append(dict(label=n, method="update", args=[{"visible": vis}, {"title": f"Attention {n} — {model_name(model)}"}]))
    fig.update_layout(
        title=f"Attention {names[0]} — {model_name(model)}",
        xaxis_title="key token", yaxis_title="query token", yaxis_autorange="reversed",
        updatemenus=[dict(buttons=buttons, direction="down", x=1.0, y=1.15, showactive=True)],
    )
    return fig
