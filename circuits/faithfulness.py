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
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.results import Result

from ._forward import Activations
from ._sparse import SparseMasks
from .circuit import Circuit, concrete_edge_counts
from interp.types import Model

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
                f"(~{self.concrete_edges:.0f} concrete/example), ablation={self.meta.get('ablation')!r}, "
                f"examples={self.per_example.shape[-1]}, {self._bos_model()})")

    def to_frame(self) -> Any:
        """One row per example: ``m_circuit``, ``m_full``, ``m_empty`` (the metric with the circuit,
        the full model, the empty circuit) and ``hard`` (argmax agreement); the summary (f, soft,
        hard, CIs, edges) is in ``df.attrs``."""
        from interp.results import require_pandas

        pe = self.per_example.detach().float()
        df = require_pandas().DataFrame({"example": range(pe.shape[-1]), "m_circuit": pe[0].numpy(),
                                  "m_full": pe[1].numpy(), "m_empty": pe[2].numpy(),
                                  "hard": self.hard_per_example.bool().numpy()})
        df.attrs.update(f=self.f, f_ci=self.f_ci, soft=self.soft, soft_ci=self.soft_ci, hard=self.hard,
                        hard_ci=self.hard_ci, n_edges=self.n_edges, concrete_edges=self.concrete_edges)
        return df


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
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
    keep_cross = rearrange(cr[:, :, :, pi[:, :, None], pi[:, None, :]],
                           "layer head kind b query key -> b layer head kind query key")
    full = pad if protect is None else (pad | protect.to(pad.device))
    if full.any():
        keep = keep | full[:, :, None, None]
        keep_cross = keep_cross | full[:, None, None, None, :, None] | full[:, None, None, None, None, :]
    return keep.contiguous(), keep_cross.contiguous()


# ------------------------------------------------------------------------------------------
# metric
# ------------------------------------------------------------------------------------------
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
        model: a TransformerBridge (or a :class:`~circuits._forward.PatchableModel`).
        clean: prompts, a ``TokenBatch``, a ``[batch pos]`` token tensor, a right-padded
            ``(tokens, attention_mask)`` pair, or a :class:`circuits.tasks.Task` (then
            ``corrupt``, ``metric`` and ``schema`` default to the task's).
        corrupt: the counterfactual prompts (``ablation="counterfactual"``); clean and corrupt
            of different lengths are aligned span by span through ``schema``.
        metric: :class:`~circuits.metrics.Metric` or callable ``f(logits, batch)`` / ``f(logits)``
            returning one value per example.
        ablation: ``"counterfactual"``, ``"mean"`` (position-wise mean over ``ablation_prompts``,
            by default the corrupt prompts, else the clean ones) or ``"zero"``.
        schema: ``interp.Schema`` / ``SchemaSpans`` — per-example spans for span-granularity
            circuits and alignment of counterfactuals; ``span_index`` (``[batch pos]``, right
            padded) gives spans directly.
        include_bos: ablate the BOS position too (default: BOS is never ablated).
        prepend_bos: BOS policy of raw token tensors (TokenBatches carry their own).
        batch_size: examples per patched forward (``keep`` is ``[b pos S R]`` bools).
        max_memory: budget in bytes (or ``"4GiB"``) for one patched forward beyond the weights
            (:func:`circuits.memory.estimate_faithfulness_memory`): the batch size is lowered to
            fit, or a ``MemoryError`` is raised before any run when one example does not fit.
        n_boot, seed: bootstrap resamples and seed of the 95 % CIs.
    """

    def __init__(
        self,
        model: Model,
        clean: Any,
        corrupt: Any = None,
        metric: Callable[..., Any] | None = None,
        *,
        ablation: str = "counterfactual",
        ablation_prompts: Any = None,
        schema: Any = None,
        span_index: Int[Tensor, "batch pos"] | None = None,
        include_bos: bool = False,
        prepend_bos: bool | None = None,
        batch_size: int | None = None,
        n_boot: int = 1000,
        seed: int = 0,
        max_memory: int | str | None = None,
    ) -> None:
        from circuits._inputs import _fit_width, _mean_activations, patchable, prepare
        from circuits.metrics import as_metric
        from circuits.tasks import Task

        task_name = None
        if isinstance(clean, Task):
            task_name = clean.name
            corrupt = clean.corrupt if corrupt is None else corrupt
            metric = clean.metric if metric is None else metric
            schema = clean.schema if schema is None else schema
            clean = clean.clean
        if metric is None:
            raise ValueError("faithfulness needs a metric: a callable on logits returning per-example values")
        if ablation not in ("counterfactual", "mean", "zero"):
            raise ValueError(f"ablation must be 'counterfactual', 'mean' or 'zero', got {ablation!r}")
        if ablation == "counterfactual" and corrupt is None:
            raise ValueError("ablation='counterfactual' needs the corrupt (counterfactual) prompts")
        self.pm = patchable(model)
        self.metric = as_metric(metric)
        self.ablation = ablation
        self.schema, self.span_index = schema, span_index
        self.include_bos = include_bos
        self.n_boot, self.seed = n_boot, seed
        self.task_name = task_name
        if ablation == "mean":
            src = ablation_prompts if ablation_prompts is not None else corrupt
            self.ablation_source = ("ablation_prompts" if ablation_prompts is not None
                                    else "corrupt" if corrupt is not None else "clean")
        else:
            src = corrupt if ablation == "counterfactual" else None
            self.ablation_source = "corrupt" if ablation == "counterfactual" else "none"
        self.data = prepare(self.pm, clean, src, ablation=ablation, granularity="none",
                            schema=schema if ablation == "counterfactual" else None)
        cb = self.data.clean
        self.clean = cb.source
        self.tokens, self.mask = cb.tokens, cb.mask.long()
        if cb.prepend_bos is None and prepend_bos is None and include_bos is False:
            prepend_bos = False
        self.prepend_bos = bool(cb.prepend_bos if cb.prepend_bos is not None else prepend_bos)
        B, T = self.tokens.shape
        self.batch_size = batch_size or min(B, 16)
        if max_memory is not None:
            from circuits.memory import fit_faithfulness_batch

            self.batch_size = fit_faithfulness_batch(self.pm, T, self.batch_size, max_memory)
        self.last = torch.as_tensor(cb.lengths, dtype=torch.long) - 1
        self.protect = torch.zeros(B, T, dtype=torch.bool)
        if self.prepend_bos and not include_bos:
            self.protect[:, 0] = True  # right-padded, own coordinates: BOS is column 0
        self._mean = None
        if ablation == "mean":
            xb = self.data.corrupt if self.data.corrupt is not None else cb
            self._mean = _mean_activations(self.pm, xb, self.batch_size)
        self._fit_width = _fit_width
        self._acts: dict[int, Activations] = {}
        self._clean_logits: dict[int, Tensor] = {}
        # full and empty runs
        self.m_full, last_full = self._run_all(None)
        self.argmax_full = last_full.argmax(-1)
        self.m_empty, _ = self._run_all("empty")

    # ---------------------------------------------------------------- internals
    def _chunks(self) -> list[tuple[slice, int]]:
        """Chunks of examples and their width (longest example in the chunk)."""
        B = len(self.tokens)
        out = []
        for i in range(0, B, self.batch_size):
            sl = slice(i, min(B, i + self.batch_size))
            out.append((sl, int(self.mask[sl].sum(1).max())))
        return out

    def _ablated(self, sl: slice, w: int) -> Activations:
        from circuits._inputs import _realign_rope

        key = sl.start
        if key not in self._acts:
            if self.ablation == "counterfactual":
                xb, pmap = self.data.corrupt, self.data.position_map
                wx = int(xb.mask[sl].sum(1).max())
                ax = self._record(xb.tokens[sl, :wx], xb.mask[sl, :wx])
                src = pmap[sl, :w].clamp(max=wx - 1).to(self.pm.device)
                # as in attribution: aligned counterfactual q/k re-rotated to the clean positions
                self._acts[key] = _realign_rope(self.pm, ax.align(src), src)
            elif self.ablation == "mean":
                self._acts[key] = self._fit_width(self._mean, w)
            else:
                self._acts[key] = self._record(self.tokens[sl][:1, :w], self.mask[sl][:1, :w]).zeros_like()
        return self._acts[key]

    def _record(self, tokens: Tensor, mask: Tensor) -> Activations:
        """Ablation source without attention patterns (the patched forward does not read them;
        ``[b L H T T]`` would dominate memory at long context)."""
        dev = self.pm.device
        with torch.no_grad():
            return self.pm.forward(tokens.to(dev), mask.to(dev), record=True,
                                   record_pattern=False, need_logits=False)["activations"]

    def _run_all(self, circuit: Any) -> tuple[Tensor, Tensor]:
        """Run every chunk (``circuit``: a Circuit, ``"empty"``, ``None`` = unpatched, or a
        ``(keep, keep_cross)`` pair of full-batch masks); returns per-example metric values
        ``[batch]`` and last-token logits ``[batch vocab]``."""
        from circuits.metrics import MetricBatch

        metric_vals, last_logits = [], []
        dev = self.pm.device
        for sl, w in self._chunks():
            tok, mask = self.tokens[sl, :w].to(dev), self.mask[sl, :w].to(dev)
            if circuit is None:
                logits = self.pm.run(tok, mask)
                if self.metric.needs_clean:
                    self._clean_logits[sl.start] = logits
            else:
                if isinstance(circuit, tuple):  # explicit dense masks
                    keep, keep_cross = circuit[0][sl, :w], circuit[1][sl, ..., :w, :w]
                    logits = self.pm.run(tok, mask, ablated=self._ablated(sl, w), keep=keep.to(dev),
                                         keep_cross=keep_cross.to(dev))
                else:
                    logits = self.pm.run(tok, mask, ablated=self._ablated(sl, w),
                                         masks=self._sparse_masks(circuit, sl, w))
            idx = torch.arange(sl.start, sl.stop, device=dev)
            mb = MetricBatch.from_mask(mask, idx, self._clean_logits.get(sl.start))
            vals = self.metric(logits, mb).detach().float()
            if vals.dim() != 1 or vals.shape[0] != logits.shape[0]:
                raise ValueError(f"metric {self.metric.name!r} returned shape {tuple(vals.shape)}; "
                                 f"faithfulness needs one value per example ([{logits.shape[0]}])")
            metric_vals.append(vals.cpu())
            rows = torch.arange(logits.shape[0], device=logits.device)
            last_logits.append(logits[rows, self.last[sl].to(logits.device)].float().cpu())
        return torch.cat(metric_vals), torch.cat(last_logits)

    def _sparse_masks(self, circuit: Circuit | str, sl: slice, w: int) -> SparseMasks:
        """The circuit's masks for examples ``sl`` (width ``w``), stored sparsely: the abstract
        circuit and each token's abstract position (:class:`circuits._sparse.SparseMasks`)."""
        prot = self.protect[sl, :w]
        if circuit == "empty":
            S, R = len(self.pm.senders), len(self.pm.receivers)
            L, H = self.pm.n_layers, self.pm.n_heads
            pi = torch.where(self.mask[sl, :w].cpu().bool(), 0, -1)
            return SparseMasks.build(torch.zeros(1, S, R, dtype=torch.bool),
                                     torch.zeros(L, H, 3, 1, 1, dtype=torch.bool), pi, prot)
        assert isinstance(circuit, Circuit)
        pi = self.position_index(circuit)[sl, :w]
        return SparseMasks.build(circuit.same_pos, circuit.cross_index, pi, prot,
                                 cross_shape=circuit.cross_shape)

    def _masks(self, circuit: Circuit | str, sl: slice, w: int) -> tuple[Tensor, Tensor]:
        b = sl.stop - sl.start
        S, R = len(self.pm.senders), len(self.pm.receivers)
        L, H = self.pm.n_layers, self.pm.n_heads
        prot = self.protect[sl, :w]
        if circuit == "empty":
            keep = prot[:, :, None, None].expand(b, w, S, R).clone()
            keep_cross = (prot[:, None, None, None, :, None] | prot[:, None, None, None, None, :]).expand(
                b, L, H, 3, w, w).clone()
            return keep, keep_cross
        assert isinstance(circuit, Circuit)
        pi = self.position_index(circuit)[sl, :w]
        return expand_masks(circuit, pi, protect=prot)

    def position_index(self, circuit: Circuit) -> Int[Tensor, "batch pos"]:
        """Abstract position of every (right-padded) token of the dataset for ``circuit``."""
        key = (circuit.granularity, tuple(map(str, circuit.positions)))
        cache = self.__dict__.setdefault("_pi_cache", {})
        if key not in cache:
            span_index = self.span_index
            if circuit.granularity == "span" and span_index is None:
                if self.schema is None:
                    raise ValueError("a span-granularity circuit needs the examples' spans: pass "
                                     "schema=... (or a Task) or span_index=[batch pos]")
                from circuits.attribution import prepare

                d = prepare(self.pm, self.clean if self.clean is not None else (self.tokens, self.mask),
                            None, ablation="zero", granularity="span",
                            schema=self.schema[0] if isinstance(self.schema, tuple) else self.schema)
                span_index = _map_span_ids(d.group, d.span_names or [], [str(p) for p in circuit.positions])
            cache[key] = position_index(circuit, self.mask.cpu(), span_index=span_index, batch=self.clean)
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
        concrete = float(concrete_edge_counts(circuit.same_pos, circuit.cross_index, pi).mean())
        return self._result(m_c, hard, circuit.n_edges, concrete, dict(circuit.meta))

    def full_model_result(self, circuit: Circuit) -> Faithfulness:
        """Result for a circuit holding every edge of its graph without running it: keeping every
        edge is the clean run exactly (tested), so M(C) = M(N), f = 1, hard = 1."""
        pi = self.position_index(circuit)
        concrete = float(concrete_edge_counts(circuit.same_pos, circuit.cross_index, pi).mean())
        hard = torch.ones(len(self.m_full), dtype=torch.bool)
        return self._result(self.m_full.clone(), hard, circuit.n_edges, concrete, dict(circuit.meta))

    def evaluate_masks(self, keep: Bool[Tensor, "batch pos sender receiver"],
                       keep_cross: Bool[Tensor, "batch layer head kind qpos kpos"]) -> Faithfulness:
        """Faithfulness of explicit concrete masks (right-padded coordinates; BOS protection is
        *not* added)."""
        m_c, last = self._run_all((keep, keep_cross))
        hard = last.argmax(-1) == self.argmax_full
        n = float(keep.sum() + keep_cross.sum()) / len(self.tokens)
        return self._result(m_c, hard, -1, n, {})

    def logits(self, circuit: Circuit) -> Float[Tensor, "batch pos vocab"]:
        """Patched logits of a circuit (chunks concatenated, padded to the full width with 0)."""
        self._check(circuit)
        B, T = self.tokens.shape
        out = None
        for sl, w in self._chunks():
            dev = self.pm.device
            lg = self.pm.run(self.tokens[sl, :w].to(dev), self.mask[sl, :w].to(dev),
                             ablated=self._ablated(sl, w), masks=self._sparse_masks(circuit, sl, w))
            if out is None:
                out = lg.new_zeros(B, T, lg.shape[-1])
            out[sl, :w] = lg
        assert out is not None
        return out

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
            "metric": self.metric.name, "task": self.task_name,
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


def faithfulness(
    model: Model,
    circuit: Circuit,
    clean: Any,
    corrupt: Any = None,
    metric: Callable[..., Any] | None = None,
    *,
    ablation: str = "counterfactual",
    ablation_prompts: Any = None,
    schema: Any = None,
    span_index: Int[Tensor, "batch pos"] | None = None,
    include_bos: bool = False,
    prepend_bos: bool | None = None,
    batch_size: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    max_memory: int | str | None = None,
) -> Faithfulness:
    """Faithfulness of ``circuit`` by real patching (see the module docstring for formulas).

    Every edge outside the circuit — same-position and crossing attention edges — is fed the
    ablated sender output (``ablation="counterfactual" | "mean" | "zero"``); BOS is never
    ablated unless ``include_bos``. Returns :class:`Faithfulness` with soft M(C)/M(N),
    normalised f = (M(C) − M(∅))/(M(N) − M(∅)) and hard (argmax agreement at the last token),
    each with a seeded 95 % bootstrap CI over examples. ``clean`` may be a
    :class:`circuits.tasks.Task`. For many circuits on one dataset use
    :class:`FaithfulnessEvaluator` (or :func:`circuits.curves.faithfulness_curve`).
    """
    ev = FaithfulnessEvaluator(model, clean, corrupt, metric, ablation=ablation,
                               ablation_prompts=ablation_prompts, schema=schema, span_index=span_index,
                               include_bos=include_bos, prepend_bos=prepend_bos, batch_size=batch_size,
                               n_boot=n_boot, seed=seed, max_memory=max_memory)
    return ev(circuit)
