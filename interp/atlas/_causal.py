"""Interventions on one head for the atlas: rotary band removal (bridge hooks and the circuits'
patchable forward), sink-attention removal, chunk decomposition of a head's logit margin.

Band removal ("unrotate", p-RoPE style; Barbero et al. 2025, arXiv:2410.06205): the chunks in
the band keep their pre-rotation value (angle 0) in the query of the head and in the key of its
KV head, so their contribution to the logit becomes ``q^(k)·k^(k)`` independent of the relative
distance. Under GQA the key is shared by the KV group: the band is then removed for every query
head of the group (the check says which heads were touched).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp._attnstats import PromptBatch
from interp.capture import StreamBatch, stream
from interp.rope._common import pre_rotation_hooks
from interp.rope.usage import chunk_logits
from interp.types import Model

Hook = tuple[str, Callable[..., Any]]


def band_dims(rope: Any, band: Bool[Tensor, " chunk"]) -> Tensor:
    """Head dimensions of the chunks in ``band`` (the rotary pairing of the spec)."""
    return rope.chunk_dims()[band.cpu()].flatten()


def group_heads(spec: Any, head: int) -> list[int]:
    """The query heads sharing ``head``'s KV head (just ``[head]`` without GQA)."""
    g = spec.group_size
    kv = head // g
    return list(range(kv * g, (kv + 1) * g))


def unrotate_hooks(spec: Any, layer: int, head: int, band: Bool[Tensor, " chunk"]) -> list[Hook]:
    """Bridge hooks removing the rotation of ``band`` from the query of the KV group of ``head``
    (at ``layer``) and from its key: those dims take their pre-rotation values."""
    rope = spec.require_rope()
    dims = band_dims(rope, band)
    qs = group_heads(spec, head)
    kv = head // spec.group_size
    qn, kn, transposed = pre_rotation_hooks(spec)
    stash: dict[str, Tensor] = {}

    def save(which: str) -> Callable[..., None]:
        def f(x: Tensor, hook: Any) -> None:
            stash[which] = x.transpose(1, 2) if transposed else x
        return f

    def edit(which: str, idx: Sequence[int]) -> Callable[..., Tensor]:
        def f(x: Tensor, hook: Any) -> Tensor:
            pre = stash.pop(which).to(x.dtype)
            x = x.clone()
            d = dims.to(x.device)
            for i in idx:
                x[:, :, i, d] = pre[:, :, i, d]
            return x
        return f

    a = f"blocks.{layer}.attn"
    return [(f"{a}.{qn}", save("q")), (f"{a}.{kn}", save("k")),
            (f"{a}.hook_rot_q", edit("q", qs)), (f"{a}.hook_rot_k", edit("k", [kv]))]


@contextlib.contextmanager
def patched_unrotation(pm: Any, spec: Any, layer: int, head: int,
                       band: Bool[Tensor, " chunk"]) -> Iterator[None]:
    """Inside the block, :class:`circuits.PatchableModel` runs with ``band`` unrotated for the KV
    group of ``head`` at ``layer`` (same edit as :func:`unrotate_hooks`), in every patched run
    (so circuit faithfulness can be measured under the ablation)."""
    rope = spec.require_rope()
    dims = band_dims(rope, band)
    qs = group_heads(spec, head)
    kv = head // spec.group_size
    rope_layers = [l for l, W in enumerate(pm.layers) if pm.use_rope and pm.rotary is not None]
    order = [(l, w) for l in rope_layers for w in ("q", "k")]
    orig_forward, orig_rot = pm.forward, pm._rot
    state = {"i": 0, "on": False}

    def rot(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        out = orig_rot(x, cos, sin)
        if not state["on"]:
            return out
        l, which = order[state["i"] % len(order)]
        state["i"] += 1
        if l != layer:
            return out
        out = out.clone()
        d = dims.to(out.device)
        for i in (qs if which == "q" else [kv]):
            out[:, :, i, d] = x[:, :, i, d]
        return out

    def forward(*args: Any, **kwargs: Any) -> Any:
        state["i"], state["on"] = 0, True
        try:
            return orig_forward(*args, **kwargs)
        finally:
            state["on"] = False

    pm._rot, pm.forward = rot, forward
    try:
        yield
    finally:
        del pm._rot, pm.forward
        assert pm.forward == orig_forward


def sink_removal_hook(layer: int, head: int, sink: int = 0) -> Hook:
    """Bridge hook: the head's attention to key ``sink`` set to 0 and each query row (after the
    sink) renormalised over the other keys."""
    def f(p: Tensor, hook: Any) -> Tensor:
        p = p.clone()
        row = p[:, head, sink + 1:].clone()
        row[..., sink] = 0
        p[:, head, sink + 1:] = row / row.sum(-1, keepdim=True).clamp_min(1e-12)
        return p
    return (f"blocks.{layer}.attn.hook_pattern", f)


def zero_head_hook(layer: int, head: int) -> Hook:
    def f(z: Tensor, hook: Any) -> Tensor:
        z = z.clone()
        z[:, :, head] = 0
        return z
    return (f"blocks.{layer}.attn.hook_z", f)


def capture_qk(model: Model, batch: PromptBatch, layers: Sequence[int], *, batch_size: int = 8,
               extra: Sequence[Hook] = ()) -> dict[int, tuple[list[Tensor], list[Tensor]]]:
    """Rotated queries and keys (``hook_rot_q``/``hook_rot_k``) of ``layers``, per prompt trimmed
    to its length: ``{layer: ([q [T H e]], [k [T G e]])}``."""
    out: dict[int, tuple[list[Tensor], list[Tensor]]] = {l: ([], []) for l in layers}

    def make(sb: StreamBatch) -> list[Hook]:
        lengths = sb.lengths

        def grab(which: int) -> Callable[..., None]:
            def f(x: Tensor, hook: Any) -> None:
                l = int(hook.name.split(".")[1])
                for b, n in enumerate(lengths):
                    out[l][which].append(x[b, :n].detach().float().cpu())
            return f
        hs: list[Hook] = list(extra)
        for l in layers:
            hs += [(f"blocks.{l}.attn.hook_rot_q", grab(0)), (f"blocks.{l}.attn.hook_rot_k", grab(1))]
        return hs

    stream(model, batch, make, batch_size=batch_size)
    return out


def head_patterns(model: Model, batch: PromptBatch, heads: Sequence[tuple[int, int]], *,
                  batch_size: int = 8, extra: Sequence[Hook] = ()) -> dict[tuple[int, int], list[Tensor]]:
    """Attention patterns ``[T T]`` of ``heads`` on every prompt (optionally under ``extra``
    hooks, e.g. a band removal)."""
    out: dict[tuple[int, int], list[Tensor]] = {h: [] for h in heads}
    layers = sorted({l for l, _ in heads})

    def make(sb: StreamBatch) -> list[Hook]:
        lengths = sb.lengths

        def grab(x: Tensor, hook: Any) -> None:
            l = int(hook.name.split(".")[1])
            for (hl, hh) in heads:
                if hl == l:
                    for b, n in enumerate(lengths):
                        out[(hl, hh)].append(x[b, hh, :n, :n].detach().float().cpu())
        return list(extra) + [(f"blocks.{l}.attn.hook_pattern", grab) for l in layers]

    stream(model, batch, make, batch_size=batch_size)
    return out


def offset_score(patterns: Sequence[Tensor], delta: int) -> float:
    """``A(Δ)``: mean over prompts and queries t ≥ Δ of ``A[t, t − Δ]``."""
    vals = [p.diagonal(-delta) for p in patterns if p.shape[0] > delta]
    return float(torch.cat(vals).mean()) if vals else float("nan")


def margin_by_chunk(
    q: Sequence[Tensor], k: Sequence[Tensor], head: int, rope: Any, scale: float,
    pairs: Sequence[Bool[Tensor, "qpos kpos"]],
) -> Float[Tensor, " component"]:
    """Chunk decomposition of the attention-logit margin of ``head`` at the (query, key) pairs.

    For prompt b, query t and a marked key s (``pairs[b][t, s]``): the margin of component c is
    ``c(t, s) − mean_{s' ≤ t, s' unmarked} c(t, s')`` (the logit lead of the marked key over
    the other visible keys); the result is the mean over every marked pair with at least one
    unmarked visible key. Components: chunks (0 = highest frequency) then the non-rotated dims
    if any. Summed over components it is the margin of the full logit (exact decomposition,
    :func:`interp.rope.chunk_logits`).
    """
    tot, n = None, 0
    for b, mk in enumerate(pairs):
        if not bool(mk.any()):
            continue
        c = chunk_logits(q[b][None], k[b][None], rope, scale)[0, head]  # [C T T]
        T = c.shape[-1]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        other = causal & ~mk
        n_other = other.sum(-1)  # [T]
        mean_other = (c * other).sum(-1) / n_other.clamp_min(1)  # [C T]
        rows = mk.any(-1) & (n_other > 0)
        if not bool(rows.any()):
            continue
        lead = (c - mean_other[..., None]) * mk  # [C T T]
        per_row = lead.sum(-1) / mk.sum(-1).clamp_min(1)  # [C T]
        s = per_row[:, rows].sum(-1)
        tot = s if tot is None else tot + s
        n += int(rows.sum())
    if tot is None:
        C = rope.n_chunks + (1 if rope.n_pass else 0)
        return torch.full((C,), float("nan"))
    return tot / n


def quarter_shares(margin: Float[Tensor, " component"], n_chunks: int) -> dict[str, float]:
    """Share of the total margin in each quarter of the chunks (``q1`` = highest frequencies)
    and in the non-rotated dims (``pass``), signed (they add up to 1)."""
    total = float(margin.sum())
    out: dict[str, float] = {}
    edges = [round(i * n_chunks / 4) for i in range(5)]
    for i in range(4):
        v = float(margin[edges[i]:edges[i + 1]].sum())
        out[f"q{i + 1}"] = v / total if total != 0 else float("nan")
    if margin.numel() > n_chunks:
        v = float(margin[n_chunks:].sum())
        out["pass"] = v / total if total != 0 else float("nan")
    return out


def masked_loss(logits: Tensor, toks: Tensor, mask: Tensor) -> tuple[float, int]:
    """Summed next-token loss at the query positions in ``mask`` ``[b pos]`` (prediction of t+1
    from t), and their count."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -lp.gather(-1, toks[:, 1:, None])[..., 0]
    m = mask[:, : nll.shape[1]].to(nll.device)
    return float(nll[m].sum()), int(m.sum())


def domain_losses(model: Model, tokens: Int[Tensor, "batch pos"], domains: dict[str, Tensor],
                  hooks: Sequence[Hook] = ()) -> dict[str, float]:
    """Mean next-token loss on each query domain (equal-length rows, no padding)."""
    from types import SimpleNamespace

    rows = SimpleNamespace(tokens=tokens, attention_mask=torch.ones_like(tokens),
                           lengths=[int(tokens.shape[1])] * int(tokens.shape[0]))
    got: list[Tensor] = []
    stream(model, rows, lambda sb: list(hooks), batch_size=int(tokens.shape[0]),
           on_logits=lambda sb, logits: got.append(logits))
    lg = got[0]
    out = {}
    for name, m in domains.items():
        s, n = masked_loss(lg, tokens.to(lg.device), m)
        out[name] = s / max(n, 1)
    return out
