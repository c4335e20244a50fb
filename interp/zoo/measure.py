"""Measurements used to write and to check the zoo manifests (hook-based, on a TransformerBridge).

All functions take a ``TransformerBridge`` and BOS-first token ids (``TaskBatch.tokens``).

* Head zero-ablation: ``z[:, :, h, :] = 0`` on ``blocks.{l}.attn.hook_z`` (the head's output
  before ``W_O``), i.e. the head contributes nothing to the residual stream.
* Attention to a relative offset: ``mean_{(b,t) ∈ mask} A[b, h, t, t - δ]``.
* Value-output norm (Guo et al. 2024, "value-state drains"): ``‖v_j W_O^h‖`` per key position.

Every forward pass goes through the activation engine (:func:`interp.capture.stream`): the rows of
``tokens`` are handed over as token id sequences of one common length with ``pad="repeat_last"``
in a single mini-batch, so the model sees exactly ``tokens`` (no padding, no attention mask), as
a direct forward pass on ``tokens`` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from einops import einsum
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.capture import StreamBatch, stream
from interp.types import Model

__all__ = [
    "ablate_heads_hooks", "logits_with", "accuracy", "patterns", "attention_to_offset",
    "attention_to_position", "value_output_norms", "kv_group",
]


def run_tokens(
    model: Model, tokens: Int[Tensor, "batch pos"], hooks: Sequence[tuple[str, Any]],
    *, logits: bool = False,
) -> Float[Tensor, "batch pos vocab"] | None:
    """One forward pass of ``model`` on exactly ``tokens`` (every row its full width: no padding,
    no attention mask) with ``hooks``, through :func:`interp.capture.stream`; the logits when
    ``logits``."""
    rows = [tokens[b] for b in range(int(tokens.shape[0]))]
    got: list[Tensor] = []

    def reducer(sb: StreamBatch) -> list[tuple[str, Any]]:
        return list(hooks)

    stream(model, rows, reducer, batch_size=max(1, len(rows)), pad="repeat_last",
           on_logits=(lambda sb, lg: got.append(lg)) if logits else None)
    return got[0] if logits else None


def _cache(model: Model, tokens: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    cache: dict[str, Tensor] = {}

    def saver(name: str) -> Any:
        def save(t: Tensor, hook: Any) -> None:
            cache[name] = t.detach().clone()

        return save

    run_tokens(model, tokens, [(n, saver(n)) for n in names])
    return cache


def kv_group(model: Model, head: int) -> int:
    """KV head used by query head ``head`` (GQA): ``head // (n_heads // n_kv_heads)``."""
    from interp.families import family_of

    return family_of(model).kv_head(head)


def ablate_heads_hooks(heads: Sequence[tuple[int, int]]) -> list[tuple[str, Any]]:
    """Forward hooks that zero-ablate the given ``(layer, head)`` outputs on ``hook_z``."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    hooks: list[tuple[str, Any]] = []
    for layer, hs in by_layer.items():
        def fn(z: Tensor, hook: Any, hs: list[int] = hs) -> Tensor:
            z = z.clone()
            z[:, :, hs, :] = 0.0
            return z

        hooks.append((f"blocks.{layer}.attn.hook_z", fn))
    return hooks


@torch.no_grad()
def logits_with(
    model: Model, tokens: Int[Tensor, "batch pos"], hooks: Sequence[tuple[str, Any]] = (),
) -> Float[Tensor, "batch pos vocab"]:
    """Logits of ``model`` on ``tokens`` with the given forward hooks active."""
    out = run_tokens(model, tokens, hooks, logits=True)
    assert out is not None
    return out


def accuracy(
    logits: Float[Tensor, "batch pos vocab"],
    targets: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
) -> float:
    """Top-1 accuracy ``mean_{mask} [argmax logits == target]``."""
    if not bool(mask.any()):
        raise ValueError("accuracy mask selects no positions")
    return float((logits.argmax(-1) == targets)[mask].float().mean())


@torch.no_grad()
def patterns(model: Model, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer batch head q k"]:
    """All attention patterns (``blocks.{l}.attn.hook_pattern``) stacked over layers."""
    n_layers = int(model.cfg.n_layers)
    cache = _cache(model, tokens, [f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)])
    return torch.stack([cache[f"blocks.{l}.attn.hook_pattern"] for l in range(n_layers)])


def attention_to_offset(
    pattern: Float[Tensor, "batch head q k"],
    delta: int | Int[Tensor, " batch"],
    mask: Bool[Tensor, "batch q"],
) -> Float[Tensor, " head"]:
    """Per head, mean attention from query ``t`` to key ``t - delta`` over the masked queries
    (``delta`` may differ per row). Queries with ``t - delta < 0`` must be masked out."""
    B, H, Q, K = pattern.shape
    d = torch.as_tensor(delta).expand(B) if not isinstance(delta, Tensor) else delta
    q = torch.arange(Q)
    key = q[None, :] - d[:, None]  # [batch q]
    if bool((key[mask] < 0).any()):
        raise ValueError("mask includes queries whose key t - delta is before position 0")
    idx = key.clamp(min=0)[:, None, :, None].expand(B, H, Q, 1)
    vals = pattern.gather(-1, idx).squeeze(-1)  # [batch head q]
    m = mask[:, None, :].expand(B, H, Q)
    return (vals * m).sum((0, 2)) / m.sum((0, 2))


def attention_to_position(
    pattern: Float[Tensor, "batch head q k"], key: int, mask: Bool[Tensor, "batch q"],
) -> Float[Tensor, " head"]:
    """Per head, mean attention from the masked queries to the fixed key position ``key``."""
    vals = pattern[..., key]  # [batch head q]
    m = mask[:, None, :].expand_as(vals)
    return (vals * m).sum((0, 2)) / m.sum((0, 2))


@torch.no_grad()
def value_output_norms(
    model: Model, tokens: Int[Tensor, "batch pos"], layer: int,
) -> Float[Tensor, "batch pos head"]:
    """``‖v_j W_O^h‖`` for every key position ``j`` and query head ``h`` of ``layer``
    (value-state drain, Guo et al. 2024). Uses ``hook_v`` (KV heads, expanded to query heads for
    GQA) and the HF output projection."""
    name = f"blocks.{layer}.attn.hook_v"
    v = _cache(model, tokens, [name])[name]  # [batch pos kv_head d_head]
    from interp.families import family_of

    fam = family_of(model)
    o = model.original_model
    for part in f"{fam.paths.layers}.{layer}.{fam.paths.attn}.{fam.paths.o_proj}".split("."):
        o = getattr(o, part)
    # nn.Linear weight is [d_model, n_heads*d_head]; GPT-2's Conv1D keeps [in, out]
    w_o = o.weight if fam.fused_qkv == "gpt2_conv1d" else o.weight.T
    n_heads = fam.n_heads
    d_head = v.shape[-1]
    rep = n_heads // v.shape[2]
    v = v.repeat_interleave(rep, dim=2)  # [batch pos head d_head]
    w = w_o.reshape(n_heads, d_head, -1)  # [head d_head d_model]
    out = einsum(v, w, "batch pos head d_head, head d_head d_model -> batch pos head d_model")
    return out.norm(dim=-1)
