"""The prompt set of an atlas: clean/counterfactual pairs, metric, query domains.

A built-in circuits task (``"ioi"``, ``"greater-than"``, ``"induction"``), a
:class:`circuits.tasks.Task`, a JSONL pairs file, or — on a zoo toy — the task the toy was
trained on (``"toy"``, the default for toys), with the counterfactual that breaks its planted
mechanism:

* induction toy: ``BOS, noise, A, A`` with ``|A| = 10``; counterfactual: the first copy replaced
  (as in the planted-circuit tests); metric: log-probability of the next token on the second
  copy; counterfactual ablation; EAP-IG (the induction head's saturated softmax makes plain EAP
  under-rank K-composition, see ``tests/test_attribution_planted.py``).
* offset toys: uniform random tokens; metric: log-probability of the token ``offset`` back;
  *mean* ablation (the empty circuit then predicts no particular token, so losing the head's
  offset attention takes the circuit to f ≈ 0).
* backcopy toys: Bigram-Backcopy; metric: log-probability of the next token at trigger
  positions; mean ablation; query domains ``trigger`` / ``non-trigger`` (Guo et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.types import Model


@dataclass
class AtlasTask:
    name: str
    clean: Any  # TokenBatch
    corrupt: Any  # TokenBatch or None (mean ablation)
    metric: Any
    schema: Any
    ablation: str
    granularity: str
    method: str
    domains: dict[str, Tensor] | None = None  # query masks [batch pos]
    focus: Tensor | None = None  # query positions where the mechanism is scored [batch pos]
    offset: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _toy(model: Any, name: str, n: int | None, seed: int) -> AtlasTask:
    from circuits.metrics import logprob
    from circuits.tasks import token_batch
    from interp.zoo import TOY_MODELS, make_batch
    from interp.zoo import tasks as T

    info = TOY_MODELS[name]
    p = dict(info.task_params)
    if info.task == "induction":
        ell = 10
        b = T.induction_batch(n or 8, n_vocab=int(p["n_vocab"]), length=int(p["length"]), min_segment=ell,
                              max_segment=ell, seed=seed + 5)
        s2 = int(b.extra["second_start"][0])
        corrupt = b.tokens.clone()
        corrupt[:, s2 - ell: s2] = (b.tokens[:, s2 - ell: s2] - T.N_SPECIAL + 31) % int(p["n_vocab"]) + T.N_SPECIAL
        return AtlasTask("toy-induction", token_batch(model, b.tokens), token_batch(model, corrupt),
                         logprob(b.targets.clamp(min=0), b.eval_mask), None, "counterfactual", "position",
                         "eap-ig", focus=b.eval_mask,
                         meta=dict(segment=ell, first_copy=[s2 - ell, s2], second_copy=[s2, s2 + ell],
                                   counterfactual="first copy replaced"))
    if info.task == "offset":
        off = int(p["offset"])
        b = T.offset_batch(n or 8, n_vocab=int(p["n_vocab"]), length=int(p["length"]), offset=off, seed=seed + 3)
        return AtlasTask(f"toy-offset (t-{off})", token_batch(model, b.tokens), None,
                         logprob(b.targets.clamp(min=0), b.eval_mask), None, "mean", "position", "eap",
                         focus=b.eval_mask, offset=off, meta=dict(offset=off))
    b = make_batch(name, n or 8, seed=seed + 3)
    trig, big = b.extra["trigger_mask"], b.extra["bigram_mask"]
    return AtlasTask("toy-backcopy", token_batch(model, b.tokens), None,
                     logprob(b.targets.clamp(min=0), trig), None, "mean", "position", "eap-ig",
                     domains={"trigger": trig, "non-trigger": big}, focus=trig,
                     meta=dict(triggers="query holds a trigger token (back-copy x_{t-1})"))


def build_task(model: Model, task: Any, *, model_name: str, n: int | None, pairs: str | None, seed: int,
               prepend_bos: bool) -> AtlasTask:
    """The atlas prompt set from a task name, a ``circuits.tasks.Task`` or a pairs file."""
    from circuits import tasks
    from circuits.registry import NATURAL_LANGUAGE_TASKS, TASKS, builtin_task
    from circuits.tasks import Task
    from interp.zoo import TOY_MODELS

    if isinstance(task, AtlasTask):
        return task
    if isinstance(task, Task):
        gran = "span" if task.schema is not None and task.name != "induction" else "position"
        return AtlasTask(task.name, task.clean, task.corrupt, task.metric, task.schema, "counterfactual",
                         gran, "eap", meta=dict(task.meta))
    if pairs is not None:
        if task is not None:
            raise ValueError("give either a task or a pairs file, not both")
        t = tasks.load_jsonl(pairs, model, prepend_bos=prepend_bos)
        return build_task(model, t, model_name=model_name, n=n, pairs=None, seed=seed, prepend_bos=prepend_bos)
    toy = model_name in TOY_MODELS
    if task is None:
        task = "toy" if toy else "ioi"
    if not isinstance(task, str):
        raise TypeError(f"task must be a task name, a circuits.tasks.Task or None, got {type(task).__name__}")
    if task == "toy":
        if not toy:
            raise ValueError(f"task='toy' is for zoo models; {model_name} is not one (use 'ioi', "
                             "'greater-than', 'induction' or a pairs file)")
        return _toy(model, model_name, n, seed)
    if toy and task in NATURAL_LANGUAGE_TASKS:
        raise ValueError(f"{task} needs a natural-language model; {model_name} is a toy (use task='toy')")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose {', '.join(map(repr, TASKS))}"
                         + (" or 'toy'" if toy else "") + " (or pass pairs=FILE.jsonl)")
    t = builtin_task(task, model, n=n or (16 if task == "induction" else 32), seed=seed, prepend_bos=prepend_bos)
    if task == "induction":
        return AtlasTask(t.name, t.clean, t.corrupt, t.metric, t.schema, "counterfactual", "position", "eap",
                         meta=dict(t.meta))
    return build_task(model, t, model_name=model_name, n=n, pairs=None, seed=seed, prepend_bos=prepend_bos)


def ensure_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(x)
