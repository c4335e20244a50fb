"""Benchmark: RoPE frequency usage + exact logit decomposition vs the bare forward pass.

SmolLM2-135M, N prompts × T tokens (default 64 × 64, BOS + 63 text tokens), mini-batches of 8,
float32, CPU. Each measurement is the best of ``--repeats`` runs in this process; the baseline
is ``model(tokens, return_type=None)`` under ``torch.no_grad`` on the same mini-batches.
Goal (issue 5): usage + decomposition ≤ 2× the bare forward pass.

    .venv/bin/python benchmarks/bench_rope.py [--n 64] [--t 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import interp.rope as R
from interp import load_model
from interp._attnstats import PromptBatch
from interp.prompts import DEFAULT_PROMPTS
from interp.tokens import bos_token_id


def make_batch(model, n: int, t: int) -> PromptBatch:
    ids = model.tokenizer(" ".join(DEFAULT_PROMPTS * 4), add_special_tokens=False)["input_ids"]
    need = t - 1
    rows = []
    for i in range(n):
        s = (i * 7) % max(1, len(ids) - need)
        rows.append([bos_token_id(model)] + ids[s:s + need])
    toks = torch.tensor(rows)
    return PromptBatch(toks, torch.ones_like(toks), [t] * n, [], True)


def best(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--t", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = load_model("smollm2-135m")
    batch = make_batch(model, a.n, a.t)

    def bare() -> None:
        with torch.no_grad():
            for s in range(0, a.n, a.batch_size):
                model(batch.tokens[s:s + a.batch_size], return_type=None)

    bare()  # warm-up
    t_bare = best(bare, a.repeats)
    res: dict[str, object] = {}
    t_usage = best(lambda: res.__setitem__("u", R.frequency_usage(model, batch, batch_size=a.batch_size)), a.repeats)
    t_both = best(lambda: res.__setitem__("b", R.frequency_usage(model, batch, batch_size=a.batch_size,
                                                                 decompose=True)), a.repeats)
    u = res["b"]
    err = u.decomposition.max_abs_error  # type: ignore[attr-defined]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"SmolLM2-135M, {a.n} prompts x {a.t} tokens, batch {a.batch_size}, float32, "
          f"{torch.get_num_threads()} threads, load average {load:.1f}")
    print()
    print("| measurement | seconds | ratio to bare forward |")
    print("| --- | ---: | ---: |")
    print(f"| bare forward (`model(tokens, return_type=None)`) | {t_bare:.2f} | 1.00 |")
    print(f"| `frequency_usage` (chunk norms, all layers/heads) | {t_usage:.2f} | {t_usage / t_bare:.2f} |")
    print(f"| `frequency_usage(decompose=True)` (+ exact logit decomposition and check) | {t_both:.2f} | "
          f"{t_both / t_bare:.2f} |")
    print()
    print(f"decomposition max |Σ chunks − hook_attn_scores| = {err:.2e}")
    print(f"summary: {u.summary()}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
