"""tokenize: explicit BOS policy, padding on either side, own coordinates, clear errors."""

from __future__ import annotations

import pytest
import torch

from interp import tokenize

PROMPTS = ["When Mary and John went to the store, John gave a drink to", "Hello world"]


@pytest.mark.real_model
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_keeps_own_coordinates(smollm2, side):
    b = tokenize(smollm2, PROMPTS, padding_side=side)
    assert b.lengths == [15, 3] and b.prepend_bos and b.padding_side == side
    for i, p in enumerate(PROMPTS):
        ref = smollm2.to_tokens(p)[0]  # TransformerLens' own BOS + tokens
        assert torch.equal(b.tokens[i, b.columns(i)], ref)
        assert b.attention_mask[i].sum().item() == b.lengths[i]
        assert torch.equal(b.position_ids[i, b.columns(i)], torch.arange(b.lengths[i]))
    # offsets map tokens back to the characters they came from
    assert [PROMPTS[1][s:e] for s, e in b.offsets[1]] == ["", "Hello", " world"]


@pytest.mark.real_model
def test_bos_policy_is_explicit(smollm2):
    with_bos = tokenize(smollm2, PROMPTS[1])
    without = tokenize(smollm2, PROMPTS[1], prepend_bos=False)
    assert with_bos.lengths[0] == without.lengths[0] + 1
    assert with_bos.tokens[0, 0].item() == smollm2.tokenizer.bos_token_id
    assert torch.equal(with_bos.tokens[0, 1:], without.tokens[0])


@pytest.mark.real_model
def test_left_padding_gives_unpadded_logits(smollm2):
    b = tokenize(smollm2, PROMPTS, padding_side="left")
    with torch.no_grad():
        padded = smollm2(b.tokens, attention_mask=b.attention_mask)[1, -1]
        alone = smollm2(tokenize(smollm2, PROMPTS[1]).tokens)[0, -1]
    assert (padded - alone).abs().max().item() < 1e-3


@pytest.mark.real_model
def test_bad_input(smollm2):
    with pytest.raises(ValueError, match="No prompts"):
        tokenize(smollm2, [])
    with pytest.raises(ValueError, match="Prompt 1 is the empty string"):
        tokenize(smollm2, ["ok", ""])
    with pytest.raises(ValueError, match="more than the model's context"):
        tokenize(smollm2, ["word " * 50], max_length=10)
    # under runtime type checking the Literal annotation rejects it first (a TypeError)
    with pytest.raises((ValueError, TypeError), match="padding_side"):
        tokenize(smollm2, ["ok"], padding_side="middle")
