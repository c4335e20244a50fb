"""Tests for interp.schema: template/char-span schemas, the char→token rule, validation."""

from __future__ import annotations

import json

import pytest
import torch

from interp.schema import BOS_SPAN, Schema, SchemaError, SchemaSpans

IOI = "When {IO} and {S1} went to the {PLACE}, {S2} gave a drink to"
PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "When Alexandra and Bob went to the big park, Bob gave a drink to",
]


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2.tokenizer


def test_template_names_and_render():
    s = Schema.from_template(IOI)
    assert s.names == ("When", "IO", "and", "S1", "went to the", "PLACE", ",", "S2", "gave a drink to")
    assert s.slots == ("IO", "S1", "PLACE", "S2")
    assert s.render(IO="Mary", S1="John", PLACE="store", S2="John") == PROMPTS[0]
    with pytest.raises(SchemaError, match="missing"):
        s.render(IO="Mary")
    s2 = Schema.from_template(IOI, literal_names=["prefix", "and", "went", "comma", "end"])
    assert s2.names[0] == "prefix" and s2.names[-1] == "end"



def test_template_errors():
    with pytest.raises(SchemaError, match="adjacent"):
        Schema.from_template("{A}{B} x")
    with pytest.raises(SchemaError, match="empty"):
        Schema.from_template("")
    with pytest.raises(SchemaError, match="valid name"):
        Schema.from_template("a {} b")


def test_char_spans_of_template():
    s = Schema.from_template(IOI)
    cs = s.char_spans_for(PROMPTS)[0]
    assert [PROMPTS[0][a:b] for a, b in cs] == [
        "When ", "Mary", " and ", "John", " went to the ", "store", ", ", "John", " gave a drink to"]
    # a repeated slot must hold the same text
    rep = Schema.from_template("{S} met {S}.")
    assert isinstance(rep.char_spans_for(["Ann met Bob."])[0], str)
    assert rep.names == ("S", "met", "S.2", ".")
    assert not isinstance(rep.char_spans_for(["Ann met Ann."])[0], str)


def test_apply_token_spans_follow_first_nonspace_rule(smollm2):
    s = Schema.from_template(IOI)
    sp = s.apply(PROMPTS, smollm2, prepend_bos=True)
    assert sp.ok and sp.names[0] == BOS_SPAN and len(sp.names) == 10
    for i in range(len(PROMPTS)):
        row = sp.spans[i]
        assert row[0] == (0, 1)
        # spans tile the whole prompt, in order, each non-empty
        assert row[-1][1] == sp.lengths[i]
        for (a, b), (c, d) in zip(row, row[1:]):
            assert b == c and a < b
    # " Mary" (leading space) belongs to IO, not to the literal "When "
    assert "".join(sp.span_tokens(0, "IO")).strip() == "Mary"
    assert "".join(sp.span_tokens(1, "IO")).strip() == "Alexandra"
    assert "".join(sp.span_tokens(1, "PLACE")).strip() == "big park"
    assert "".join(sp.span_tokens(0, "When")) == "When"
    # span_index agrees with spans on both padding sides; -1 on padding
    for side in ("right", "left"):
        idx = sp.span_index(side)
        assert idx.shape == (2, max(sp.lengths))
        for i in range(2):
            L = sp.lengths[i]
            own = idx[i, :L] if side == "right" else idx[i, idx.shape[1] - L:]
            assert torch.equal(own, sp.token_span_ids(i))
            assert (idx[i] == -1).sum() == idx.shape[1] - L
    lens = sp.span_lengths()
    assert lens.sum(1).tolist() == sp.lengths


def test_apply_without_bos_and_with_tokenbatch(smollm2):
    from interp import tokenize

    s = Schema.from_template(IOI)
    sp = s.apply(PROMPTS, smollm2, prepend_bos=False)
    assert BOS_SPAN not in sp.names and sp.spans[0][0][0] == 0
    b = tokenize(smollm2, PROMPTS, prepend_bos=True, padding_side="left")
    sp2 = s.apply(b)
    assert sp2.prepend_bos and sp2.spans == s.apply(PROMPTS, smollm2).spans


def test_apply_reports_every_failure(smollm2):
    s = Schema.from_template(IOI)
    prompts = [PROMPTS[0], "When Mary and John walked to the store, John gave a drink to", PROMPTS[1], "Hello there"]
    with pytest.raises(SchemaError) as ei:
        s.apply(prompts, smollm2)
    msg = str(ei.value)
    assert "example 1" in msg and "example 3" in msg and "example 0" not in msg
    assert "' went to the '" in msg  # names what was expected
    sp = s.apply(prompts, smollm2, strict=False)
    assert not sp.ok and sp.valid == [0, 2] and [f.index for f in sp.failures] == [1, 3]
    with pytest.raises(SchemaError):
        sp.raise_for_failures()
    with pytest.raises(SchemaError):
        sp.span_index()
    sub = sp.subset(sp.valid)
    assert sub.ok and len(sub) == 2


def test_span_without_token_fails(smollm2):
    # the literal " " between two slots merges into the next word's token: span gets no token
    s = Schema.from_template("{A} {B}")
    sp = s.apply(["red apple"], smollm2, strict=False)
    assert not sp.ok and "gets no token" in sp.failures[0].reason


def test_from_char_spans(smollm2):
    text = "The cat sat on the mat"
    names = ["subj", "verb", "rest"]
    s = Schema.from_char_spans(names, [[(0, 7), (7, 11), (11, 22)]], prompts=[text])
    sp = s.apply([text], smollm2)
    assert [("".join(sp.span_tokens(0, n))) for n in names] == ["The cat", " sat", " on the mat"]
    # dict form, gap of whitespace is fine as no token starts there
    s2 = Schema.from_char_spans(names, [{"subj": (0, 7), "verb": (8, 11), "rest": (12, 22)}])
    assert s2.apply([text], smollm2).spans == sp.spans
    # a token whose first non-space char lies in no span fails; so do overlaps and wrong prompts
    bad = Schema.from_char_spans(names, [[(0, 3), (8, 11), (12, 22)]])
    r = bad.apply([text], smollm2, strict=False)
    assert "falls in no span" in r.failures[0].reason
    ov = Schema.from_char_spans(names, [[(0, 9), (7, 11), (11, 22)]])
    assert "overlaps" in ov.apply([text], smollm2, strict=False).failures[0].reason
    assert "not the prompt" in s.apply(["The dog sat on the mat"], smollm2, strict=False).failures[0].reason
    with pytest.raises(SchemaError, match="reserved"):
        Schema.from_char_spans(["BOS"], [[(0, 1)]])


def test_single_and_json_roundtrip(smollm2):
    s = Schema.single()
    sp = s.apply(PROMPTS, smollm2)
    assert sp.names == [BOS_SPAN, "prompt"] and sp.spans[0] == [(0, 1), (1, sp.lengths[0])]
    t = Schema.from_template(IOI, slot_patterns={"IO": r"\w+"})
    assert Schema.from_json(json.loads(json.dumps(t.to_json()))) == t
    d = json.loads(json.dumps(sp.to_json()))
    assert SchemaSpans.from_json(d).spans == sp.spans
    fig = Schema.from_template(IOI).apply(PROMPTS, smollm2).plot()
    assert "Schema spans" in fig.layout.title.text
