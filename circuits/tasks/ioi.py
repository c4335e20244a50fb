"""Indirect object identification (Wang et al. 2022) in both name orders, with schemas.

``"When Mary and John went to the store, John gave a drink to"`` → `` Mary``. ABBA: the indirect
object (IO) comes first; BABA: the subject (S) comes first. The counterfactual is the "ABC"
prompt: the same template with three fresh, distinct names, so no name is repeated and the
IO/S distinction is gone. Metric: logit difference IO − S at the last token. Names, places and
objects are filtered to single tokens (with a leading space) for the model's tokenizer, so clean
and corrupt prompts have equal lengths.

Schema spans (template slots and the literal text between them), e.g. for ABBA:
``BOS, When, IO, and, S1, went to the, PLACE, ",", S2, gave a, OBJECT, to``; with
``order="both"`` the first two names are ``N1``/``N2`` (their role alternates).
"""

from __future__ import annotations

import random
from typing import Any, Literal

from circuits.tasks._base import Task, answer_metric, single_token_words
from interp.types import Model

__all__ = ["ioi", "NAMES", "PLACES", "OBJECTS", "TEMPLATES"]

NAMES = ("Mary John Alice Bob Tom James Michael David Sarah Emma Anna Paul Mark Lisa Kate Jack "
         "Peter Susan Laura George Daniel Rachel Kevin Steven Brian Jessica Amy Chris Eric Jennifer "
         "Andrew Henry Frank Helen Ben Sam Adam Lucy Alex Max Ryan Jane Rose Grace Emily Jason Matt "
         "Tim Dan Joe Luke Kelly Ruth Sophie Oliver Harry Charlie Thomas William Robert Richard "
         "Joseph Charles Patrick Nancy Betty Karen Carol Sandra Linda Barbara Victoria Jacob Ethan "
         "Noah Mia Olivia").split()
PLACES = ("store park school garden house office beach hospital restaurant station library market "
          "church kitchen river bank museum zoo farm").split()
OBJECTS = ("drink ring book gift key letter ball bone kiss pen flower bag hat cake apple phone box "
           "coin card basket").split()

#: templates with slots {A} {B} (the first two names), {S2}, {PLACE}, {OBJECT}
TEMPLATES = (
    "When {A} and {B} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S2} decided to give it to",
    "Then, {A} and {B} went to the {PLACE}. {S2} gave a {OBJECT} to",
)


def ioi(
    model: Model,
    n: int = 32,
    *,
    order: Literal["ABBA", "BABA", "both"] = "both",
    template: int | str = 0,
    seed: int = 0,
    prepend_bos: bool = True,
    metric: Literal["logit_diff", "prob_diff"] = "logit_diff",
) -> Task:
    """IOI task with ``n`` examples (``order="both"`` alternates ABBA and BABA).

    Args:
        template: index into :data:`TEMPLATES` or a template string with the same slots.
        seed: same seed, same prompts.
        prepend_bos: BOS policy (recorded; SmolLM2's logit difference is higher without BOS).
    """
    from interp.schema import Schema
    from interp.tokens import tokenize

    if order not in ("ABBA", "BABA", "both"):
        raise ValueError(f"order must be 'ABBA', 'BABA' or 'both', got {order!r}")
    if n < 1:
        raise ValueError("n must be >= 1")
    tpl = TEMPLATES[template] if isinstance(template, int) else template
    names = single_token_words(model, NAMES)
    places = single_token_words(model, PLACES)
    objects = single_token_words(model, OBJECTS)
    if len(names) < 5 or not places or not objects:
        raise ValueError("too few single-token names/places/objects for this tokenizer")
    a_name, b_name = {"ABBA": ("IO", "S1"), "BABA": ("S1", "IO"), "both": ("N1", "N2")}[order]
    schema = Schema.from_template(tpl.replace("{A}", "{" + a_name + "}").replace("{B}", "{" + b_name + "}"))
    rng = random.Random(seed)
    clean_rows, corrupt_rows, answers = [], [], []
    for i in range(n):
        io, s, c1, c2, c3 = rng.sample(names, 5)
        place, obj = rng.choice(places), rng.choice(objects)
        abba = order == "ABBA" or (order == "both" and i % 2 == 0)
        first, second = (io, s) if abba else (s, io)
        clean_rows.append({a_name: first, b_name: second, "S2": s, "PLACE": place, "OBJECT": obj})
        corrupt_rows.append({a_name: c1, b_name: c2, "S2": c3, "PLACE": place, "OBJECT": obj})
        answers.append({"correct": " " + io, "wrong": " " + s, "order": "ABBA" if abba else "BABA"})
    clean = tokenize(model, schema.render_all(clean_rows), prepend_bos=prepend_bos)
    corrupt = tokenize(model, schema.render_all(corrupt_rows), prepend_bos=prepend_bos)
    met = answer_metric(model, [a["correct"] for a in answers], [a["wrong"] for a in answers], metric)
    return Task(f"ioi-{order.lower()}", clean, corrupt, schema, met, answers,
                dict(order=order, template=tpl, seed=seed, prepend_bos=prepend_bos, n=n,
                     counterfactual="ABC (three fresh names)"))
