"""Digit-level Greater-Than: a task whose mechanism is position-specific.

``"The war lasted from the year 1755 to the year 17"`` → the next token is the tens digit of the
end year, which must be ≥ the start year's tens digit (Hanna et al. 2023's Greater-Than, adapted
to tokenizers that split numbers into single digits, like SmolLM2's). The answer depends on *one
specific position* — the start year's tens digit, two tokens after the century and one before
the units digit — so a positional circuit must read that position and not its neighbour, which
holds a digit of the same kind. Counterfactual: the tens digit replaced by ``0`` (``1705``):
one token at one position changes, every other token stays. Metric: probability difference
:math:`\\sum_{x>d} p(x) - \\sum_{x<d} p(x)` over the ten digit tokens at the last position.

Schema spans (character spans, the same for clean and counterfactual):
``BOS, prefix, century, tens, units, middle, end``.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from circuits.metrics import Metric, MetricBatch
from circuits.tasks._base import Task
from interp.types import Model

__all__ = ["greater_than"]

PREFIXES = ("The war lasted from the year ", "The expedition lasted from the year ",
            "The reign lasted from the year ", "The drought lasted from the year ")
MIDDLE = " to the year "


def greater_than(model: Model, n: int = 16, *, seed: int = 0, prepend_bos: bool = True) -> Task:
    """Digit Greater-Than task with tens digits 2…8 (see module docstring)."""
    from interp.schema import Schema
    from interp.tokens import tokenize

    tok = model.tokenizer
    digit_ids = []
    for d in range(10):
        ids = tok.encode(str(d), add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError("greater_than needs single-digit tokens (digits split one per token)")
        digit_ids.append(int(ids[0]))
    century = "17"
    rng = random.Random(seed)
    clean, corrupt, spans, answers = [], [], [], []
    for i in range(n):
        prefix = PREFIXES[i % len(PREFIXES)]
        d, u = rng.randint(2, 8), rng.randint(0, 9)
        p = len(prefix)
        spans.append([(0, p), (p, p + 2), (p + 2, p + 3), (p + 3, p + 4),
                      (p + 4, p + 4 + len(MIDDLE)), (p + 4 + len(MIDDLE), p + 6 + len(MIDDLE))])
        clean.append(f"{prefix}{century}{d}{u}{MIDDLE}{century}")
        corrupt.append(f"{prefix}{century}0{u}{MIDDLE}{century}")
        answers.append({"tens": d, "units": u})
    schema = Schema.from_char_spans(["prefix", "century", "tens", "units", "middle", "end"], spans)
    cb = tokenize(model, clean, prepend_bos=prepend_bos)
    xb = tokenize(model, corrupt, prepend_bos=prepend_bos)
    V = int(model.original_model.config.vocab_size) if hasattr(model, "original_model") else int(model.cfg.d_vocab)
    W = torch.zeros(n, V)
    for i, a in enumerate(answers):
        for x in range(10):
            W[i, digit_ids[x]] = 1.0 if x > a["tens"] else (-1.0 if x < a["tens"] else 0.0)

    def fn(logits: torch.Tensor, batch: MetricBatch) -> torch.Tensor:
        last = logits[torch.arange(logits.shape[0], device=logits.device), batch.last]
        pr = torch.softmax(last, -1)
        return (pr * W.to(pr.device)[batch.index]).sum(-1)

    return Task("greater-than", cb, xb, schema, Metric(fn, "digit_prob_diff"), answers,
                dict(seed=seed, n=n, prepend_bos=prepend_bos, counterfactual="tens digit -> 0"))
