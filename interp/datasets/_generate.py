"""Generator of the bundled prompt and task sets (``python -m interp.datasets._generate``).

Everything here is written for this project: small word lists and templates combined by a seeded
``random.Random``, so the same seed writes byte-identical files. Nothing is downloaded. The token
lengths recorded in the manifest are measured with SmolLM2's tokenizer when it is available
offline (``--tokenizer DIR`` with a ``tokenizer.json``); generation itself does not depend on a
tokenizer (lengths are targeted in characters with per-domain characters-per-token estimates).

Outputs (in ``interp/datasets/data/``):

* ``prompts.jsonl``: 280 prompts, 56 in each of five domains (prose, dialogue, code, math,
  lists), target lengths log-spaced from 20 to ~1,400 tokens (the two longest of every domain
  are ≥ 1,024 SmolLM2 tokens);
* ``ioi_t0.jsonl``, ``ioi_t1.jsonl``, ``ioi_t2.jsonl``: IOI clean/counterfactual pairs, one file
  per template of ``circuits.tasks.ioi.TEMPLATES`` (one template = one schema), 64 examples each,
  ABBA and BABA alternating, ABC counterfactuals (Wang et al. 2022, arXiv:2211.00593);
* ``greater_than.jsonl``: digit Greater-Than prompts (Hanna et al. 2023, arXiv:2305.00586);
* ``induction.jsonl``: repeated segments of random common words (Olsson et al. 2022,
  arXiv:2209.11895), the natural-text induction control;
* ``MANIFEST.json``: per file its description, generator, seed, licence, count, domains, token
  lengths and sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

SEED = 20261202
DATA = Path(__file__).parent / "data"
LICENCE = "MIT (same as this package); written and generated in-project, no third-party text"
N_PER_DOMAIN = 56
MIN_TOKENS, MAX_TOKENS = 20, 1400
# characters per SmolLM2 token, measured on a first draft of each domain
CHARS_PER_TOKEN = {"prose": 4.6, "dialogue": 3.6, "code": 3.4, "math": 1.2, "lists": 2.8}

NAMES = ("Mary John Alice Bob Tom James Michael David Sarah Emma Anna Paul Mark Lisa Kate Jack Peter "
         "Susan Laura George Daniel Rachel Kevin Brian Amy Chris Eric Andrew Henry Frank Helen Ben Sam "
         "Adam Lucy Alex Max Ryan Jane Rose Grace Emily Jason Matt Tim Dan Joe Luke Kelly Ruth Oliver "
         "Harry Charlie Thomas William Robert Richard Joseph Charles Nancy Karen Linda Jacob Noah").split()
PLACES = "store park school garden house office beach hospital station library market church kitchen river bank museum farm".split()
OBJECTS = "drink ring book gift key letter ball pen flower bag hat cake apple phone box coin card basket".split()
IOI_TEMPLATES = (
    "When {N1} and {N2} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "When {N1} and {N2} got a {OBJECT} at the {PLACE}, {S2} decided to give it to",
    "Then, {N1} and {N2} went to the {PLACE}. {S2} gave a {OBJECT} to",
)

_ADJ = ("old quiet small bright narrow busy cold warm distant green heavy careful patient tired "
        "curious silent crowded empty ancient modern").split()
_NOUN = ("village river teacher engineer garden library bridge market doctor harbour forest "
         "kitchen letter train storm festival mountain painter museum lantern orchard clock "
         "window farmer student island road factory choir").split()
_VERB_T = ("visited repaired painted watched crossed described opened cleaned measured followed "
           "studied carried built found remembered").split()
_VERB_I = "waited laughed listened travelled slept worked returned hesitated".split()
_TIME = ("in the morning", "after the storm", "every autumn", "before dawn", "on Sunday",
         "late at night", "during the war", "in the spring", "after dinner", "at noon")
_CONN = ("Later,", "Meanwhile,", "Even so,", "For a while,", "In the end,", "At first,", "Afterwards,",
         "Of course,", "Still,", "Then")
_TOPIC = ("the weather", "the harvest", "the new bridge", "the old clock", "the train timetable",
          "the library books", "the school play", "the broken fence", "the river level", "the market prices")


def _np(r: random.Random) -> str:
    return f"the {r.choice(_ADJ)} {r.choice(_NOUN)}"


def _sentence(r: random.Random) -> str:
    k = r.randrange(7)
    if k == 0:
        s = f"{_np(r)} {r.choice(_VERB_T)} {_np(r)} {r.choice(_TIME)}."
    elif k == 1:
        s = f"{r.choice(_CONN)} {r.choice(NAMES)} {r.choice(_VERB_I)} near {_np(r)}."
    elif k == 2:
        s = f"{r.choice(NAMES)} {r.choice(_VERB_T)} {_np(r)}, and {r.choice(NAMES)} {r.choice(_VERB_I)}."
    elif k == 3:
        s = f"Nobody knew why {_np(r)} had {r.choice(_VERB_I)} {r.choice(_TIME)}."
    elif k == 4:
        s = f"{r.choice(_CONN)} people talked about {r.choice(_TOPIC)} while {_np(r)} {r.choice(_VERB_I)}."
    elif k == 5:
        s = f"It was {r.choice(_ADJ)}, and {_np(r)} seemed {r.choice(_ADJ)} {r.choice(_TIME)}."
    else:
        s = f"{r.choice(NAMES)} said that {_np(r)} {r.choice(_VERB_T)} {_np(r)}."
    s = s[0].upper() + s[1:]
    return s


def _prose(r: random.Random, chars: int) -> str:
    paras, cur, n = [], [], 0
    while n < chars:
        s = _sentence(r)
        cur.append(s)
        n += len(s) + 1
        if len(cur) >= r.randint(3, 6):
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n\n".join(paras)


_Q = ("Did you see {np} {time}?", "What happened to {np}?", "Can you help me with {topic}?",
      "Why is {np} so {adj}?", "Where did {name} put the {noun}?", "Are you coming to the {noun} later?")
_A = ("Yes, {name} {verb} it {time}.", "I think {np} {vi}.", "Not really, it was {adj}.",
      "Ask {name}, they know about {topic}.", "Sure, I will bring the {noun}.", "No idea, maybe {np} {vi}.")


def _fill(t: str, r: random.Random) -> str:
    return t.format(np=_np(r), time=r.choice(_TIME), topic=r.choice(_TOPIC), adj=r.choice(_ADJ),
                    name=r.choice(NAMES), noun=r.choice(_NOUN), verb=r.choice(_VERB_T), vi=r.choice(_VERB_I))


def _dialogue(r: random.Random, chars: int) -> str:
    a, b = r.sample(NAMES, 2)
    lines, n, i = [], 0, 0
    while n < chars:
        who = a if i % 2 == 0 else b
        line = f"{who}: " + _fill(r.choice(_Q if i % 2 == 0 else _A), r)
        lines.append(line)
        n += len(line) + 1
        i += 1
    return "\n".join(lines)


_IDS = "total count items values result index name data buffer node key value score row col acc".split()
_FUNCS = "compute merge parse update render normalize collect filter_rows count_words find_max".split()


def _code_block(r: random.Random) -> str:
    f, a, b, c = r.choice(_FUNCS), *r.sample(_IDS, 3)
    k = r.randrange(5)
    if k == 0:
        return (f"def {f}({a}):\n    {b} = 0\n    for {c} in {a}:\n        {b} += {c}\n"
                f"    return {b}\n")
    if k == 1:
        return (f"def {f}({a}, {b}={r.randint(1, 9)}):\n    if not {a}:\n        return None\n"
                f"    return [{c} * {b} for {c} in {a} if {c} > {r.randint(0, 5)}]\n")
    if k == 2:
        cls = r.choice(_NOUN).capitalize()
        return (f"class {cls}:\n    def __init__(self, {a}):\n        self.{a} = {a}\n        self.{b} = []\n\n"
                f"    def add(self, {c}):\n        self.{b}.append({c})\n        return len(self.{b})\n")
    if k == 3:
        return (f"for {c} in range({r.randint(2, 20)}):\n    if {c} % {r.randint(2, 5)} == 0:\n"
                f"        print({c}, {f}([{c}]))\n")
    return (f"{a} = {{'{r.choice(_NOUN)}': {r.randint(0, 99)}, '{r.choice(_NOUN)}': {r.randint(0, 99)}}}\n"
            f"{b} = sorted({a}.items(), key=lambda kv: kv[1])\nassert len({b}) == len({a})\n")


def _code(r: random.Random, chars: int) -> str:
    parts, n = ["import os\nimport sys\n"], 0
    while n < chars:
        blk = _code_block(r)
        parts.append(blk)
        n += len(blk) + 1
    return "\n".join(parts)


def _math_line(r: random.Random) -> str:
    k = r.randrange(5)
    a, b = r.randint(2, 999), r.randint(2, 999)
    if k == 0:
        return f"{a} + {b} = {a + b}"
    if k == 1:
        return f"{a} * {b % 50 + 2} = {a * (b % 50 + 2)}"
    if k == 2:
        return f"{max(a, b)} - {min(a, b)} = {max(a, b) - min(a, b)}"
    if k == 3:
        s, d = r.randint(1, 50), r.randint(2, 9)
        return ", ".join(str(s + d * i) for i in range(8))
    return f"The year {r.randint(1600, 2025)} came {r.randint(2, 90)} years after {r.randint(1500, 1599)}."


def _math(r: random.Random, chars: int) -> str:
    lines, n = [], 0
    while n < chars:
        ln = _math_line(r)
        lines.append(ln)
        n += len(ln) + 1
    return "\n".join(lines)


def _lists(r: random.Random, chars: int) -> str:
    k = r.randrange(4)
    lines: list[str] = []
    n = 0
    if k == 0:  # numbered list
        i = 1
        while n < chars:
            ln = f"{i}. {r.choice(_ADJ)} {r.choice(_NOUN)}"
            lines.append(ln)
            n += len(ln) + 1
            i += 1
    elif k == 1:  # a phrase repeated with small changes
        base = f"the {r.choice(_NOUN)} is {r.choice(_ADJ)}"
        while n < chars:
            ln = f"- {base}" if r.random() < 0.7 else f"- {_np(r)} is {r.choice(_ADJ)}"
            lines.append(ln)
            n += len(ln) + 1
    elif k == 2:  # csv rows
        lines.append("name,place,count")
        while n < chars:
            ln = f"{r.choice(NAMES)},{r.choice(PLACES)},{r.randint(0, 500)}"
            lines.append(ln)
            n += len(ln) + 1
    else:  # comma-separated repetition of a short list
        words = r.sample(_NOUN, 5)
        while n < chars:
            ln = ", ".join(words) + ";"
            lines.append(ln)
            n += len(ln) + 1
    return "\n".join(lines)


GENERATORS = {"prose": _prose, "dialogue": _dialogue, "code": _code, "math": _math, "lists": _lists}


def target_lengths(n: int = N_PER_DOMAIN) -> list[int]:
    """Target token lengths: log-spaced from 20 to 1,400, biased to short prompts (u^1.3)."""
    return [round(MIN_TOKENS * (MAX_TOKENS / MIN_TOKENS) ** ((j / (n - 1)) ** 1.3)) for j in range(n)]


def make_prompts(seed: int = SEED) -> list[dict[str, Any]]:
    rows = []
    for d_i, (domain, gen) in enumerate(GENERATORS.items()):
        r = random.Random(seed * 31 + d_i)
        for j, tgt in enumerate(target_lengths()):
            text = gen(r, int(tgt * CHARS_PER_TOKEN[domain]))
            rows.append({"id": f"{domain}-{j:03d}", "text": text, "domain": domain, "target_tokens": tgt})
    return rows


def make_ioi(template: int, n: int = 64, seed: int = SEED) -> list[dict[str, Any]]:
    """IOI pairs for one template: ABBA on even, BABA on odd rows; ABC counterfactual."""
    r = random.Random(seed + 100 + template)
    rows: list[dict[str, Any]] = [{"template": IOI_TEMPLATES[template]}]
    for i in range(n):
        io, s, c1, c2, c3 = r.sample(NAMES, 5)
        place, obj = r.choice(PLACES), r.choice(OBJECTS)
        abba = i % 2 == 0
        n1, n2 = (io, s) if abba else (s, io)
        rows.append({"clean": {"N1": n1, "N2": n2, "S2": s, "PLACE": place, "OBJECT": obj},
                     "corrupt": {"N1": c1, "N2": c2, "S2": c3, "PLACE": place, "OBJECT": obj},
                     "correct": " " + io, "wrong": " " + s, "order": "ABBA" if abba else "BABA"})
    return rows


GT_PREFIXES = ("The war lasted from the year ", "The expedition lasted from the year ",
               "The reign lasted from the year ", "The drought lasted from the year ")


def make_greater_than(n: int = 64, seed: int = SEED) -> list[dict[str, Any]]:
    r = random.Random(seed + 200)
    rows = []
    for i in range(n):
        d, u = r.randint(2, 8), r.randint(0, 9)
        p = GT_PREFIXES[i % len(GT_PREFIXES)]
        rows.append({"text": f"{p}17{d}{u} to the year 17", "corrupt": f"{p}170{u} to the year 17",
                     "domain": "greater-than", "tens": d, "units": u})
    return rows


_IND_WORDS = sorted(set(_ADJ + _NOUN + _VERB_T + _VERB_I + OBJECTS + PLACES))


def make_induction(n: int = 64, seed: int = SEED) -> list[dict[str, Any]]:
    """``w_1 … w_L w_1 … w_L``: a random word segment then the same segment again (L = 8…40 words)."""
    r = random.Random(seed + 300)
    rows = []
    for i in range(n):
        seg_len = 8 + (i * 32) // max(1, n - 1)
        seg = [r.choice(_IND_WORDS) for _ in range(seg_len)]
        rows.append({"text": " ".join(seg + seg), "domain": "induction", "segment_words": seg_len})
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _token_counter(tokenizer_dir: str | None) -> Any:
    if tokenizer_dir is None:
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    return lambda s: len(tok.encode(s, add_special_tokens=False).ids)


def generate(out: Path = DATA, seed: int = SEED, tokenizer_dir: str | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    count = _token_counter(tokenizer_dir)
    files: dict[str, tuple[list[dict[str, Any]], str, str]] = {
        "prompts": (make_prompts(seed), "prompts.jsonl",
                    "general prompts in five domains (prose, dialogue, code, math, lists), 20 to ~1,400 tokens"),
        "induction": (make_induction(seed=seed), "induction.jsonl",
                      "repeated random word segments (natural-text induction control; Olsson et al. 2022)"),
        "greater-than": (make_greater_than(seed=seed), "greater_than.jsonl",
                         "digit Greater-Than prompts with a tens-digit-0 counterfactual (Hanna et al. 2023)"),
    }
    for t in range(len(IOI_TEMPLATES)):
        files[f"ioi-t{t}"] = (make_ioi(t, seed=seed), f"ioi_t{t}.jsonl",
                              f"IOI clean/ABC pairs, template {t}: {IOI_TEMPLATES[t]!r}; ABBA and BABA "
                              "alternating (Wang et al. 2022); load with circuits.tasks.load_jsonl")
    manifest: dict[str, Any] = {
        "generator": "interp/datasets/_generate.py", "seed": seed, "licence": LICENCE,
        "provenance": "word lists and templates written for this project; combined by random.Random(seed)",
        "token_counts_from": "SmolLM2-135M tokenizer (no BOS)" if count else None, "datasets": {}}
    for name, (rows, fname, desc) in files.items():
        _write_jsonl(out / fname, rows)
        data_rows = [r for r in rows if set(r) != {"template"}]
        entry: dict[str, Any] = {
            "file": fname, "description": desc, "n": len(data_rows), "licence": LICENCE,
            "generator": f"interp/datasets/_generate.py (seed {seed})",
            "sha256": hashlib.sha256((out / fname).read_bytes()).hexdigest(),
            "kind": "pairs" if name.startswith("ioi") else "prompts"}
        domains = sorted({str(r.get("domain")) for r in data_rows if "domain" in r})
        if domains:
            entry["domains"] = {d: sum(1 for r in data_rows if r.get("domain") == d) for d in domains}
        if count is not None and entry["kind"] == "prompts":
            lens = [count(r["text"]) for r in data_rows]
            entry["tokens"] = {"min": min(lens), "max": max(lens), "mean": round(sum(lens) / len(lens), 1),
                               "n_ge_1024": sum(1 for x in lens if x >= 1024)}
            if name == "prompts":
                for r, x in zip(data_rows, lens):
                    r["tokens_smollm2"] = x
                _write_jsonl(out / fname, rows)
                entry["sha256"] = hashlib.sha256((out / fname).read_bytes()).hexdigest()
        manifest["datasets"][name] = entry
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main() -> None:  # pragma: no cover - command line
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DATA)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--tokenizer", default=None, help="directory with SmolLM2's tokenizer.json (token counts)")
    a = ap.parse_args()
    m = generate(a.out, a.seed, a.tokenizer)
    for k, v in m["datasets"].items():
        print(k, v["n"], v.get("tokens"))


if __name__ == "__main__":  # pragma: no cover
    main()
