"""Tokenising prompt sets into padded batches with an explicit BOS policy.

Tokenizers disagree about BOS: SmolLM2's Hugging Face tokenizer adds none, Gemma's adds
``<bos>``, and TransformerLens' ``to_tokens`` prepends one by default. ``tokenize`` makes the
policy explicit: prompts are encoded *without* special tokens and the model's BOS id is
prepended iff ``prepend_bos``; every downstream result records that flag.

Each example keeps its own coordinates: token ``i`` of example ``b`` (BOS included) sits at
column ``b.start(b) + i`` of the padded tensor, whichever side the padding is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from interp.types import Model

__all__ = ["TokenBatch", "tokenize", "bos_token_id", "check_prompt_texts", "check_prompt_length", "context_length",
           "token_strings"]

PaddingSide = Literal["left", "right"]


@dataclass
class TokenBatch:
    """A padded batch of prompts.

    Attributes:
        tokens: ``[batch pos]`` token ids, padded with the pad id.
        attention_mask: ``[batch pos]`` 1 on real tokens (BOS included), 0 on padding.
        position_ids: ``[batch pos]`` position of each token within its own prompt (0 at the
            first real token; 0 on padding) — pass it with left padding so RoPE positions are
            those of the unpadded prompt.
        lengths: real length of each example (BOS included).
        offsets: per example, per token, the ``(start, end)`` character span in the prompt
            (``(0, 0)`` for BOS).
        prompts, str_tokens: the inputs and their tokens as strings (own coordinates).
        prepend_bos, padding_side: the policy used.
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]
    lengths: list[int]
    offsets: list[list[tuple[int, int]]]
    prompts: list[str]
    str_tokens: list[list[str]]
    prepend_bos: bool
    padding_side: PaddingSide
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def max_len(self) -> int:
        return int(self.tokens.shape[1])

    def start(self, i: int) -> int:
        """Column of example ``i``'s first real token in the padded tensor."""
        return self.max_len - self.lengths[i] if self.padding_side == "left" else 0

    def columns(self, i: int) -> slice:
        """Columns of example ``i``'s real tokens in the padded tensor."""
        s = self.start(i)
        return slice(s, s + self.lengths[i])

    def to(self, device: torch.device | str) -> "TokenBatch":
        self.tokens = self.tokens.to(device)
        self.attention_mask = self.attention_mask.to(device)
        self.position_ids = self.position_ids.to(device)
        return self


def bos_token_id(model: Model) -> int:
    """The BOS id TransformerLens prepends for this model (tokenizer's BOS, else its EOS)."""
    tok = model.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if bos is None:
        raise ValueError("The tokenizer has neither a BOS nor an EOS token; use prepend_bos=False.")
    return int(bos)


def context_length(model: Model) -> int:
    """The model's context ``cfg.n_ctx`` (unbounded when the config has none)."""
    return int(getattr(model.cfg, "n_ctx", 0) or 10**12)


def check_prompt_texts(
    prompts: Sequence[Any], *, error: type[Exception] = ValueError, type_error: type[Exception] = TypeError
) -> None:
    """Reject an empty prompt list, non-string prompts and empty strings, naming the fix."""
    if not prompts:
        raise error("No prompts given: the prompt list is empty; pass at least one prompt.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise type_error(f"Prompt {i} is a {type(p).__name__}, not a string: pass a list of strings.")
        if p == "":
            raise error(f"Prompt {i} is the empty string: remove it or give it text.")


def check_prompt_length(i: int, n_tokens: int, limit: int, *, error: type[Exception] = ValueError) -> None:
    """Reject prompt ``i`` when its ``n_tokens`` (BOS included) exceed the context ``limit``."""
    if n_tokens > limit:
        raise error(
            f"Prompt {i} has {n_tokens} tokens, more than the model's context n_ctx={limit}. "
            "Shorten it or split it."
        )


def tokenize(
    model: Model,
    prompts: str | Sequence[str],
    *,
    prepend_bos: bool = True,
    padding_side: PaddingSide = "right",
    max_length: int | None = None,
) -> TokenBatch:
    """Tokenise ``prompts`` into a padded :class:`TokenBatch` under an explicit BOS policy.

    Args:
        model: a TransformerBridge (anything with ``.tokenizer`` and ``.cfg.n_ctx``).
        prompts: one prompt or a list of prompts.
        prepend_bos: prepend the model's BOS token to every prompt.
        padding_side: ``"right"`` (default) or ``"left"``.
        max_length: reject prompts longer than this (default: the model's context ``cfg.n_ctx``).

    Raises:
        ValueError: empty prompt list, empty prompt, prompt longer than the context.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    check_prompt_texts(prompts)
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    tok = model.tokenizer
    limit = max_length if max_length is not None else context_length(model)
    enc = tok(prompts, add_special_tokens=False, return_offsets_mapping=True)
    bos = bos_token_id(model) if prepend_bos else None
    ids: list[list[int]] = []
    offsets: list[list[tuple[int, int]]] = []
    for i, (row, offs) in enumerate(zip(enc["input_ids"], enc["offset_mapping"])):
        row = list(row)
        offs = [tuple(map(int, o)) for o in offs]
        if bos is not None:
            row = [bos] + row
            offs = [(0, 0)] + offs
        check_prompt_length(i, len(row), limit)
        ids.append(row)
        offsets.append(offs)
    lengths = [len(r) for r in ids]
    width = max(lengths)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    tokens = torch.full((len(ids), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    pos = torch.zeros((len(ids), width), dtype=torch.long)
    for b, row in enumerate(ids):
        s = width - len(row) if padding_side == "left" else 0
        tokens[b, s : s + len(row)] = torch.tensor(row)
        mask[b, s : s + len(row)] = 1
        pos[b, s : s + len(row)] = torch.arange(len(row))
    str_tokens = [tok.convert_ids_to_tokens(r) for r in ids]
    device = getattr(model.cfg, "device", None)
    batch = TokenBatch(
        tokens=tokens,
        attention_mask=mask,
        position_ids=pos,
        lengths=lengths,
        offsets=offsets,
        prompts=prompts,
        str_tokens=[[_display(t) for t in r] for r in str_tokens],
        prepend_bos=prepend_bos,
        padding_side=padding_side,
    )
    return batch.to(device) if device else batch


def token_strings(model: Model, ids: Sequence[int]) -> list[str]:
    """Display labels of token ids, as :func:`tokenize` writes them in ``str_tokens``."""
    return [_display(t) for t in model.tokenizer.convert_ids_to_tokens([int(i) for i in ids])]


def _display(token: str) -> str:
    """Readable token label: byte-level markers for space/newline made visible."""
    return token.replace("Ġ", " ").replace("Ċ", "\\n").replace("▁", " ")
