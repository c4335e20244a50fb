"""Induction on repeated random tokens (Olsson et al. 2022).

Clean: ``BOS, A, A`` with ``A`` a random sequence of ``seq_len`` distinct tokens. Counterfactual:
``BOS, B, A`` with ``B`` fresh tokens disjoint from ``A`` — the first copy is gone, so the second
copy cannot be predicted by induction. Metric: mean log-probability of the next token of the
second copy (positions ``seq_len+1 … 2·seq_len−1`` predict ``A[1:]``). Schema spans
``BOS, first, second`` (token-level, built as ``SchemaSpans``).
"""

from __future__ import annotations

from typing import Any

import torch

from circuits.metrics import logprob
from circuits.tasks._base import Task, token_batch
from interp.types import Model

__all__ = ["induction"]


def induction(
    model: Model,
    n: int = 16,
    *,
    seq_len: int = 10,
    seed: int = 0,
    token_range: tuple[int, int] | None = None,
) -> Task:
    """Repeated-random-token induction task (see module docstring).

    Args:
        token_range: ids ``[low, high)`` to draw from (default: 1000…min(vocab, 20000) for real
            vocabularies, the non-special ids of a toy vocabulary otherwise).
    """
    from interp.schema import SchemaSpans
    from interp.tokens import bos_token_id

    V = int(model.original_model.config.vocab_size) if hasattr(model, "original_model") else int(model.cfg.d_vocab)
    if token_range is None:
        token_range = (1000, min(V, 20000)) if V > 5000 else (3, V)
    lo, hi = token_range
    if hi - lo < 2 * seq_len:
        raise ValueError(f"token_range {token_range} has fewer than 2·seq_len = {2 * seq_len} ids")
    g = torch.Generator().manual_seed(seed)
    bos = bos_token_id(model)
    clean = torch.empty(n, 1 + 2 * seq_len, dtype=torch.long)
    corrupt = torch.empty_like(clean)
    for i in range(n):
        perm = torch.randperm(hi - lo, generator=g)[: 2 * seq_len] + lo
        a, b = perm[:seq_len], perm[seq_len:]
        clean[i] = torch.cat([torch.tensor([bos]), a, a])
        corrupt[i] = torch.cat([torch.tensor([bos]), b, a])
    P = clean.shape[1]
    targets = torch.zeros(n, P, dtype=torch.long)
    targets[:, :-1] = clean[:, 1:]
    weights = torch.zeros(n, P, dtype=torch.bool)
    weights[:, seq_len + 1: P - 1] = True
    cb, xb = token_batch(model, clean), token_batch(model, corrupt)
    spans_rows = [[(0, 1), (1, 1 + seq_len), (1 + seq_len, P)]] * n

    def spans(batch: Any) -> SchemaSpans:
        return SchemaSpans(names=["BOS", "first", "second"], spans=[list(r) for r in spans_rows],
                           lengths=[P] * n, prepend_bos=True, prompts=list(batch.prompts),
                           str_tokens=[list(s) for s in batch.str_tokens],
                           schema={"type": "token_spans", "names": ["first", "second"]})

    return Task("induction", cb, xb, (spans(cb), spans(xb)), logprob(targets, weights),
                [{"targets": targets[i].tolist()} for i in range(n)],
                dict(seq_len=seq_len, seed=seed, token_range=list(token_range), n=n,
                     counterfactual="first copy replaced by fresh tokens"))
