"""A small IOI task for the circuit benchmarks (fallback when ``circuits.tasks`` has no IOI yet).

Wang et al. (2022) IOI prompts in both name orders under one schema — ``"When {N1} and {N2} went
to the {PLACE}, {S2} gave a {OBJ} to"`` with (N1, N2, S2) = (IO, S, S) for ABBA and (S, IO, S)
for BABA — so one span structure covers every prompt. Counterfactual: the "ABC" distribution
(three fresh names, same places/objects: the indirect object is no longer identifiable).
Metric: logit difference IO − S at the last token. Names, places and objects are kept only if
they are single tokens (with their leading space) for the model's tokenizer.
"""

from __future__ import annotations

import random
from typing import Any

NAMES = ["Mary", "John", "Tom", "James", "Sarah", "Anna", "David", "Paul", "Mark", "Lisa", "Kate",
         "Emma", "Peter", "Jack", "Alice", "Robert", "Michael", "Laura", "Susan", "Daniel", "Steve",
         "Chris", "Adam", "Jane", "Ben", "Sam", "Max", "Joe", "George", "Henry"]
PLACES = ["store", "park", "school", "office", "beach", "market", "house", "garden", "station", "hospital"]
OBJECTS = ["drink", "book", "ball", "ring", "gift", "letter", "key", "bag", "cake", "pen"]
TEMPLATE = "When {N1} and {N2} went to the {PLACE}, {S2} gave a {OBJ} to"


def _single(tok: Any, words: list[str]) -> list[str]:
    return [w for w in words if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]


def ioi_task(model: Any, n: int = 16, seed: int = 0):
    """A :class:`circuits.tasks.Task` with ``n`` IOI prompts (half ABBA, half BABA)."""
    import torch

    from circuits.metrics import logit_diff
    from circuits.tasks import Task
    from interp import tokenize
    from interp.schema import Schema

    tok = model.tokenizer
    names, places, objs = _single(tok, NAMES), _single(tok, PLACES), _single(tok, OBJECTS)
    rng = random.Random(seed)
    clean, corrupt, io, s = [], [], [], []
    for i in range(n):
        a, b, c, d, e = rng.sample(names, 5)
        place, obj = rng.choice(places), rng.choice(objs)
        n1, n2 = (a, b) if i % 2 == 0 else (b, a)  # ABBA / BABA ; IO = a, S = b
        clean.append(TEMPLATE.format(N1=n1, N2=n2, PLACE=place, S2=b, OBJ=obj))
        corrupt.append(TEMPLATE.format(N1=c, N2=d, PLACE=place, S2=e, OBJ=obj))
        io.append(tok(" " + a, add_special_tokens=False)["input_ids"][0])
        s.append(tok(" " + b, add_special_tokens=False)["input_ids"][0])
    cb = tokenize(model, clean, prepend_bos=True)
    xb = tokenize(model, corrupt, prepend_bos=True)
    schema = Schema.from_template(TEMPLATE)
    metric = logit_diff(torch.tensor(io), torch.tensor(s))
    return Task(name="ioi", clean=cb, corrupt=xb, schema=schema, metric=metric,
                answers=[{"correct": i, "wrong": j} for i, j in zip(io, s)],
                meta={"seed": seed, "n": n, "template": TEMPLATE, "counterfactual": "ABC"})


def get_ioi(model: Any, n: int, seed: int):
    """The project's IOI task if ``circuits.tasks`` ships one, else :func:`ioi_task`."""
    import circuits.tasks as T

    fn = getattr(T, "ioi", None)
    if callable(fn):
        try:
            return fn(model, n=n, seed=seed), "circuits.tasks.ioi"
        except TypeError:
            pass
    return ioi_task(model, n=n, seed=seed), "benchmarks/_ioi.py"
