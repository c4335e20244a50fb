"""Seeded synthetic task generators for the toy-model zoo (public API).

Every generator returns a :class:`TaskBatch` whose ``tokens`` already start with BOS (id 0) at
position 0, so the model sees exactly what ``model.to_tokens(batch.texts())`` (or
``interp.tokenize(model, batch.texts(), prepend_bos=True)``) produces. Content tokens are named
``t0 … t{V-1}`` and have ids ``N_SPECIAL + i``.

Conventions (0-indexed positions, BOS at 0):

* ``targets[b, t]`` is the label of the model output at position ``t`` (``-100`` = no loss).
  For next-token tasks ``targets[b, t] = tokens[b, t + 1]``.
* ``eval_mask[b, t]`` marks the query positions where the planted mechanism is scored.

Tasks
-----
* :func:`induction_batch` — noise, then a segment ``A`` of distinct tokens, then ``A`` again
  (segment length varies per example, so no fixed offset solves it). Predictable positions: the
  second copy of ``A`` except its last token, where ``x_{t+1} = x_{t-ℓ+1}`` (ℓ = segment length).
  This is the classic induction setting (Olsson et al. 2022, "In-context learning and induction
  heads").
* :func:`backcopy_batch` — Bigram-Backcopy (Guo et al. 2024, "Active-dormant attention heads"):
  ``x1 ~ π`` restricted to non-triggers, then ``x_t = x_{t-2}`` if ``x_{t-1}`` is a trigger, else
  ``x_t ~ P(· | x_{t-1})``. The triggers are the ``k`` tokens with the largest stationary mass.
* :func:`offset_batch` — uniform random tokens; the output at position ``t`` must be the token at
  ``t - offset`` (default 3): a pure fixed-offset copy task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

BOS_ID = 0
PAD_ID = 1
UNK_ID = 2
SPECIAL_TOKENS = ("<bos>", "<pad>", "<unk>")
N_SPECIAL = len(SPECIAL_TOKENS)
IGNORE = -100

__all__ = [
    "BOS_ID", "PAD_ID", "UNK_ID", "N_SPECIAL", "IGNORE", "SPECIAL_TOKENS",
    "TaskBatch", "Bigram", "make_bigram", "induction_batch", "backcopy_batch", "offset_batch",
    "token_names", "decode",
]


def token_names(n_tokens: int) -> list[str]:
    """Vocabulary in id order: special tokens then ``t0 … t{n_tokens-1}``."""
    return list(SPECIAL_TOKENS) + [f"t{i}" for i in range(n_tokens)]


def decode(tokens: Int[Tensor, " pos"]) -> str:
    """Text of one row, BOS and padding dropped: ``"t3 t17 t5"`` (tokenizes back to the row)."""
    return " ".join(f"t{int(i) - N_SPECIAL}" for i in tokens.tolist() if int(i) >= N_SPECIAL)


@dataclass
class TaskBatch:
    """A batch of a synthetic task. ``tokens[:, 0]`` is BOS (id 0).

    Attributes:
        tokens: input ids, BOS first.
        targets: label of the output at each position (``-100`` = no label).
        eval_mask: query positions where the mechanism is scored.
        task: task name; ``params``: generator arguments (for the manifest).
        extra: task-specific tensors (e.g. ``segment_len`` for induction,
            ``trigger_mask`` / ``bigram_mask`` for backcopy).
    """

    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    eval_mask: Bool[Tensor, "batch pos"]
    task: str
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Tensor] = field(default_factory=dict)

    def texts(self) -> list[str]:
        """Rows as text without BOS (``interp.tokenize(..., prepend_bos=True)`` restores it)."""
        return [decode(row) for row in self.tokens]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def _check_positive(**kw: int) -> None:
    for k, v in kw.items():
        if v <= 0:
            raise ValueError(f"{k} must be positive, got {v}")


def induction_batch(
    n: int,
    *,
    n_vocab: int = 64,
    length: int = 40,
    min_segment: int = 6,
    max_segment: int = 16,
    seed: int = 0,
) -> TaskBatch:
    """Repeated-segment induction data.

    Layout per row (``length`` content tokens after BOS):
    ``BOS, noise[length - 2ℓ], A[ℓ], A[ℓ]`` with ℓ ~ U{min_segment … max_segment}, ``A`` drawn
    without replacement and the noise drawn from the tokens not in ``A`` (so the only earlier
    occurrence of a second-copy token is its first copy). For a query at second-copy index
    ``i < ℓ-1`` (position ``t``) the answer ``x_{t+1}`` equals the token after the earlier copy
    of ``x_t`` at position ``t - ℓ``: the induction rule.

    ``extra["segment_len"]``: ℓ per row; ``extra["second_start"]``: position of ``A``'s second copy.
    """
    _check_positive(n=n, n_vocab=n_vocab, length=length)
    if not 2 <= min_segment <= max_segment or 2 * max_segment > length or max_segment > n_vocab:
        raise ValueError(
            f"need 2 <= min_segment <= max_segment, 2*max_segment <= length and max_segment <= "
            f"n_vocab; got {min_segment=}, {max_segment=}, {length=}, {n_vocab=}"
        )
    g = _gen(seed)
    T = length + 1
    tokens = torch.empty(n, T, dtype=torch.long)
    tokens[:, 0] = BOS_ID
    seg = torch.randint(min_segment, max_segment + 1, (n,), generator=g)
    second = torch.empty(n, dtype=torch.long)
    for b in range(n):
        ell = int(seg[b])
        perm = torch.randperm(n_vocab, generator=g)
        a, rest = perm[:ell], perm[ell:]
        n_noise = length - 2 * ell
        noise = rest[torch.randint(0, rest.numel(), (n_noise,), generator=g)]
        row = torch.cat([noise, a, a]) + N_SPECIAL
        tokens[b, 1:] = row
        second[b] = 1 + n_noise + ell
    targets = torch.full_like(tokens, IGNORE)
    targets[:, :-1] = tokens[:, 1:]
    pos = torch.arange(T)
    eval_mask = (pos[None] >= second[:, None]) & (pos[None] < T - 1)
    return TaskBatch(
        tokens, targets, eval_mask, "induction",
        dict(n_vocab=n_vocab, length=length, min_segment=min_segment, max_segment=max_segment,
             seed=seed),
        dict(segment_len=seg, second_start=second),
    )


@dataclass
class Bigram:
    """A seeded bigram language: transition matrix ``P[i, j] = P(x_t = j | x_{t-1} = i)``,
    its stationary distribution ``pi`` and the trigger tokens (content indices, not ids)."""

    P: Float[Tensor, "vocab vocab"]
    pi: Float[Tensor, " vocab"]
    triggers: Int[Tensor, " n_triggers"]
    seed: int
    concentration: float

    @property
    def n_vocab(self) -> int:
        return int(self.P.shape[0])


def make_bigram(n_vocab: int = 64, *, n_triggers: int = 3, concentration: float = 0.3,
                seed: int = 0) -> Bigram:
    """Random sparse-ish bigram chain: rows ~ Dirichlet(concentration); triggers = the
    ``n_triggers`` tokens with the largest stationary probability (Guo et al. 2024 use the most
    frequent tokens as triggers)."""
    _check_positive(n_vocab=n_vocab, n_triggers=n_triggers)
    if n_triggers >= n_vocab:
        raise ValueError(f"n_triggers ({n_triggers}) must be < n_vocab ({n_vocab})")
    g = _gen(seed)
    gam = torch._standard_gamma(torch.full((n_vocab, n_vocab), float(concentration),
                                           dtype=torch.float64), generator=g)
    P = gam / gam.sum(-1, keepdim=True)
    pi = torch.full((n_vocab,), 1.0 / n_vocab, dtype=torch.float64)
    for _ in range(2000):
        pi = pi @ P
    triggers = torch.sort(torch.argsort(pi, descending=True)[:n_triggers]).values
    return Bigram(P.float(), pi.float(), triggers, seed, concentration)


def backcopy_batch(n: int, *, bigram: Bigram | None = None, length: int = 48,
                   seed: int = 0) -> TaskBatch:
    """Bigram-Backcopy sequences (Guo et al. 2024).

    ``x_1 ~ π`` restricted to non-triggers; for ``t ≥ 2``: ``x_t = x_{t-2}`` if ``x_{t-1}`` is a
    trigger, else ``x_t ~ P(· | x_{t-1})``. Next-token targets everywhere.

    ``eval_mask`` = ``extra["trigger_mask"]``: query positions ``t ≥ 2`` holding a trigger (the
    answer ``x_{t+1} = x_{t-1}`` is deterministic: back-copy). ``extra["bigram_mask"]``: the other
    content positions ``1 ≤ t < T-1`` (answer sampled from ``P(· | x_t)``); ``extra["bayes"]``:
    the Bayes-optimal argmax id at every position (back-copy answer or ``argmax P(·|x_t)``).
    """
    _check_positive(n=n, length=length)
    bg = bigram if bigram is not None else make_bigram()
    V = bg.n_vocab
    g = _gen(seed)
    is_trig = torch.zeros(V, dtype=torch.bool)
    is_trig[bg.triggers] = True
    T = length + 1
    x = torch.empty(n, length, dtype=torch.long)
    p0 = bg.pi.clone()
    p0[is_trig] = 0
    x[:, 0] = torch.multinomial(p0 / p0.sum(), n, replacement=True, generator=g)
    for t in range(1, length):
        prev = x[:, t - 1]
        nxt = torch.multinomial(bg.P[prev], 1, generator=g).squeeze(1)
        if t >= 2:
            nxt = torch.where(is_trig[prev], x[:, t - 2], nxt)
        x[:, t] = nxt
    tokens = torch.cat([torch.full((n, 1), BOS_ID, dtype=torch.long), x + N_SPECIAL], dim=1)
    targets = torch.full_like(tokens, IGNORE)
    targets[:, :-1] = tokens[:, 1:]
    content = tokens - N_SPECIAL
    pos = torch.arange(T)[None]
    trig_here = torch.zeros_like(tokens, dtype=torch.bool)
    trig_here[:, 1:] = is_trig[content[:, 1:]]
    trigger_mask = trig_here & (pos >= 2) & (pos < T - 1)
    bigram_mask = ~trig_here & (pos >= 1) & (pos < T - 1)
    bayes = torch.full_like(tokens, IGNORE)
    bayes[:, 1:] = bg.P.argmax(-1)[content[:, 1:]] + N_SPECIAL
    bayes[:, 2:] = torch.where(trig_here[:, 2:], tokens[:, 1:-1], bayes[:, 2:])
    bayes[:, -1] = IGNORE
    return TaskBatch(
        tokens, targets, trigger_mask, "backcopy",
        dict(n_vocab=V, length=length, n_triggers=int(bg.triggers.numel()),
             concentration=bg.concentration, bigram_seed=bg.seed, seed=seed),
        dict(trigger_mask=trigger_mask, bigram_mask=bigram_mask, bayes=bayes),
    )


def offset_batch(n: int, *, n_vocab: int = 32, length: int = 32, offset: int = 3,
                 seed: int = 0) -> TaskBatch:
    """Fixed-offset copy: uniform random tokens, ``targets[t] = tokens[t - offset]`` for every
    content position with ``t - offset ≥ 1`` (BOS is never a target). ``eval_mask`` = those
    positions."""
    _check_positive(n=n, n_vocab=n_vocab, length=length, offset=offset)
    if offset >= length:
        raise ValueError(f"offset ({offset}) must be < length ({length})")
    g = _gen(seed)
    T = length + 1
    tokens = torch.empty(n, T, dtype=torch.long)
    tokens[:, 0] = BOS_ID
    tokens[:, 1:] = torch.randint(0, n_vocab, (n, length), generator=g) + N_SPECIAL
    targets = torch.full_like(tokens, IGNORE)
    targets[:, offset + 1:] = tokens[:, 1:T - offset]
    eval_mask = targets != IGNORE
    return TaskBatch(tokens, targets, eval_mask, "offset",
                     dict(n_vocab=n_vocab, length=length, offset=offset, seed=seed))
