"""The :class:`Task` container and helpers shared by the task generators."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from circuits.metrics import Metric, logit_diff, prob_diff
from interp.types import Model

__all__ = ["Task", "single_token_words", "token_id", "answer_metric", "token_batch"]


@dataclass
class Task:
    """Clean/counterfactual prompts with their schema and metric, ready for
    :func:`circuits.attribute` (``attribute(model, task)``).

    Attributes:
        name: task name (recorded in results).
        clean, corrupt: ``interp.TokenBatch`` (right padding, BOS policy recorded).
        schema: ``interp.Schema`` (or applied ``SchemaSpans``) covering every clean and corrupt
            prompt.
        metric: differentiable metric on logits (per example).
        answers: per example, dict of answers (e.g. ``correct``/``wrong`` strings and ids).
        meta: generator parameters (seed, templates, pools, BOS policy, ...).
    """

    name: str
    clean: Any
    corrupt: Any
    schema: Any
    metric: Metric
    answers: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clean.lengths)

    @property
    def prepend_bos(self) -> bool:
        return bool(self.clean.prepend_bos)

    def __repr__(self) -> str:
        names = list(getattr(self.schema, "names", []) or [])
        return f"Task({self.name!r}, n={len(self)}, spans={names}, metric={self.metric.name})"


def token_id(model: Model, text: str, *, what: str = "answer") -> int:
    """The id of ``text`` if it is exactly one token for the model's tokenizer, else ValueError."""
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{what} {text!r} is {len(ids)} tokens for this tokenizer "
                         f"({model.tokenizer.convert_ids_to_tokens(ids)}); answers must be single "
                         f"tokens — pick another word or give the first token explicitly")
    return int(ids[0])


def single_token_words(model: Model, words: Sequence[str], *, prefix: str = " ") -> list[str]:
    """The words whose ``prefix + word`` is a single token for the model's tokenizer."""
    tok = model.tokenizer
    return [w for w in words if len(tok.encode(prefix + w, add_special_tokens=False)) == 1]


def answer_metric(model: Model, correct: Sequence[str], wrong: Sequence[str], kind: str = "logit_diff") -> Metric:
    """Logit/probability difference between single-token answer strings."""
    c = torch.tensor([token_id(model, s, what="correct answer") for s in correct])
    w = torch.tensor([token_id(model, s, what="wrong answer") for s in wrong])
    if kind == "logit_diff":
        return logit_diff(c, w)
    if kind == "prob_diff":
        return prob_diff(c, w)
    raise ValueError(f"metric must be 'logit_diff' or 'prob_diff', got {kind!r}")


def token_batch(model: Model, tokens: Tensor, *, prepend_bos: bool = True) -> Any:
    """A right-padded ``interp.TokenBatch`` for equal-length token rows (token-level tasks).

    ``prompts`` are the decoded rows (they need not re-tokenise to the same ids); offsets are
    zero — apply schemas to such batches as ``SchemaSpans`` built from token positions.
    """
    from interp.tokens import TokenBatch

    n, p = tokens.shape
    tok = model.tokenizer
    return TokenBatch(
        tokens=tokens.clone(), attention_mask=torch.ones_like(tokens),
        position_ids=torch.arange(p).expand(n, p).clone(), lengths=[p] * n,
        offsets=[[(0, 0)] * p for _ in range(n)],
        prompts=[tok.decode(r) for r in tokens.tolist()],
        str_tokens=[tok.convert_ids_to_tokens(r) for r in tokens.tolist()],
        prepend_bos=prepend_bos, padding_side="right")
