"""Shared reducers of :mod:`interp.heads` and :mod:`interp.sinks`: streaming attention statistics.

The forward passes are run by the activation engine (:func:`interp.capture.stream`); the
:class:`PatternAccumulator` reducer hooks ``blocks.{l}.attn.hook_pattern`` and reduces each
``[batch head q k]`` pattern to small per-prompt statistics at once, so no pattern is ever
stored. Prompts are right padded: a valid query ``t < len`` only sees keys ``≤ t``, which are all
real tokens.

Private module (owned by the sinks/heads author); the public API lives in ``interp.heads``,
``interp.sinks`` and ``interp.neurons``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor

from interp.prompts import DEFAULT_PROMPTS
from interp.provenance import model_name
from interp.types import Model
from interp.capture import ActivationStore, StreamBatch

__all__ = [
    "PromptBatch",
    "as_batch",
    "random_like",
    "repeated_random",
    "check_attention_model",
    "n_kv_heads",
    "PatternAccumulator",
    "Source",
    "source_of",
    "store_batch",
]


@dataclass
class PromptBatch:
    """Right-padded tokens with their real lengths and labels (BOS policy recorded)."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    lengths: list[int]
    str_tokens: list[list[str]]
    prepend_bos: bool

    def __len__(self) -> int:
        return len(self.lengths)


def n_kv_heads(model: Model) -> int:
    """KV heads of ``model``, from its family (:func:`interp.families.family_of`)."""
    from interp.families import family_of

    return int(family_of(model).n_kv_heads)


def check_attention_model(model: Model) -> None:
    """Raise a clear error if ``model`` does not expose attention patterns through hooks."""
    if isinstance(model, ActivationStore):
        raise TypeError("This analysis runs the model on inputs of its own (or edits its forward pass), so it "
                        "cannot read an ActivationStore: pass the model. From a store: sink_analysis, "
                        "positional_heads, scan, positional_neurons, rope.frequency_usage, probes.ProbeData.from_store.")
    hook_dict = getattr(model, "hook_dict", None)
    cfg = getattr(model, "cfg", None)
    if hook_dict is None or cfg is None:
        raise TypeError(
            f"Expected a TransformerBridge (from interp.load_model), got {type(model).__name__}."
        )
    missing = [l for l in range(int(cfg.n_layers)) if f"blocks.{l}.attn.hook_pattern" not in hook_dict]
    if missing:
        raise ValueError(
            f"Model {model_name(model)!r} exposes no attention patterns: hook "
            f"'blocks.{missing[0]}.attn.hook_pattern' is missing (layers {missing[:5]}...). "
            "Attention-pattern analyses need a softmax attention model loaded through "
            "interp.load_model (eager attention)."
        )


@dataclass(frozen=True)
class Source:
    """The model facts an analysis needs, from a live model or from an :class:`ActivationStore`
    (its metadata ``store.model[...]``): one implementation for every analysis that reads either.

    ``hooks``: the hook names the source can give (``model.hook_dict`` or ``store.hooks``).
    """

    obj: Any
    from_store: bool
    name: str
    n_layers: int
    n_heads: int
    hooks: Any

    @property
    def n_kv_heads(self) -> int:
        """KV heads of the model's family (:func:`n_kv_heads`): live, or as the store recorded it
        (``store.meta["spec"]``, :func:`interp.spec.model_spec` at capture time)."""
        if self.from_store:
            spec = self.obj.meta.get("spec")
            if not spec:
                raise ValueError("This ActivationStore records no model spec (captured by an older version, or a "
                                 "model family without an adapter): capture it again, or pass the model.")
            return int(spec["n_kv_heads"])
        return n_kv_heads(self.obj)

    def require(self, names: Sequence[str], *, analysis: str, hint: str = "") -> None:
        """Raise a ValueError naming the first hook of ``names`` the source cannot give and, for a
        store, the ``capture(..., hooks=[...])`` call that would record it."""
        missing = [h for h in names if h not in self.hooks]
        if not missing:
            return
        if self.from_store:
            globs = sorted({re.sub(r"^blocks\.\d+\.", "blocks.*.", h) for h in names})
            raise ValueError(
                f"{analysis} needs {missing[0]!r} ({len(missing)} needed hook(s) missing) but the ActivationStore "
                f"did not capture it: capture the store with interp.capture(model, prompts, hooks={globs}), "
                f"{hint + ', ' if hint else ''}or pass the model.")
        raise ValueError(f"Model {self.name!r} has no hook {missing[0]!r}. {hint}".strip())

    def live_only(self, what: str) -> None:
        """Raise a ValueError when ``what`` (which needs forward passes on new inputs, or weights)
        is asked of a store."""
        if self.from_store:
            raise ValueError(f"{what} cannot be computed from an ActivationStore (it holds the activations of "
                             "its own prompts only): pass the model, or leave it off.")

    def batch(self, prompts: Any, *, prepend_bos: bool, min_len: int = 1) -> PromptBatch:
        """The prompts as a right-padded batch: the store's own (``prompts`` must be ``None``) or
        ``prompts`` tokenised by the model (:func:`as_batch`; ``None``:
        :data:`interp.prompts.DEFAULT_PROMPTS`)."""
        if self.from_store:
            if prompts is not None:
                raise ValueError("An ActivationStore already fixes its prompts: pass prompts=None.")
            return store_batch(self.obj, min_len=min_len)
        return as_batch(self.obj, DEFAULT_PROMPTS if prompts is None else prompts, prepend_bos=prepend_bos,
                        min_len=min_len)

    def provenance(self) -> dict[str, Any]:
        """``{"source": store.provenance()}`` for a store (recorded in a result's ``params``), ``{}``
        for a live model (whose results stay as they were)."""
        return {"source": self.obj.provenance()} if self.from_store else {}


def source_of(model: Any) -> Source:
    """:class:`Source` of a live model (TransformerBridge) or an :class:`ActivationStore`."""
    if isinstance(model, ActivationStore):
        m = model.model
        return Source(model, True, str(m["name"]), int(m["n_layers"]), int(m["n_heads"]), set(model.hooks))
    cfg = getattr(model, "cfg", None)
    if cfg is None or getattr(model, "hook_dict", None) is None:
        raise TypeError(f"Expected a TransformerBridge (from interp.load_model) or an ActivationStore, "
                        f"got {type(model).__name__}.")
    return Source(model, False, model_name(model), int(cfg.n_layers), int(cfg.n_heads), model.hook_dict)


def store_batch(store: ActivationStore, *, min_len: int = 1) -> PromptBatch:
    """A store's prompts as a right-padded :class:`PromptBatch` (tokens, lengths, display tokens
    and BOS policy as the store recorded them)."""
    lengths = list(store.lengths)
    short = [i for i, n in enumerate(lengths) if n < min_len]
    if short:
        raise ValueError(f"Prompt {short[0]} of the store has {lengths[short[0]]} tokens (BOS included) but "
                         f"this analysis needs at least {min_len}.")
    toks = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        toks[i, :n] = store.tokens(i)
    mask = (torch.arange(toks.shape[1])[None, :] < torch.tensor(lengths)[:, None]).long()
    return PromptBatch(toks, mask, lengths, store.str_tokens, bool(store.prepend_bos))


def as_batch(model: Model, prompts: Any, *, prepend_bos: bool, min_len: int = 1) -> PromptBatch:
    """Tokenise ``prompts`` (str, list of str, or a ``TokenBatch``) into a right-padded batch."""
    from interp.tokens import TokenBatch, tokenize

    if isinstance(prompts, PromptBatch):
        batch = prompts
    else:
        if isinstance(prompts, TokenBatch):
            tb = prompts
            if tb.padding_side != "right":
                raise ValueError("Pass a right-padded TokenBatch (tokenize(..., padding_side='right')).")
        else:
            tb = tokenize(model, prompts, prepend_bos=prepend_bos, padding_side="right")
        batch = PromptBatch(tb.tokens, tb.attention_mask, list(tb.lengths), tb.str_tokens, tb.prepend_bos)
    short = [i for i, n in enumerate(batch.lengths) if n < min_len]
    if short:
        raise ValueError(
            f"Prompt {short[0]} has {batch.lengths[short[0]]} tokens (BOS included) but this "
            f"analysis needs at least {min_len}: use longer prompts or smaller offsets."
        )
    return batch


def _content_ids(model: Any) -> Tensor:
    tok = model.tokenizer
    special = set(int(i) for i in (tok.all_special_ids or []))
    vocab = min(int(model.cfg.d_vocab), len(tok))
    ids = torch.tensor([i for i in range(vocab) if i not in special], dtype=torch.long)
    if ids.numel() < 2:
        raise ValueError("The tokenizer has fewer than 2 non-special tokens: cannot draw random tokens.")
    return ids


def random_like(model: Model, batch: PromptBatch, *, seed: int) -> PromptBatch:
    """Same lengths and BOS policy, every non-BOS token replaced by a uniform random content token."""
    ids = _content_ids(model)
    g = torch.Generator().manual_seed(seed)
    toks = batch.tokens.detach().cpu().clone()
    draw = ids[torch.randint(0, ids.numel(), toks.shape, generator=g)]
    keep = torch.zeros_like(toks, dtype=torch.bool)
    if batch.prepend_bos:
        keep[:, 0] = True
    mask = batch.attention_mask.detach().cpu().bool()
    toks = torch.where(mask & ~keep, draw, toks)
    return _relabel(model, toks.to(batch.tokens.device), batch)


def repeated_random(model: Model, n: int, seg_len: int, *, prepend_bos: bool, seed: int) -> PromptBatch:
    """``n`` prompts ``[BOS] r r`` with ``r`` a random content sequence of ``seg_len`` tokens."""
    ids = _content_ids(model)
    g = torch.Generator().manual_seed(seed)
    seg = ids[torch.randint(0, ids.numel(), (n, seg_len), generator=g)]
    toks = torch.cat([seg, seg], dim=1)
    if prepend_bos:
        from interp.tokens import bos_token_id

        toks = torch.cat([torch.full((n, 1), bos_token_id(model), dtype=torch.long), toks], dim=1)
    dev = getattr(model.cfg, "device", None) or "cpu"
    mask = torch.ones_like(toks)
    b = PromptBatch(toks, mask, [toks.shape[1]] * n, [], prepend_bos)
    return _relabel(model, toks.to(dev), b)


def _relabel(model: Any, toks: Tensor, like: PromptBatch) -> PromptBatch:
    from interp.tokens import _display

    rows = [toks[i, :n].tolist() for i, n in enumerate(like.lengths)]
    str_tokens = [[_display(t) for t in model.tokenizer.convert_ids_to_tokens(r)] for r in rows]
    return PromptBatch(toks, like.attention_mask.to(toks.device), list(like.lengths), str_tokens,
                       like.prepend_bos)


Hook = tuple[str, Callable[..., Any]]


class PatternAccumulator:
    """Per-prompt reductions of every layer's attention pattern, computed inside the hook.

    For prompt ``b`` of length ``T`` and head ``(l, h)`` with pattern ``A[t, s]`` (rows sum to 1):

    * ``alpha[b, l, h, k] = (1/(T−k)) Σ_{t≥k} A[t, k]`` (Gu et al. 2025); NaN for ``k ≥ T``;
    * ``mul[b, l, h, name] = Σ(A ⊙ P_name)/ΣA`` with TransformerLens ``head_detector`` patterns
      ``P``: previous-token (``s = t−1``), self (``s = t``), first-token (``s = 0``), duplicate-token
      (``s < t``, ``x_s = x_t``) and induction (``1 ≤ s ≤ t``, ``s−1 < t``, ``x_{s−1} = x_t``);
      ``ΣA = T`` since each row sums to 1;
    * ``rel_sum[l, h, Δ]``, ``rel_count[Δ]``: pooled sums of ``A[t, t−Δ]`` over prompts and
      queries ``t ≥ Δ`` (A(Δ) = rel_sum/rel_count).
    """

    NAMES = ("previous_token", "self", "first_token", "duplicate_token", "induction")

    def __init__(self, n_prompts: int, n_layers: int, n_heads: int, max_len: int,
                 keep_alpha: bool = True) -> None:
        self.alpha = torch.full((n_prompts, n_layers, n_heads, max_len), float("nan")) if keep_alpha else None
        self.mul = torch.zeros(n_prompts, n_layers, n_heads, len(self.NAMES))
        self.rel_sum = torch.zeros(n_layers, n_heads, max_len, dtype=torch.float64)
        self.rel_count = torch.zeros(max_len, dtype=torch.float64)
        self._counted: set[int] = set()
        self.n_layers = n_layers

    def hooks(self, sb: StreamBatch) -> list[Hook]:
        """The reducer for :func:`interp.capture.stream` (one ``hook_pattern`` hook per layer)."""
        offset, toks, lengths = sb.offset, sb.tokens, sb.lengths
        b, width = toks.shape
        dev = toks.device
        lens = torch.tensor(lengths, device=dev)
        pos = torch.arange(width, device=dev)
        qv = pos[None, :] < lens[:, None]  # [b, t] valid query
        causal = pos[None, :] <= pos[:, None]  # [t, s]
        same = toks[:, :, None] == toks[:, None, :]  # [b, t, s]
        dup = same & (pos[None, :] < pos[:, None])[None] & qv[:, :, None]
        prev_same = torch.zeros_like(same)
        prev_same[:, :, 1:] = same[:, :, :-1]  # x_{s-1} == x_t
        ind = prev_same & causal[None] & (pos[None, :] >= 1)[None] & qv[:, :, None]
        ind = ind & ((pos[None, :] - 1) < pos[:, None])[None]
        dupf, indf = dup.float(), ind.float()
        rows = lens.float()
        # relative offsets: rel[b,h,t,Δ] = A[b,h,t,t-Δ]
        delta = torch.arange(width, device=dev)
        src = pos[:, None] - delta[None, :]  # [t, Δ]
        rel_ok = (src >= 0)[None] & qv[:, :, None]  # [b, t, Δ]
        idx = src.clamp(min=0)
        key_count = (lens[:, None] - pos[None, :]).clamp(min=0).float()  # [b, k] = T−k
        count_delta = rel_ok.sum(dim=(0, 1)).double().cpu()
        acc = self

        def hook(pattern: Tensor, hook: Any) -> None:
            layer = int(hook.name.split(".")[1])
            A = pattern.detach().float() * qv[:, None, :, None]  # zero padded query rows
            colsum = A.sum(dim=2)  # [b, h, k]
            if acc.alpha is not None:
                alpha = colsum / key_count[:, None, :].clamp(min=1)
                alpha = torch.where((key_count > 0)[:, None, :], alpha, torch.nan)
                acc.alpha[offset:offset + b, layer, :, :width] = alpha.cpu()
            diag_prev = torch.diagonal(A, offset=-1, dim1=-2, dim2=-1).sum(-1)
            diag_self = torch.diagonal(A, dim1=-2, dim2=-1).sum(-1)
            first = colsum[..., 0]
            d = einsum(A, dupf, "batch head query key, batch query key -> batch head")
            i = einsum(A, indf, "batch head query key, batch query key -> batch head")
            scores = torch.stack([diag_prev, diag_self, first, d, i], dim=-1) / rows[:, None, None]
            acc.mul[offset:offset + b, layer] = scores.cpu()
            gi = idx[None, None].expand(b, A.shape[1], width, width)
            rel = torch.gather(A, -1, gi) * rel_ok[:, None].float()
            acc.rel_sum[layer, :, :width] += rel.sum(dim=(0, 2)).double().cpu()
            if layer == 0:
                acc.rel_count[:width] += count_delta
            return None

        return [(f"blocks.{l}.attn.hook_pattern", hook) for l in range(self.n_layers)]

    def mean_scores(self) -> Float[Tensor, "layer head score"]:
        return self.mul.mean(dim=0)

    def rel_curve(self) -> Float[Tensor, "layer head delta"]:
        cnt = self.rel_count.clamp(min=1)
        out = (self.rel_sum / cnt).float()
        out[:, :, self.rel_count == 0] = float("nan")
        return out


def check_eps(eps: float) -> None:
    """Raise a ValueError unless ``eps`` is a valid attention threshold in [0, 1)."""
    if not (0.0 <= eps < 1.0):
        raise ValueError(f"eps must be in [0, 1) (attention is a probability), got {eps}.")
