"""Tasks shipped as data + schema + metric.

* :func:`ioi` — indirect object identification, ABBA/BABA, ABC counterfactuals, logit diff;
* :func:`induction` — repeated random tokens, log-prob of the second copy;
* :func:`greater_than` — digit Greater-Than, a position-specific task (tens digit → 0);
* :func:`load_jsonl` — your own clean/counterfactual pairs with template slots.

Each returns a :class:`Task`; ``circuits.attribute(model, task, granularity="span")`` uses its
corrupt prompts, metric and schema.
"""

from __future__ import annotations

from circuits.tasks._base import Task, single_token_words, token_batch
from circuits.tasks.greater_than import greater_than
from circuits.tasks.induction import induction
from circuits.tasks.ioi import ioi
from circuits.tasks.jsonl import load_jsonl

__all__ = ["Task", "ioi", "induction", "greater_than", "load_jsonl", "single_token_words",
           "token_batch"]
