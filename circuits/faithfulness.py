"""Faithfulness of a circuit by intervention: run the model with every edge outside it ablated.

For a circuit C (a set of abstract edges, see :class:`~circuits.circuit.Circuit`), every concrete
edge outside C — same-position edges *and* crossing attention edges — takes the ablated sender
output (Haklay et al. 2025; MIB, Mueller et al. 2025):

.. math:: x_r[t] = \\sum_s \\mathrm{keep}[t,s,r]\\, z_s[t] + (1-\\mathrm{keep}[t,s,r])\\, z^*_s[t]

with :math:`z^*` the counterfactual run, the mean over an ablation split, or zero. The abstract
circuit is expanded into concrete per-example masks: at position granularity token column ``t``
is position ``t``; at span granularity every token of span ``s`` of example ``b`` (through the
schema's per-example spans) inherits the span's edges, and a crossing span edge covers every
causal pair ``(t ∈ s1, t' ∈ s2, t' ≤ t)``; at granularity ``"none"`` every position inherits the
single abstract position. BOS is never ablated unless ``include_bos=True``.

Reported (means over examples, with seeded bootstrap CIs over examples):

* soft faithfulness :math:`M(C)/M(N)`;
* normalised faithfulness :math:`f = (M(C) - M(\\varnothing)) / (M(N) - M(\\varnothing))`
  (MIB), with N the full model and ∅ every edge ablated;
* hard faithfulness: the circuit's argmax equals the full model's at each example's last token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.results import Result

from ._forward import Activations, PatchableModel
from .circuit import Circuit, concrete_edge_counts

__all__ = ["Faithfulness", "FaithfulnessEvaluator", "faithfulness", "expand_masks", "position_index"]


@dataclass
class Faithfulness(Result):
    """Faithfulness of one circuit.

    Attributes:
        f: normalised faithfulness (M(C) − M(∅)) / (M(N) − M(∅)) of the example means.
        soft: M(C) / M(N).
        hard: share of examples whose circuit argmax (last token) equals the full model's.
        f_ci, soft_ci, hard_ci: 95 % bootstrap intervals over examples (seeded).
        m_circuit, m_full, m_empty: metric means.
        per_example: ``[3 batch]`` metric of circuit, full model, empty circuit per example.
        hard_per_example: ``[batch]`` argmax agreement.
        n_edges: abstract edges of the circuit; concrete_edges: average concrete edges per example.
        meta: ablation, include_bos, prepend_bos, granularity, n_boot, seed, model, …
    """

    f: float
    soft: float
    hard: float
    f_ci: tuple[float, float]
    soft_ci: tuple[float, float]
    hard_ci: tuple[float, float]
    m_circuit: float
    m_full: float
    m_empty: float
    per_example: Float[Tensor, "3 batch"]
    hard_per_example: Bool[Tensor, " batch"]
    n_edges: int
    concrete_edges: float
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Faithfulness(f={self.f:.3f} [{self.f_ci[0]:.3f}, {self.f_ci[1]:.3f}], "
                f"soft={self.soft:.3f}, hard={self.hard:.3f}, edges={self.n_edges} "
                f"(~{self.concrete_edges:.0f} concrete/example), ablation={self.meta.get('ablation')!r})")


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
def _as_batch(model: Any, x: Any, prepend_bos: bool | None) -> tuple[Tensor, Tensor, bool | None, Any]:
    """(tokens, attention_mask, prepend_bos, original) from a TokenBatch, tensor or strings."""
    if hasattr(x, "tokens") and hasattr(x, "attention_mask"):
        return x.tokens, x.attention_mask, getattr(x, "prepend_bos", prepend_bos), x
    if isinstance(x, Tensor):
        if x.dim() != 2:
            raise ValueError(f"token tensor must be [batch pos], got shape {tuple(x.shape)}")
        return x, torch.ones_like(x), prepend_bos, x
    if isinstance(x, str) or (isinstance(x, Sequence) and all(isinstance(s, str) for s in x)):
        from interp.tokens import tokenize

        b = tokenize(model, x, prepend_bos=True if prepend_bos is None else prepend_bos)
        return b.tokens, b.attention_mask, b.prepend_bos, b
    raise TypeError(f"expected a TokenBatch, a [batch pos] token tensor or a list of prompts, got {type(x).__name__}")


def _last_index(mask: Tensor) -> Tensor:
    """Column of each example's last real token (right or left padding)."""
    cols = torch.arange(mask.shape[1], device=mask.device)
    return (mask.bool() * (cols + 1)).argmax(-1)


def _bos_columns(mask: Tensor) -> Tensor:
    """Column of each example's first real token."""
    return mask.bool().long().argmax(-1)


def position_index(
    circuit: Circuit,
    attention_mask: Int[Tensor, "batch tok"],
    *,
    schema: Any = None,
    span_index: Int[Tensor, "batch tok"] | None = None,
    batch: Any = None,
) -> Int[Tensor, "batch tok"]:
    """Abstract position of every token column (``-1`` on padding).

    * granularity ``"none"``: 0 on every real token;
    * ``"position"``: column ``t`` ↦ index of ``t`` in ``circuit.positions`` (error if absent);
    * ``"span"``: ``span_index`` if given, else the schema's per-example spans (``schema`` or
      the batch's ``.schema`` / ``.spans``), mapped to the circuit's span names.
    """
    mask = attention_mask.bool()
    B, T = mask.shape
    gran = circuit.granularity
    if gran == "none" or list(circuit.positions) == ["all"]:
        return torch.where(mask, 0, -1)
    if gran == "position":
        lut = {}
        for i, p in enumerate(circuit.positions):
            try:  # token positions are ints or labels like "3:Mary"
                lut[int(str(p).split(":")[0])] = i
            except (TypeError, ValueError):
                raise ValueError(f"position-granularity circuit has position {p!r}: expected an int "
                                 "or a 't:token' label") from None
        out = torch.full((B, T), -1, dtype=torch.long)
        for t in range(T):
            if t in lut:
                out[:, t] = lut[t]
        missing = mask & (out < 0)
        if missing.any():
            b, t = missing.nonzero()[0].tolist()
            raise ValueError(f"token column {t} of example {b} has no position in the circuit "
                             f"(positions {circuit.positions[:5]}…); evaluate on prompts no longer "
                             "than those the graph was built on, or use span granularity")
        return torch.where(mask, out, -1)
    # span granularity
    if span_index is None:
        span_index = _span_index_from_schema(circuit, mask, schema, batch)
    span_index = span_index.to(torch.long).cpu()
    if span_index.shape != (B, T):
        raise ValueError(f"span_index must be [batch tok] = {(B, T)}, got {tuple(span_index.shape)}")
    bad = mask & (span_index < 0)
    if bad.any():
        b, t = bad.nonzero()[0].tolist()
        raise ValueError(f"token {t} of example {b} belongs to no span of the schema")
    return torch.where(mask, span_index, -1)


def _span_index_from_schema(circuit: Circuit, mask: Tensor, schema: Any, batch: Any) -> Tensor:
    """Per-token span index from a :class:`~interp.schema.Schema` (applied to the batch), its
    :class:`~interp.schema.SchemaSpans`, a ``[batch tok]`` tensor, or per-example lists of
    ``(start, end)`` ranges / ``{name: (start, end)}`` dicts; mapped to the circuit's span names."""
    names = [str(p) for p in circuit.positions]
    B, T = mask.shape
    src = schema
    if src is None and batch is not None:
        for attr in ("spans", "schema_spans", "schema"):
            if getattr(batch, attr, None) is not None:
                src = getattr(batch, attr)
                break
    if src is None:
        raise ValueError("a span-granularity circuit needs the examples' spans: pass schema=... "
                         "(a Schema or its SchemaSpans) or span_index=[batch tok]")
    if isinstance(src, Tensor):
        return src
    if hasattr(src, "apply") and not hasattr(src, "span_index"):  # a Schema: apply it to the batch
        if batch is None or not hasattr(batch, "tokens"):
            raise ValueError("to apply a Schema the clean prompts must be a TokenBatch (or pass "
                             "schema=schema.apply(batch))")
        src = src.apply(batch)
    if hasattr(src, "span_index") and hasattr(src, "names"):  # SchemaSpans
        side = getattr(batch, "padding_side", "right") if batch is not None else "right"
        ids = src.span_index(padding_side=side, width=T)
        return _map_span_ids(ids, list(src.names), names)
    if isinstance(src, (list, tuple)):
        out = torch.full((B, T), -1, dtype=torch.long)
        lut = {n: i for i, n in enumerate(names)}
        for b, spans in enumerate(src):
            items = list(spans.items()) if isinstance(spans, dict) else list(zip(names, spans))
            for name, (start, end) in items:
                if str(name) not in lut:
                    raise KeyError(f"span {name!r} of example {b} is not a position of the circuit {names}")
                out[b, int(start): int(end)] = lut[str(name)]
        return out
    raise TypeError(f"cannot read per-example spans from {type(src).__name__}; pass span_index=[batch tok]")


def _map_span_ids(ids: Tensor, schema_names: Sequence[str], names: list[str]) -> Tensor:
    if list(map(str, schema_names)) == names:
        return ids
    missing = [str(n) for n in schema_names if str(n) not in names]
    if missing:
        raise KeyError(f"schema spans {missing} are not positions of the circuit {names}")
    lut = torch.tensor([names.index(str(n)) for n in schema_names] + [-1])
    return lut[ids.long()]  # -1 (padding) picks the trailing -1


def expand_masks(
    circuit: Circuit,
    pos_index: Int[Tensor, "batch tok"],
    *,
    protect: Bool[Tensor, "batch tok"] | None = None,
) -> tuple[Bool[Tensor, "batch tok sender receiver"], Bool[Tensor, "batch layer head kind qtok ktok"]]:
    """Concrete ``keep`` / ``keep_cross`` masks of a circuit for a batch.

    ``keep[b, t, s, r] = same_pos[pos_index[b, t], s, r]`` and
    ``keep_cross[b, l, h, k, t, t'] = cross[l, h, k, pos_index[b, t], pos_index[b, t']]``;
    padding (``pos_index < 0``) and ``protect``-ed tokens (BOS) keep every edge (and every
    crossing edge whose query or key is protected).
    """
    B, T = pos_index.shape
    pad = pos_index < 0
    pi = pos_index.clamp(min=0)
    keep = circuit.same_pos[pi]  # [B T S R]
    cr = circuit.cross  # [L H 3 P P]
    keep_cross = cr[:, :, :, pi[:, :, None], pi[:, None, :]]  # [L H 3 B T T]
    keep_cross = keep_cross.permute(3, 0, 1, 2, 4, 5)
    full = pad if protect is None else (pad | protect.to(pad.device))
    if full.any():
        keep = keep | full[:, :, None, None]
        keep_cross = keep_cross | full[:, None, None, None, :, None] | full[:, None, None, None, None, :]
    return keep.contiguous(), keep_cross.contiguous()


# ------------------------------------------------------------------------------------------
# metric
# ------------------------------------------------------------------------------------------
def _metric_values(metric: Callable[..., Any], logits: Tensor, idx: Tensor, batch: Any) -> Tensor:
    """Per-example metric values ``[batch]``: call ``metric(logits)`` (or with the batch)."""
    fn = getattr(metric, "per_example", None)
    if callable(fn):
        out = fn(logits) if batch is None else _call(fn, logits, batch)
    else:
        out = _call(metric, logits, batch)
    if not isinstance(out, Tensor):
        out = torch.as_tensor(out, dtype=torch.float32)
    out = out.detach().float()
    if out.dim() == 0:
        raise ValueError("the metric returned a scalar; faithfulness needs per-example values "
                         "(return a [batch] tensor, e.g. reduction='none')")
    if out.shape[0] != logits.shape[0]:
        raise ValueError(f"metric returned shape {tuple(out.shape)} for a batch of {logits.shape[0]}")
    return out.reshape(out.shape[0], -1).mean(-1)


def _call(fn: Callable[..., Any], logits: Tensor, batch: Any) -> Any:
    for kwargs in ({"reduction": "none"}, {"reduce": False}, {}):
        try:
            return fn(logits, **kwargs)
        except TypeError:
            continue
    return fn(logits)


def _bootstrap(stat: Callable[[np.ndarray], float], n: int, n_boot: int, seed: int) -> tuple[float, float]:
    if n < 2 or n_boot <= 0:
        v = stat(np.arange(n))
        return (v, v)
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (float(lo), float(hi))


# ------------------------------------------------------------------------------------------
# evaluator
# ------------------------------------------------------------------------------------------
class FaithfulnessEvaluator:
    """Faithfulness of many circuits on one dataset: the full run, the empty run and the ablated
    activations are computed once, then each circuit costs one patched forward pass.

    Args:
        model: a TransformerBridge (or a ready :class:`~circuits._forward.PatchableModel`).
        clean, corrupt: TokenBatch / ``[batch pos]`` tokens / prompts; ``corrupt`` is the
            counterfactual (needed for ``ablation="counterfactual"``).
        metric: callable on logits ``[batch pos vocab]`` returning per-example values (an object
            with ``per_example(logits)`` is used as such).
        ablation: ``"counterfactual"``, ``"mean"`` (position-wise mean over ``ablation_prompts``,
            default the corrupt prompts, else the clean ones) or ``"zero"``.
        position_map: ``[batch pos]`` counterfactual position of each clean position when the
            lengths differ (e.g. from the schema), passed to ``Activations.align``.
        schema / span_index: per-example spans for span-granularity circuits.
        include_bos: ablate the BOS position too (default: BOS never ablated).
        batch_size: examples per patched forward (memory: ``keep`` is ``[b pos S R]`` bools).
        n_boot, seed: bootstrap resamples and seed for the CIs.
    """

    def __init__(
        self,
        model: Any,
        clean: Any,
        corrupt: Any = None,
        metric: Callable[..., Any] | None = None,
        *,
        ablation: str = "counterfactual",
        ablation_prompts: Any = None,
        position_map: Int[Tensor, "batch pos"] | None = None,
        schema: Any = None,
        span_index: Int[Tensor, "batch pos"] | None = None,
        include_bos: bool = False,
        prepend_bos: bool | None = None,
        batch_size: int | None = None,
        n_boot: int = 1000,
        seed: int = 0,
    ) -> None:
        if metric is None:
            raise ValueError("faithfulness needs a metric: a callable on logits returning per-example values")
        if ablation not in ("counterfactual", "mean", "zero"):
            raise ValueError(f"ablation must be 'counterfactual', 'mean' or 'zero', got {ablation!r}")
        self.pm = model if isinstance(model, PatchableModel) else PatchableModel(model)
        bridge = self.pm.bridge
        self.metric = metric
        self.tokens, self.mask, pb, self.clean = _as_batch(bridge, clean, prepend_bos)
        self.mask = self.mask.long()
        self.prepend_bos = bool(pb) if pb is not None else False
        self.ablation = ablation
        self.schema, self.span_index = schema, span_index
        self.include_bos = include_bos
        self.batch_size = batch_size or max(1, min(len(self.tokens), 16))
        self.n_boot, self.seed = n_boot, seed
        B, T = self.tokens.shape
        self.last = _last_index(self.mask)
        self.protect = torch.zeros(B, T, dtype=torch.bool)
        if self.prepend_bos and not include_bos:
            self.protect[torch.arange(B), _bos_columns(self.mask)] = True
        source = "corrupt"
        if ablation == "counterfactual":
            if corrupt is None:
                raise ValueError("ablation='counterfactual' needs the corrupt (counterfactual) prompts")
            ct, cm, _, _ = _as_batch(bridge, corrupt, prepend_bos)
            acts = self.pm.activations(ct, cm)
            if position_map is not None:
                acts = acts.align(position_map)
            elif ct.shape != self.tokens.shape:
                raise ValueError(f"clean tokens {tuple(self.tokens.shape)} and counterfactual tokens "
                                 f"{tuple(ct.shape)} differ in shape: pass position_map=[batch pos] "
                                 "(e.g. from the task schema) to align them")
        elif ablation == "mean":
            src = ablation_prompts if ablation_prompts is not None else (corrupt if corrupt is not None else clean)
            source = "ablation_prompts" if ablation_prompts is not None else ("corrupt" if corrupt is not None else "clean")
            at, am, _, _ = _as_batch(bridge, src, prepend_bos)
            acts = self.pm.activations(at, am).mean()
            acts = _fit_positions(acts, T)
        else:
            source = "none"
            acts = self.pm.activations(self.tokens[:1], self.mask[:1]).zeros_like()
        self.acts = acts
        self.ablation_source = source
        # full and empty runs
        self.m_full, last_full = self._run_all(None)
        self.argmax_full = last_full.argmax(-1)
        self.m_empty, _ = self._run_all("empty")

    # ---------------------------------------------------------------- internals
    def _chunks(self) -> list[slice]:
        B = len(self.tokens)
        return [slice(i, min(B, i + self.batch_size)) for i in range(0, B, self.batch_size)]

    def _run_all(self, circuit: Any) -> tuple[Tensor, Tensor]:
        """Run every chunk (``circuit``: a Circuit, ``"empty"``, ``None`` = unpatched, or a
        ``(keep, keep_cross)`` pair of full-batch masks); returns per-example metric values
        ``[batch]`` and last-token logits ``[batch vocab]``."""
        metric_vals, last_logits = [], []
        for sl in self._chunks():
            tok, mask = self.tokens[sl], self.mask[sl]
            if circuit is None:
                logits = self.pm.run(tok, mask)
            else:
                if isinstance(circuit, tuple):
                    keep, keep_cross = circuit[0][sl], circuit[1][sl]
                else:
                    keep, keep_cross = self._masks(circuit, sl)
                logits = self.pm.run(tok, mask, ablated=self.acts.select(sl), keep=keep,
                                     keep_cross=keep_cross)
            metric_vals.append(_metric_values(self.metric, logits, self.last[sl], None))
            rows = torch.arange(logits.shape[0], device=logits.device)
            last_logits.append(logits[rows, self.last[sl].to(logits.device)].float().cpu())
        return torch.cat(metric_vals).cpu(), torch.cat(last_logits)

    def _masks(self, circuit: Circuit | str, sl: slice) -> tuple[Tensor, Tensor]:
        b = sl.stop - sl.start
        T = self.tokens.shape[1]
        S, R = len(self.pm.senders), len(self.pm.receivers)
        L, H = self.pm.n_layers, self.pm.n_heads
        if circuit == "empty":
            keep = torch.zeros(b, T, S, R, dtype=torch.bool)
            keep_cross = torch.zeros(b, L, H, 3, T, T, dtype=torch.bool)
            prot = self.protect[sl]
            keep |= prot[:, :, None, None]
            keep_cross |= prot[:, None, None, None, :, None] | prot[:, None, None, None, None, :]
            return keep, keep_cross
        assert isinstance(circuit, Circuit)
        pi = self.position_index(circuit)[sl]
        return expand_masks(circuit, pi, protect=self.protect[sl])

    def position_index(self, circuit: Circuit) -> Tensor:
        key = (circuit.granularity, tuple(map(str, circuit.positions)))
        cache = self.__dict__.setdefault("_pi_cache", {})
        if key not in cache:
            cache[key] = position_index(circuit, self.mask.cpu(), schema=self.schema,
                                        span_index=self.span_index, batch=self.clean)
        return cache[key]

    def _check(self, circuit: Circuit) -> None:
        if circuit.senders != self.pm.senders or circuit.receivers != self.pm.receivers:
            raise ValueError("the circuit's sender/receiver names do not match this model's graph "
                             f"({len(circuit.senders)}/{len(circuit.receivers)} vs "
                             f"{len(self.pm.senders)}/{len(self.pm.receivers)}): was it selected "
                             "from an attribution graph of this model?")

    # ---------------------------------------------------------------- public
    def __call__(self, circuit: Circuit) -> Faithfulness:
        """Faithfulness of ``circuit`` (one patched forward pass over the dataset)."""
        self._check(circuit)
        m_c, last = self._run_all(circuit)
        hard = last.argmax(-1) == self.argmax_full
        pi = self.position_index(circuit)
        concrete = float(concrete_edge_counts(circuit.same_pos, circuit.cross, pi).mean())
        return self._result(m_c, hard, circuit.n_edges, concrete, dict(circuit.meta))

    def evaluate_masks(self, keep: Bool[Tensor, "batch pos sender receiver"],
                       keep_cross: Bool[Tensor, "batch layer head kind qpos kpos"]) -> Faithfulness:
        """Faithfulness of explicit concrete masks (BOS protection is *not* added)."""
        m_c, last = self._run_all((keep, keep_cross))
        hard = last.argmax(-1) == self.argmax_full
        n = float(keep.sum() + keep_cross.sum()) / len(self.tokens)
        return self._result(m_c, hard, -1, n, {})

    def logits(self, circuit: Circuit) -> Float[Tensor, "batch pos vocab"]:
        """Full patched logits of a circuit (all chunks concatenated; for inspection/tests)."""
        self._check(circuit)
        out = []
        for sl in self._chunks():
            keep, keep_cross = self._masks(circuit, sl)
            out.append(self.pm.run(self.tokens[sl], self.mask[sl], ablated=self.acts.select(sl),
                                   keep=keep, keep_cross=keep_cross))
        return torch.cat(out)

    def _result(self, m_c: Tensor, hard: Tensor, n_edges: int, concrete: float,
                cmeta: dict[str, Any]) -> Faithfulness:
        mN, mE = self.m_full.double().numpy(), self.m_empty.double().numpy()
        mC = m_c.double().numpy()
        n = len(mC)

        def f_stat(i: np.ndarray) -> float:
            den = mN[i].mean() - mE[i].mean()
            return float((mC[i].mean() - mE[i].mean()) / den) if den != 0 else float("nan")

        def soft_stat(i: np.ndarray) -> float:
            den = mN[i].mean()
            return float(mC[i].mean() / den) if den != 0 else float("nan")

        h = hard.double().numpy()
        all_i = np.arange(n)
        meta = {
            "ablation": self.ablation, "ablation_source": self.ablation_source,
            "include_bos": self.include_bos, "prepend_bos": self.prepend_bos,
            "granularity": cmeta.get("granularity"), "method": cmeta.get("method"),
            "n_examples": n, "n_boot": self.n_boot, "seed": self.seed, "model": self.pm.model_name,
        }
        return Faithfulness(
            f=f_stat(all_i), soft=soft_stat(all_i), hard=float(h.mean()),
            f_ci=_bootstrap(f_stat, n, self.n_boot, self.seed),
            soft_ci=_bootstrap(soft_stat, n, self.n_boot, self.seed),
            hard_ci=_bootstrap(lambda i: float(h[i].mean()), n, self.n_boot, self.seed),
            m_circuit=float(mC.mean()), m_full=float(mN.mean()), m_empty=float(mE.mean()),
            per_example=torch.stack([m_c.float(), self.m_full.float(), self.m_empty.float()]),
            hard_per_example=hard.bool(), n_edges=n_edges, concrete_edges=concrete, meta=meta)


def _fit_positions(acts: Activations, T: int) -> Activations:
    """Truncate or zero-pad (position-wise mean) activations to ``T`` positions."""
    P = acts.n_pos
    if P == T:
        return acts
    if P > T:
        return acts._map(lambda n, t: t[:, :T] if n in ("senders", "attention_mask")
                         else (t[..., :T, :T] if n == "pattern" else t[:, :, :T]))
    raise ValueError(f"mean ablation: the ablation prompts have {P} positions but the clean batch "
                     f"has {T}; use ablation prompts at least as long as the clean ones")


def faithfulness(
    model: Any,
    circuit: Circuit,
    clean: Any,
    corrupt: Any = None,
    metric: Callable[..., Any] | None = None,
    *,
    ablation: str = "counterfactual",
    ablation_prompts: Any = None,
    schema: Any = None,
    span_index: Int[Tensor, "batch pos"] | None = None,
    position_map: Int[Tensor, "batch pos"] | None = None,
    include_bos: bool = False,
    prepend_bos: bool | None = None,
    batch_size: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Faithfulness:
    """Faithfulness of ``circuit`` by real patching (see the module docstring for formulas).

    Every edge outside the circuit — same-position and crossing attention edges — is fed the
    ablated sender output (``ablation="counterfactual" | "mean" | "zero"``); BOS is never
    ablated unless ``include_bos``. Returns :class:`Faithfulness` with soft M(C)/M(N),
    normalised f = (M(C) − M(∅))/(M(N) − M(∅)) and hard (argmax agreement at the last token),
    each with a seeded 95 % bootstrap CI over examples. For many circuits on one dataset use
    :class:`FaithfulnessEvaluator` (or :func:`circuits.curves.faithfulness_curve`).
    """
    ev = FaithfulnessEvaluator(model, clean, corrupt, metric, ablation=ablation,
                               ablation_prompts=ablation_prompts, schema=schema, span_index=span_index,
                               position_map=position_map, include_bos=include_bos,
                               prepend_bos=prepend_bos, batch_size=batch_size, n_boot=n_boot, seed=seed)
    return ev(circuit)
