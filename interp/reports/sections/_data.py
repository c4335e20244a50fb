"""How much data each report section draws, and the helpers that draw it.

The report's prompt set (``ctx.prompts``: the bundled ``interp.datasets`` prompts by default, or
``--prompts FILE.jsonl``) is shared; each section takes a deterministic, length-stratified sample
of it (:func:`interp.datasets.sample`, seeded by the report seed) and cuts every prompt to a token
budget, so that its numbers are stable while the whole default report stays within its time
budget. :data:`SIZES` holds ``(prompts, max tokens)`` per use; ``ctx.options["sizes"]`` overrides
entries (e.g. ``{"scan": (64, 64)}``) and ``ctx.options["full"] = True`` uses every prompt uncut.

Toy zoo models are not sized: their prompt set is already their own task data (short sequences
from the manifest's generator).
"""

from __future__ import annotations

from typing import Any

from interp.types import Model

#: (number of prompts, max tokens per prompt incl. BOS) per use; None = no cap
SIZES: dict[str, tuple[int | None, int | None]] = {
    "scan": (256, 40),        # sinks + positional heads (and their random-token control)
    "capture": (24, 192),     # residual norms / entropies (stores every layer's activations)
    "neurons": (128, 64),     # I(act; pos): prompts of >= 64 tokens cut to 64 (the same prompts at every position)
    "probes": (64, 96),       # position probes, grouped CV by prompt
    "rope": (18, 64),         # frequency usage and band ablation, short inputs
    "long": (6, 1024),        # long-context views: the longest prompts cut to 1,024 tokens
    "rope_long": (2, 1024),   # RoPE usage / band ablation on long inputs
}


def is_toy(ctx: Any) -> bool:
    return str(ctx.model_name).startswith("toy-")


def size(ctx: Any, key: str) -> tuple[int | None, int | None]:
    if ctx.options.get("full") or is_toy(ctx):
        return None, None
    over = dict(ctx.options.get("sizes") or {})
    if key in over:
        n, t = over[key]
        return (None if n is None else int(n)), (None if t is None else int(t))
    return SIZES[key]


def truncate(model: Model, texts: list[str], max_tokens: int | None, *, prepend_bos: bool) -> list[str]:
    """Each text cut at a token boundary so that it has at most ``max_tokens`` tokens (BOS
    included), using the tokenizer's character offsets (``interp.tokenize``)."""
    if max_tokens is None:
        return list(texts)
    from interp.tokens import tokenize

    out = []
    for t in texts:
        b = tokenize(model, [t], prepend_bos=prepend_bos)
        n = int(b.lengths[0])
        if n <= max_tokens:
            out.append(t)
            continue
        offs = b.offsets[0]
        end = int(offs[max_tokens - 1][1])  # end of the last kept token
        out.append(t[:end] if end > 0 else t)
    return out


def draw(ctx: Any, key: str, *, longest: bool = False, min_tokens: int = 0, full_length: bool = False,
         by_domain: bool = False) -> list[str]:
    """The texts section ``key`` analyses (cached per key in ``ctx.cache``).

    ``longest``: take the longest prompts (long-context views) instead of a stratified sample;
    ``min_tokens``: drop prompts shorter than that (after cutting); ``full_length``: sample only
    among prompts that have at least the token budget, so that every drawn text is cut to exactly
    that many tokens (every position is covered by every prompt; used by ``neurons``);
    ``by_domain``: the same number of prompts from every domain (``n // k``, the first ``n % k``
    domains one more), each a length-stratified sample, so that the domain mix does not change
    with the seed (the drawn prompts' domains are in ``ctx.cache[f"data.{key}.domains"]``).
    """
    ck = f"data.{key}"
    if ck in ctx.cache:
        return ctx.cache[ck]
    from interp.datasets import sample

    n, t = size(ctx, key)
    prompts = list(ctx.prompts)
    if longest:
        from interp.tokens import tokenize

        lens = tokenize(ctx.model, [p.text for p in prompts], prepend_bos=ctx.prepend_bos).lengths
        order = sorted(range(len(prompts)), key=lambda i: (-int(lens[i]), i))
        prompts = [prompts[i] for i in order[: (n or len(prompts))]]
    else:
        if full_length and t is not None:
            from interp.tokens import tokenize

            lens = tokenize(ctx.model, [p.text for p in prompts], prepend_bos=ctx.prepend_bos).lengths
            prompts = [p for p, m in zip(prompts, lens) if int(m) >= t]
        if n is not None and by_domain:
            doms = sorted({p.domain for p in prompts})
            picked = []
            for j, d in enumerate(doms):
                m = n // len(doms) + (1 if j < n % len(doms) else 0)
                picked += sample([p for p in prompts if p.domain == d], m, seed=ctx.seed)
            prompts = picked
        elif n is not None:
            prompts = sample(prompts, n, seed=ctx.seed)
    texts = truncate(ctx.model, [p.text for p in prompts], t, prepend_bos=ctx.prepend_bos)
    if min_tokens:
        from interp.tokens import tokenize

        lens = tokenize(ctx.model, texts, prepend_bos=ctx.prepend_bos).lengths
        texts = [x for x, m in zip(texts, lens) if m >= min_tokens]
    ctx.cache[ck] = texts
    if not min_tokens:
        ctx.cache[ck + ".domains"] = [p.domain for p in prompts]
    return texts


def describe(ctx: Any, key: str, texts: list[str]) -> dict[str, Any]:
    """What a section measured on, for its JSON: prompts, token budget, token counts."""
    from interp.tokens import tokenize

    lens = list(tokenize(ctx.model, texts, prepend_bos=ctx.prepend_bos).lengths) if texts else []
    n, t = size(ctx, key)
    return {"key": key, "n_prompts": len(texts), "max_tokens_budget": t, "prompt_budget": n,
            "tokens_total": int(sum(lens)), "tokens_min": int(min(lens)) if lens else 0,
            "tokens_max": int(max(lens)) if lens else 0, "of_report_prompts": len(ctx.prompts)}
